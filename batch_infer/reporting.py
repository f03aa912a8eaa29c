"""`batch-infer report`: one self-contained HTML page that shows what a run produced.

The page must open anywhere, offline (a CI artifact, an e-mail attachment): no scripts and no
external files; charts are inline SVG and thumbnails are small JPEGs in data: URIs. Its
Content-Security-Policy lets the browser load nothing else, so even a path that slipped past
escaping could not fetch anything. It stays small on any run size: it shows aggregates and capped
galleries, never every row or every image.

Two steps: `aggregate` turns the rows and part metadata into a `Report` of plain numbers and
strings (every cap, count and chart coordinate is decided there), and `render` fills
templates/report.html.j2 with it. The template holds the markup, CSS and CSP; Jinja escapes every
value it prints, so no path or label reaches the page unescaped. Over 400 lines, as the small
dataclasses the template reads (one a chart or gallery) sit beside `aggregate`, which fills them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import os
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import __version__, storage
from .atomic import write_atomically
from .config import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from .findings import Review, Truth

COLUMNS = ["path", "status", "error", "label", "score"]
LEAST_CONFIDENT, PER_CLASS, MAX_CLASSES, MAX_ERRORS, MAX_RUNS = 24, 4, 50, 500, 20
THUMBNAIL_PX, SCORE_BINS = 96, 20
SUSPECTS, GROUPS, PER_GROUP, HEATMAP_CLASSES = 24, 12, 6, 25
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def write_report(out: str, html: str, input: str | None = None, truth: Truth | None = None) -> dict:
    """Writes the page for OUT to `html`; returns what `batch-infer report` prints (the page's
    path, rows, errors, thumbnails)."""
    if input is not None and not os.path.isdir(input):
        raise ConfigError(f"--input {input} is not a directory; give the run's --input.")
    from .output import read_parts  # pyarrow only now: `--help` stays fast

    table, metadata = read_parts(storage.absolute(out), COLUMNS)
    rows = table.to_pandas()
    thumbnails = Thumbnails(input) if input else None
    reviewed = None
    if truth is not None:
        from .findings import load

        reviewed = review_section(load(out, truth), thumbnails)
    page = render(aggregate(rows, metadata, out, thumbnails, reviewed))
    os.makedirs(os.path.dirname(os.path.abspath(html)), exist_ok=True)
    write_atomically(html, lambda handle: handle.write(page), text=True)
    return {"report": os.path.abspath(html), "rows": len(rows), "errors": int((rows.status != "ok").sum()),
            "thumbnails": thumbnails.count if thumbnails else 0}


class Thumbnails:
    """Small JPEG data: URIs of images under `root`, each made once, as a viewer shows them: every
    format a run scores (TIFF and HEIC too), turned upright by EXIF. Pillow decodes them as the
    run's fallback does (`pillow.pixels`); TensorFlow resizes and encodes."""

    def __init__(self, root: str):
        from .tf_import import tf

        self.tf, self.root, self.made = tf, root, {}

    def __call__(self, path: str) -> str | None:
        if path not in self.made:
            self.made[path] = self._make(os.path.join(self.root, path))
        return self.made[path]

    @property
    def count(self) -> int:
        return sum(uri is not None for uri in self.made.values())

    def _make(self, file: str) -> str | None:
        from .config import RunConfig
        from .decode import pillow
        from .decode.geometry import to_channels

        tf = self.tf
        try:  # a file moved or changed since the run shows as an empty box, not a failed report
            data = tf.io.read_file(file).numpy()
            image = pillow.pixels(data, RunConfig.max_pixels, exif_transpose=True).pixels
        except (tf.errors.OpError, pillow.Refused):
            return None
        small = tf.image.resize(to_channels(tf.constant(image), 3), (THUMBNAIL_PX, THUMBNAIL_PX),
                                preserve_aspect_ratio=True, antialias=True)
        jpeg = tf.io.encode_jpeg(tf.cast(tf.round(tf.clip_by_value(small, 0, 255)), tf.uint8), quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(jpeg.numpy()).decode("ascii")


@dataclasses.dataclass(frozen=True)
class Card:
    name: str
    value: str | int


@dataclasses.dataclass(frozen=True)
class Run:
    run_id: str
    started: str
    shard: str
    rows: int


@dataclasses.dataclass(frozen=True)
class ClassBar:
    """One bar of the class chart, in SVG user units."""
    label: str
    short: str  # cut to fit left of the bar; the tooltip has `label` whole
    count: int
    label_x: int  # the label's right end
    text_y: int  # baseline of the label and the count
    x: int
    y: int
    width: float
    height: int
    count_x: float


@dataclasses.dataclass(frozen=True)
class ClassChart:
    width: int
    height: int
    bars: list[ClassBar]
    hidden: int  # classes past MAX_CLASSES


@dataclasses.dataclass(frozen=True)
class HistogramBar:
    count: int
    x: float
    y: float
    width: float
    height: float
    text_x: float
    text_y: float


@dataclasses.dataclass(frozen=True)
class Tick:
    value: float
    x: float
    y: int


@dataclasses.dataclass(frozen=True)
class Histogram:
    width: int
    height: int
    axis_x: int
    axis_y: int
    axis_width: int
    bars: list[HistogramBar]  # empty bins have none
    ticks: list[Tick]


@dataclasses.dataclass(frozen=True)
class Figure:
    path: str
    label: str
    score: float
    thumbnail: str | None  # a data: URI, or None for an empty box


@dataclasses.dataclass(frozen=True)
class ClassSample:
    label: str
    rows: int
    figures: list[Figure]


@dataclasses.dataclass(frozen=True)
class ErrorKind:
    name: str  # the reason up to its first colon, e.g. "decode"
    count: int


@dataclasses.dataclass(frozen=True)
class ErrorRow:
    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Errors:
    kinds: list[ErrorKind]  # empty when there are no error rows
    rows: list[ErrorRow]
    hidden: int  # error rows past MAX_ERRORS


@dataclasses.dataclass(frozen=True)
class HeatCell:
    x: int
    y: int
    size: int
    opacity: float  # the cell's share of its true class's rows
    count: int
    title: str


@dataclasses.dataclass(frozen=True)
class Heatmap:
    """The confusion matrix: rows are the given labels, columns the predicted ones."""
    width: int
    height: int
    labels: list[tuple[str, int, int]]  # (label, row text y, column text x)
    label_x: int
    column_y: int
    cells: list[HeatCell]
    hidden: int  # classes past HEATMAP_CLASSES


@dataclasses.dataclass(frozen=True)
class DuplicateGroup:
    number: int
    files: int
    mixed_labels: bool
    figures: list[Figure]


@dataclasses.dataclass(frozen=True)
class ReviewSection:
    truth: str
    cards: list[Card]
    warnings: list[str]
    heatmap: Heatmap | None
    suspects: list[Figure]
    suspects_hidden: int
    groups: list[DuplicateGroup]
    groups_hidden: int
    note: str


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything the page shows, top to bottom, as plain data; the template only lays it out."""
    output: str
    name: str
    cards: list[Card]
    metadata: list[tuple[str, str]]
    runs: list[Run]
    runs_hidden: int
    class_chart: ClassChart | None  # None when there are no ok rows
    histogram: Histogram | None  # None when there are no ok rows
    least_confident: list[Figure]
    samples: list[ClassSample]
    classes_hidden: int  # classes past MAX_CLASSES, in neither the chart nor the samples
    errors: Errors
    review: ReviewSection | None  # None without --truth
    thumbnails: bool  # False: the page says how to get them
    generated: str
    version: str


def aggregate(rows: pd.DataFrame, metadata: list[dict[str, str]], output: str,
              thumbnails: Callable[[str], str | None] | None, review: ReviewSection | None = None,
              now: datetime.datetime | None = None) -> Report:
    """The page's content from the rows and part metadata. `now` is the "Generated" time
    (default: the current UTC time)."""
    ok, errors = rows[rows.status == "ok"], rows[rows.status != "ok"]
    counts = ok.label.value_counts()
    shown = counts.index[:MAX_CLASSES]
    # A shuffled head per class is a fair sample; seeded so the same OUT gives the same page.
    samples = ok[ok.label.isin(shown)].sample(frac=1.0, random_state=0).groupby("label").head(PER_CLASS)
    when = sorted({_when(meta.get("run_id", "")) for meta in metadata})
    cards = [Card("rows", len(rows)), Card("ok", len(ok)),
             Card("errors", f"{len(errors)} ({len(errors) / max(len(rows), 1):.1%})"),
             Card("classes predicted", len(counts)), Card("runs", int(rows.run_id.nunique())),
             Card("started", when[0] if len(when) == 1 else f"{when[0]} to {when[-1]}")]
    runs, runs_hidden = _runs(rows, metadata)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return Report(
        output=storage.absolute(output), name=os.path.basename(storage.absolute(output)), cards=cards,
        metadata=_metadata(metadata), runs=runs, runs_hidden=runs_hidden,
        class_chart=_class_chart(counts), histogram=_histogram(ok.score.to_numpy(np.float64)),
        least_confident=_figures(ok.nsmallest(LEAST_CONFIDENT, "score"), thumbnails),
        samples=[ClassSample(label, int(counts[label]),
                             _figures(samples[samples.label == label].sort_values("score", ascending=False),
                                      thumbnails)) for label in shown],
        classes_hidden=len(counts) - len(shown), errors=_errors(errors), review=review,
        thumbnails=thumbnails is not None,
        generated=now.strftime("%Y-%m-%d %H:%M:%S UTC"), version=__version__)


def render(report: Report) -> str:
    """The page: templates/report.html.j2 filled with `report`."""
    import jinja2  # only here: `batch-infer --help` stays fast

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, finalize=_escape,
                                     trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return environment.get_template("report.html.j2").render(report=report)


def _escape(value: object) -> object:
    """Jinja's finalize, run on every printed value before autoescape: every path, label, reason and
    metadata value is user-controlled text. html.escape rather than markupsafe's own escaping only
    for its entity spelling (&#x27;, not &#39;), so a path reads the same in the page source as it
    always has; both escape the same five characters. Macro output is already markup."""
    from markupsafe import Markup

    return value if hasattr(value, "__html__") else Markup(html.escape(str(value)))


def _when(run_id: str) -> str:
    """Run ids start with the UTC start time, e.g. 20240101T120000Z-ab12cd."""
    try:
        return datetime.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return run_id or "unknown"


def _metadata(metadata: list[dict[str, str]]) -> list[tuple[str, str]]:
    """One row per metadata key; a key whose value differs between parts lists every value."""
    values: dict[str, list[str]] = {}
    for meta in metadata:
        for key, value in meta.items():
            if key == "labels":  # the whole list: its size is what a reader of the page wants
                value = f"{len(json.loads(value))} labels"
            if key != "run_id" and value not in values.setdefault(key, []):
                values[key].append(value)
    return [(key, ", ".join(found)) for key, found in values.items()]


def _runs(rows: pd.DataFrame, metadata: list[dict[str, str]]) -> tuple[list[Run], int]:
    """Resumed and sharded runs add parts with their own run id; list them, newest first, and how
    many more there are past MAX_RUNS."""
    shards = {meta.get("run_id", ""): meta.get("shard", "") for meta in metadata}
    sizes = rows.groupby("run_id").size().sort_index(ascending=False)
    runs = [Run(run_id, _when(run_id), shards.get(run_id, ""), int(count))
            for run_id, count in sizes.iloc[:MAX_RUNS].items()]
    return runs, len(sizes) - MAX_RUNS


def _class_chart(counts: pd.Series) -> ClassChart | None:
    """Horizontal bars, most frequent class first; long labels are cut, the tooltip has them whole."""
    if counts.empty:
        return None
    shown, row, left, width = counts.iloc[:MAX_CLASSES], 18, 150, 330
    bars = []
    for i, (label, count) in enumerate(shown.items()):
        y, length = i * row, float(width * count / shown.iloc[0])
        bars.append(ClassBar(label=label, short=label if len(label) <= 26 else label[:25] + "…",
                             count=int(count), label_x=left - 6, text_y=y + 13, x=left, y=y + 3,
                             width=length, height=row - 5, count_x=left + length + 4))
    return ClassChart(width=left + width + 50, height=len(shown) * row, bars=bars,
                      hidden=len(counts) - len(shown))


def _histogram(scores: np.ndarray) -> Histogram | None:
    """Top-1 scores in 20 bins, each count written over its bar: one tall bin must not hide that
    the others are not empty."""
    if not len(scores):
        return None
    counts, _ = np.histogram(scores, bins=SCORE_BINS, range=(0.0, 1.0))
    width, height, top, left = 500, 150, 16, 10
    bar, tallest, base = width / SCORE_BINS, int(counts.max()), top + height
    bars = [HistogramBar(count=int(n), x=left + i * bar + 1, y=base - height * int(n) / tallest,
                         width=bar - 2, height=height * int(n) / tallest, text_x=left + (i + 0.5) * bar,
                         text_y=base - height * int(n) / tallest - 4)
            for i, n in enumerate(counts) if n]
    ticks = [Tick(value=t, x=left + width * t, y=base + 16) for t in (0, 0.25, 0.5, 0.75, 1)]
    return Histogram(width=left + width + 20, height=base + 22, axis_x=left, axis_y=base, axis_width=width,
                     bars=bars, ticks=ticks)


def _figures(rows: pd.DataFrame, thumbnails: Callable[[str], str | None] | None) -> list[Figure]:
    return [Figure(path, label, float(score), thumbnails(path) if thumbnails else None)
            for path, label, score in zip(rows.path, rows.label, rows.score)]


def _errors(errors: pd.DataFrame) -> Errors:
    if errors.empty:
        return Errors(kinds=[], rows=[], hidden=0)
    kinds = errors.error.fillna("unknown").str.split(":", n=1).str[0].value_counts()
    shown = errors.sort_values("path").iloc[:MAX_ERRORS]
    return Errors(kinds=[ErrorKind(kind, int(count)) for kind, count in kinds.items()],
                  rows=[ErrorRow(path, str(reason)) for path, reason in zip(shown.path, shown.error)],
                  hidden=len(errors) - len(shown))


def review_section(review: Review, thumbnails: Callable[[str], str | None] | None) -> ReviewSection:
    """The review's headline numbers, its confusion matrix, the most doubtful rows and the
    largest duplicate groups, each capped."""
    from .findings import TRAINED_ON_NOTE

    summary = review.summary(None)
    accuracy = "n/a" if summary["accuracy"] is None else f"{summary['accuracy']:.1%}"
    top_k = "n/a" if summary["top_k_accuracy"] is None else f"{summary['top_k_accuracy']:.1%}"
    cards = [Card("rows with a given label", summary["with_truth"]), Card("accuracy", accuracy),
             Card(f"top-{review.top_k} accuracy", top_k), Card("suspects", summary["suspects"]),
             Card("duplicate groups", summary["duplicate_groups"]),
             Card("groups with mixed labels", summary["mixed_label_groups"])]
    warnings = [f"given labels that match no model label: {name} ({files} files)"
                for name, files in review.matching.unmatched.items()] + review.warnings
    shown = review.suspects.head(SUSPECTS)
    suspects = [Figure(path, f"{predicted} (given {given})", float(score), thumbnails(path) if thumbnails else None)
                for path, predicted, given, score in zip(shown.path, shown.predicted, shown.given,
                                                         shown.predicted_score)]
    all_groups = review.duplicate_groups()
    groups = all_groups.head(GROUPS)
    figures = []
    for number, files, mixed in zip(groups.group, groups.files, groups.mixed_labels):
        members = review.duplicates[review.duplicates.group == number].head(PER_GROUP)
        figures.append(DuplicateGroup(int(number), int(files), bool(mixed), [
            Figure(path, str(given), float(similarity), thumbnails(path) if thumbnails else None)
            for path, given, similarity in zip(members.path, members.given, members.similarity)]))
    return ReviewSection(truth=str(review.truth), cards=cards, warnings=warnings,
                         heatmap=_heatmap(review), suspects=suspects,
                         suspects_hidden=len(review.suspects) - len(shown), groups=figures,
                         groups_hidden=len(all_groups) - len(groups), note=TRAINED_ON_NOTE)


def _heatmap(review: Review) -> Heatmap | None:
    """Cells shaded by their share of the true class's rows, for the classes with most rows."""
    if review.confusion.empty:
        return None
    support = review.confusion.groupby("true")["count"].sum().sort_values(ascending=False, kind="stable")
    classes = list(support.index[:HEATMAP_CLASSES])
    longest = max(len(label) for label in classes)
    cell, left, top = 22, 130, 16 + 6 * min(longest, 18)  # room for the slanted column labels
    position = {label: i for i, label in enumerate(classes)}
    cells = [HeatCell(x=left + position[p] * cell, y=top + position[t] * cell, size=cell - 2,
                      opacity=round(0.08 + 0.92 * int(n) / int(support[t]), 3), count=int(n),
                      title=f"given {t}, predicted {p}: {int(n)}")
             for t, p, n in zip(review.confusion.true, review.confusion.predicted, review.confusion["count"])
             if t in position and p in position]
    labels = [(label if len(label) <= 18 else label[:17] + "…", top + i * cell + 15, left + i * cell + 14)
              for i, label in enumerate(classes)]
    return Heatmap(width=left + len(classes) * cell + 10, height=top + len(classes) * cell + 10,
                   labels=labels, label_x=left - 6, column_y=top - 6, cells=cells,
                   hidden=len(support) - len(classes))
