"""`batch-infer report`: one self-contained HTML page that shows what a run produced.

The page must open anywhere, offline (a CI artifact, an e-mail attachment): no scripts and no
external files; charts are inline SVG and thumbnails are small JPEGs in data: URIs. Its
Content-Security-Policy lets the browser load nothing else, so even a path that slipped past
escaping could not fetch anything. It stays small on any run size: it shows aggregates and capped
galleries, never every row or every image.
"""

from __future__ import annotations

import argparse
import base64
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

COLUMNS = ["path", "status", "error", "label", "score"]
LEAST_CONFIDENT, PER_CLASS, MAX_CLASSES, MAX_ERRORS, MAX_RUNS = 24, 4, 50, 500, 20
THUMBNAIL_PX, SCORE_BINS = 96, 20
CSS = """body{font:14px/1.4 system-ui,sans-serif;color:#222;max-width:1200px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:14px 0 6px}.note{color:#666}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:6px 14px}.card b{display:block;font-size:20px}
table{border-collapse:collapse}td,th{text-align:left;padding:2px 12px 2px 0;vertical-align:top}
.gallery{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:112px;font-size:12px}
figure img,.noimg{width:96px;height:96px;object-fit:contain;background:#eee;display:block}
.row,.classes{display:flex;flex-wrap:wrap;column-gap:48px}.path{color:#666;word-break:break-all}
svg text{font-size:12px;fill:#333}svg rect{fill:#4a7fb5}svg .axis{fill:#999}"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
e = html.escape  # every path, label, reason and metadata value is user-controlled text


def add_command(commands) -> None:
    parser = commands.add_parser(
        "report", help="write a self-contained HTML report of an output dataset",
        description="Summarise OUT in one HTML file that needs no network: run metadata, class "
                    "distribution, score histogram, least confident predictions, a sample per "
                    "class and the error rows. Example: batch-infer report scores/ --input photos/ "
                    "--html report.html")
    parser.add_argument("output", metavar="OUT", help="output directory of a batch-infer run")
    parser.add_argument("--input", metavar="DIR", help="the run's --input, to embed thumbnails "
                        "(default: no thumbnails)")
    parser.add_argument("--html", metavar="FILE", required=True, help="HTML file to write")
    parser.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    if args.input is not None and not os.path.isdir(args.input):
        raise ConfigError(f"--input {args.input} is not a directory; give the run's --input.")
    from .output import read_parts  # pyarrow only now: `--help` stays fast

    table, metadata = read_parts(storage.absolute(args.output), COLUMNS)
    rows = table.to_pandas()
    thumbnails = Thumbnails(args.input) if args.input else None
    page = render(rows, metadata, args.output, thumbnails)
    os.makedirs(os.path.dirname(os.path.abspath(args.html)), exist_ok=True)
    write_atomically(args.html, lambda handle: handle.write(page), text=True)
    print(json.dumps({"report": os.path.abspath(args.html), "rows": len(rows),
                      "errors": int((rows.status != "ok").sum()),
                      "thumbnails": thumbnails.count if thumbnails else 0}), flush=True)
    return 0


class Thumbnails:
    """Small JPEG data: URIs of images under `root`, each made once. TensorFlow makes them because
    it is a runtime dependency and Pillow is not; it is imported only when thumbnails are asked for."""

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
        tf = self.tf
        try:  # a file moved or changed since the run shows as an empty box, not a failed report
            image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
            small = tf.image.resize(image, (THUMBNAIL_PX, THUMBNAIL_PX), preserve_aspect_ratio=True,
                                    antialias=True)
            jpeg = tf.io.encode_jpeg(tf.cast(tf.round(tf.clip_by_value(small, 0, 255)), tf.uint8), quality=80)
        except (tf.errors.OpError, ValueError):
            return None
        return "data:image/jpeg;base64," + base64.b64encode(jpeg.numpy()).decode("ascii")


def render(rows: pd.DataFrame, metadata: list[dict[str, str]], output: str,
           thumbnails: Callable[[str], str | None] | None) -> str:
    """The page, top to bottom: summary cards, run metadata, charts, galleries, error rows."""
    ok, errors = rows[rows.status == "ok"], rows[rows.status != "ok"]
    counts = ok.label.value_counts()
    shown = counts.index[:MAX_CLASSES]
    # A shuffled head per class is a fair sample; seeded so the same OUT gives the same page.
    samples = ok[ok.label.isin(shown)].sample(frac=1.0, random_state=0).groupby("label").head(PER_CLASS)
    per_class = "".join(
        f"<div><h3>{e(label)} <span class=note>{counts[label]} rows</span></h3>"
        + _gallery(samples[samples.label == label].sort_values("score", ascending=False), thumbnails)
        + "</div>" for label in shown)
    when = sorted({_when(meta.get("run_id", "")) for meta in metadata})
    cards = [("rows", len(rows)), ("ok", len(ok)),
             ("errors", f"{len(errors)} ({len(errors) / max(len(rows), 1):.1%})"),
             ("classes predicted", len(counts)), ("runs", rows.run_id.nunique()),
             ("started", when[0] if len(when) == 1 else f"{when[0]} to {when[-1]}")]
    no_thumbnails = "" if thumbnails else (
        "<p class=note>No thumbnails: give <code>--input DIR</code> (the run's --input) to embed them.</p>")
    body = [
        f"<h1>batch-infer report</h1><p class=path>{e(storage.absolute(output))}</p>",
        "<div class=cards>" + "".join(f"<div class=card>{e(name)}<b>{e(str(value))}</b></div>"
                                      for name, value in cards) + "</div>",
        f"<h2>Run</h2><div class=row><div>{_metadata_table(metadata)}</div>"
        f"<div>{_runs_table(rows, metadata)}</div></div>",
        f"<div class=row><div><h2>Predicted classes</h2>{_class_chart(counts)}</div>"
        f"<div><h2>Top-1 scores</h2>{_histogram(ok.score.to_numpy(np.float64))}</div></div>",
        f"<h2>Least confident</h2>{no_thumbnails}"
        + _gallery(ok.nsmallest(LEAST_CONFIDENT, "score"), thumbnails),
        f"<h2>Sample per class</h2>{no_thumbnails}<div class=classes>{per_class or 'No ok rows.'}</div>"
        + _more(len(counts) - len(shown), "classes"),
        "<h2>Errors</h2>" + _errors(errors),
    ]
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f'<!doctype html><html lang=en><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>batch-infer report: {e(os.path.basename(storage.absolute(output)))}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}"
            f"<p class=note>Generated {generated} by batch-infer {e(__version__)}.</p></body></html>\n")


def _when(run_id: str) -> str:
    """Run ids start with the UTC start time, e.g. 20240101T120000Z-ab12cd."""
    try:
        return datetime.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return run_id or "unknown"


def _more(hidden: int, what: str) -> str:
    return f"<p class=note>{hidden} more {what} not shown.</p>" if hidden > 0 else ""


def _metadata_table(metadata: list[dict[str, str]]) -> str:
    """One row per metadata key; a key whose value differs between parts lists every value."""
    values: dict[str, list[str]] = {}
    for meta in metadata:
        for key, value in meta.items():
            if key != "run_id" and value not in values.setdefault(key, []):
                values[key].append(value)
    return "<table>" + "".join(f"<tr><th>{e(key)}</th><td>{e(', '.join(found))}</td></tr>"
                               for key, found in values.items()) + "</table>"


def _runs_table(rows: pd.DataFrame, metadata: list[dict[str, str]]) -> str:
    """Resumed and sharded runs add parts with their own run id; list them, newest first."""
    shards = {meta.get("run_id", ""): meta.get("shard", "") for meta in metadata}
    sizes = rows.groupby("run_id").size().sort_index(ascending=False)
    lines = "".join(f"<tr><td>{e(run_id)}</td><td>{e(_when(run_id))}</td><td>{e(shards.get(run_id, ''))}</td>"
                    f"<td>{count}</td></tr>" for run_id, count in sizes.iloc[:MAX_RUNS].items())
    return ("<table><tr><th>run id</th><th>started</th><th>shard</th><th>rows</th></tr>"
            f"{lines}</table>" + _more(len(sizes) - MAX_RUNS, "runs"))


def _class_chart(counts: pd.Series) -> str:
    """Horizontal bars, most frequent class first; long labels are cut, the tooltip has them whole."""
    if counts.empty:
        return "<p>No ok rows.</p>"
    shown, row, left, width = counts.iloc[:MAX_CLASSES], 18, 150, 330
    bars = []
    for i, (label, count) in enumerate(shown.items()):
        y, length = i * row, width * count / shown.iloc[0]
        short = label if len(label) <= 26 else label[:25] + "…"
        bars.append(f'<g><title>{e(label)}: {count}</title>'
                    f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{e(short)}</text>'
                    f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 5}"/>'
                    f'<text x="{left + length + 4:.1f}" y="{y + 13}">{count}</text></g>')
    return (f'<svg width="{left + width + 50}" height="{len(shown) * row}" '
            f'role="img" aria-label="rows per predicted class">{"".join(bars)}</svg>'
            + _more(len(counts) - len(shown), "classes"))


def _histogram(scores: np.ndarray) -> str:
    """Top-1 scores in 20 bins, each count written over its bar: one tall bin must not hide that
    the others are not empty."""
    if not len(scores):
        return "<p>No ok rows.</p>"
    counts, _ = np.histogram(scores, bins=SCORE_BINS, range=(0.0, 1.0))
    width, height, top, left = 500, 150, 16, 10
    bar, tallest, base = width / SCORE_BINS, counts.max(), top + height
    bars = "".join(f'<rect x="{left + i * bar + 1:.1f}" y="{base - height * n / tallest:.1f}" '
                   f'width="{bar - 2:.1f}" height="{height * n / tallest:.1f}"/>'
                   f'<text x="{left + (i + 0.5) * bar:.1f}" y="{base - height * n / tallest - 4:.1f}" '
                   f'text-anchor="middle">{n}</text>' for i, n in enumerate(counts) if n)
    ticks = "".join(f'<text x="{left + width * t}" y="{base + 16}" text-anchor="middle">{t:g}</text>'
                    for t in (0, 0.25, 0.5, 0.75, 1))
    return (f'<svg width="{left + width + 20}" height="{base + 22}" role="img" '
            f'aria-label="histogram of top-1 scores"><rect x="{left}" y="{base}" width="{width}" '
            f'height="1" class="axis"/>{bars}{ticks}</svg>')


def _gallery(rows: pd.DataFrame, thumbnails: Callable[[str], str | None] | None) -> str:
    figures = []
    for path, label, score in zip(rows.path, rows.label, rows.score):
        uri = thumbnails(path) if thumbnails else None
        image = f'<img src="{uri}" alt="">' if uri else "<div class=noimg></div>"
        figures.append(f"<figure>{image}<figcaption><b>{e(label)}</b> {score:.3f}"
                       f"<br><span class=path>{e(path)}</span></figcaption></figure>")
    return f"<div class=gallery>{''.join(figures)}</div>"


def _errors(errors: pd.DataFrame) -> str:
    if errors.empty:
        return "<p>No error rows.</p>"
    kinds = errors.error.fillna("unknown").str.split(":", n=1).str[0].value_counts()
    shown = errors.sort_values("path").iloc[:MAX_ERRORS]
    return ("<p>" + ", ".join(f"{e(kind)}: {count}" for kind, count in kinds.items()) + "</p>"
            + "<table><tr><th>path</th><th>reason</th></tr>"
            + "".join(f"<tr><td class=path>{e(path)}</td><td>{e(str(reason))}</td></tr>"
                      for path, reason in zip(shown.path, shown.error))
            + "</table>" + _more(len(errors) - len(shown), "error rows"))
