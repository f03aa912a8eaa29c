"""What a scoring run says about the labels a dataset already has (`batch-infer review`).

One pass over OUT gives the metrics (accuracy, top-k accuracy, per-class precision/recall/F1,
the confusion matrix), the rows whose given label the model doubts most, and the duplicate
groups (exact by content hash, near by phash or embedding). This is the one place it is
computed: the `review` command, the report's review section and the Label Studio export of review tasks all
use `load` and `Review`.

Suspects are ranked by doubt, the predicted class's score minus the given label's (0 when the
given label is not in the row's top-k): a confident prediction of another class against a given
label the model hardly considers comes first. `confident` marks rows above the predicted class's
confident-learning threshold (the mean score the model gives that class on rows labelled with
it). On data the model was trained on, predictions are overconfident and suspects are a floor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import duplicates, hamming, perceptual, storage
from .atomic import write_atomically
from .config import PHASH_DISTANCE, ConfigError
from .labels import Matching, match_labels
from .vectors import read_embeddings

COLUMNS = ["path", "status", "label", "score", "top_k_labels", "top_k_indices", "top_k_scores"]
MOST_CONFUSED = 10
TRAINED_ON_NOTE = ("Predictions on images the model was trained on are overconfident: there the "
                   "suspects are a floor, not a census of wrong labels.")
FILES = ("suspects", "duplicates", "per_class", "confusion")
# What found a pair, in the order the `signal` column lists them.
SIGNALS = ("content_hash", "phash", "embedding")
# Two images whose phash values differ in more bits than this, or whose mean colours differ by
# more levels in a channel, do not look alike: measured, see the README ("Reviewing a labelled
# dataset").
UNLIKE_BITS = 20
UNLIKE_LEVELS = 8


@dataclass(frozen=True)
class Truth:
    """Where the given labels are: the first folder of each path, or a kept manifest column."""
    column: str | None  # None: the folder

    @classmethod
    def parse(cls, text: str) -> Truth:
        if text == "folder":
            return cls(None)
        if isinstance(text, str) and text.startswith("column:") and text[len("column:"):]:
            return cls(text[len("column:"):])
        raise ConfigError(f"--truth must be folder or column:NAME; got {text!r}.")

    def names(self, rows: pd.DataFrame) -> pd.Series:
        """The given label of each row as text, None where it has none (a file at the top of the
        input has no folder; an empty manifest cell has no label)."""
        if self.column is None:
            parts = rows.path.str.split("/", n=1)
            return parts.map(lambda part: part[0] if len(part) == 2 and part[0] else None)
        values = rows[self.column]
        return values.map(lambda value: None if pd.isna(value) or str(value) == "" else str(value))

    def __str__(self) -> str:
        return "folder" if self.column is None else f"column:{self.column}"


def model_labels(rows: pd.DataFrame, metadata: list[dict[str, str]]) -> list[str]:
    """The model's labels in index order: recorded in the parts, else (older parts) the ones their
    top-k lists show."""
    recorded = [meta["labels"] for meta in metadata if "labels" in meta]
    if recorded:
        return json.loads(recorded[0])
    seen: dict[int, str] = {}
    for indices, names in zip(rows.top_k_indices, rows.top_k_labels):
        if indices is not None:
            seen.update(zip(indices.tolist(), names.tolist()))
    return [seen[index] for index in sorted(seen)]


@dataclass
class Review:
    """Everything `review` reports, as frames and numbers."""
    output: str
    truth: Truth
    rows: int
    ok: int
    top_k: int
    matching: Matching
    labels: list[str]
    scored: pd.DataFrame  # ok rows with a matched given label: path, given, true, predicted, ...
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    suspects: pd.DataFrame
    duplicates: pd.DataFrame
    near_threshold: float | None  # None: OUT has no embedding
    threshold_source: str  # "auto" or "--similarity"
    phash_distance: int | None  # None: OUT has no phash column (or --phash-distance off)
    pairs_by_signal: dict[str, int]  # duplicate pairs each signal found
    crowded: int  # rows left out of near pairs: more than duplicates.CROWD neighbours
    unlike: dict[str, int]  # near pairs left out by signal: unlike by phash or mean colour (`_Looks`)
    warnings: list[str]

    @property
    def accuracy(self) -> float | None:
        return float((self.scored.true == self.scored.predicted).mean()) if len(self.scored) else None

    @property
    def top_k_accuracy(self) -> float | None:
        return float(self.scored.in_top_k.mean()) if len(self.scored) else None

    def most_confused(self, count: int = MOST_CONFUSED) -> pd.DataFrame:
        off = self.confusion[self.confusion.true != self.confusion.predicted]
        return off.sort_values(["count", "true", "predicted"], ascending=[False, True, True]).head(count)

    def duplicate_groups(self) -> pd.DataFrame:
        """One row per group: size, kind (exact when every member is an exact copy) and whether
        its members carry different given labels."""
        if self.duplicates.empty:
            return pd.DataFrame(columns=["group", "files", "exact", "mixed_labels"])
        return (self.duplicates.groupby("group", sort=True)
                .agg(files=("path", "size"), exact=("kind", lambda kinds: bool((kinds == "exact").all())),
                     mixed_labels=("mixed_labels", "first")).reset_index())

    def summary(self, review_dir: str | None) -> dict:
        groups = self.duplicate_groups()
        return {
            "output": self.output, "truth": str(self.truth), "rows": self.rows, "ok": self.ok,
            "with_truth": len(self.scored), "accuracy": _rounded(self.accuracy),
            "top_k_accuracy": _rounded(self.top_k_accuracy), "top_k": self.top_k,
            "matched": {name: label for name, label in self.matching.label_of.items()},
            "unmatched": self.matching.unmatched,
            "most_confused": self.most_confused().to_dict("records"),
            "suspects": len(self.suspects), "confident_suspects": int(self.suspects.confident.sum()),
            "duplicate_groups": len(groups), "duplicate_files": len(self.duplicates),
            "mixed_label_groups": int(groups.mixed_labels.sum()), "near_threshold": self.near_threshold,
            "near_threshold_source": self.threshold_source if self.near_threshold is not None else None,
            "phash_distance": self.phash_distance, "pairs_by_signal": self.pairs_by_signal,
            "crowded": self.crowded, "pairs_unlike": self.unlike,
            "warnings": self.warnings, "review": os.path.abspath(review_dir) if review_dir else None,
        }

    def text(self, review_dir: str | None) -> str:
        summary, lines = self.summary(review_dir), []
        lines.append(f"{self.output}: {self.rows} rows, {self.ok} ok, {len(self.scored)} with a "
                     f"given label ({self.truth}) that matches a model label")
        if self.matching.loose:
            lines.append("matched ignoring case and separators: " +
                         ", ".join(f"{name} -> {label}" for name, label in self.matching.loose.items()))
        if self.matching.unmatched:
            lines.append("given labels that match no model label (not counted): " +
                         ", ".join(f"{name} ({files} files)" for name, files in self.matching.unmatched.items()))
        if len(self.scored):
            lines.append(f"accuracy {summary['accuracy']:.4f}, top-{self.top_k} accuracy "
                         f"{summary['top_k_accuracy']:.4f}")
        confused = self.most_confused(5)
        if len(confused):
            lines.append("most confused (given -> predicted): " +
                         ", ".join(f"{t} -> {p} {c}" for t, p, c in zip(confused.true, confused.predicted,
                                                                        confused["count"])))
        lines.append(f"suspects: {len(self.suspects)} rows predicted as another class, "
                     f"{summary['confident_suspects']} of them confidently; most doubtful first:")
        for row in self.suspects.head(5).itertuples():
            lines.append(f"  {row.rank}. {row.path}: {row.reason}")
        lines.append(f"  {TRAINED_ON_NOTE}")
        lines.append(f"duplicates: {_count(summary['duplicate_groups'], 'group')} of "
                     f"{_count(summary['duplicate_files'], 'file')}, {summary['mixed_label_groups']} with "
                     f"different given labels; {self._near_text()}")
        if self.crowded:
            lines.append(f"  {_count(self.crowded, 'image')} left out of near copies: each is as close as a "
                         f"copy to more than {duplicates.CROWD} others, so the fingerprint or embedding cannot "
                         "tell them apart")
        lines += [f"warning: {warning}" for warning in self.warnings]
        if review_dir:
            lines.append(f"wrote {', '.join(name + '.parquet' for name in FILES)} to {os.path.abspath(review_dir)}")
        return "\n".join(lines)

    def _near_text(self) -> str:
        """How near copies were looked for, and the pairs each signal found."""
        ways = []
        if self.phash_distance is not None:
            ways.append(f"by phash within {self.phash_distance} bits: {_count(self.pairs_by_signal['phash'], 'pair')}"
                        + self._unlike_text("phash"))
        if self.near_threshold is not None:
            ways.append(f"by embedding at centred cosine similarity >= {self.near_threshold} ({self.threshold_source}): "
                        f"{_count(self.pairs_by_signal['embedding'], 'pair')}" + self._unlike_text("embedding"))
        if not ways:
            return ("no phash or embedding in OUT, so exact copies only (score again with this version for "
                    "the phash column, or with --embedding-key or --embedding-layer)")
        return "near copies " + "; ".join(ways)

    def _unlike_text(self, signal: str) -> str:
        left_out = self.unlike.get(signal, 0)
        return (f" ({left_out} more left out: phash values more than {UNLIKE_BITS} bits or mean colours more "
                f"than {UNLIKE_LEVELS} levels apart)") if left_out else ""

    def write(self, review_dir: str) -> None:
        os.makedirs(review_dir, exist_ok=True)
        for name in FILES:
            table = pa.Table.from_pandas(getattr(self, name), preserve_index=False)
            write_atomically(os.path.join(review_dir, f"{name}.parquet"),
                             lambda handle, table=table: pq.write_table(table, handle))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def load(output: str, truth: Truth, similarity: float | None = None,
         phash_distance: int | None = PHASH_DISTANCE) -> Review:
    """The review of OUT against `truth`, near copies by embedding at `similarity` (None: from
    the data) and by phash within `phash_distance` bits (None: not by phash); ConfigError when
    OUT has no class scores, lacks the truth column, or no given label matches a model label."""
    from .output import read_parts  # pyarrow only now: `--help` stays fast

    extra = ["content_hash", "phash", "mean_colour"] + ([truth.column] if truth.column else [])
    table, metadata = read_parts(storage.absolute(output), ["path", "status"], optional=COLUMNS[2:] + extra)
    if "label" not in table.column_names:
        raise ConfigError(f"{output} has no predictions (it was scored with --task embed); review needs "
                          "a run that classifies.")
    if truth.column and truth.column not in table.column_names:
        raise ConfigError(f"{output} has no column {truth.column!r}; score a manifest with --keep-columns "
                          f"{truth.column} to keep it, or use --truth folder.")
    rows = table.to_pandas()
    del table
    embeddings = read_embeddings(storage.absolute(output), rows.path.tolist())
    labels = model_labels(rows, metadata)
    given = truth.names(rows)
    matching = match_labels(given.dropna().value_counts().to_dict(), labels)
    if not matching.label_of:
        raise ConfigError(f"No given label ({truth}) matches a model label: given "
                          f"{_few(sorted(matching.unmatched))}; the model's labels are {_few(labels)}. "
                          "Run with --labels FILE naming the classes, or give another --truth.")
    ok = rows.status == "ok"
    true = given.map(matching.label_of)
    scored = _scored(rows[ok & true.notna()], given, true)
    warnings = _sorted_folder_warning(rows[ok & given.notna()], given, labels, matching)
    found, threshold, used_distance, pairs_by_signal, crowded, unlike = _duplicates(
        rows, given, embeddings, similarity, phash_distance)
    return Review(
        output=storage.absolute(output), truth=truth, rows=len(rows), ok=int(ok.sum()),
        top_k=int(max((len(k) for k in rows.top_k_labels[ok]), default=0)), matching=matching,
        labels=labels, scored=scored, per_class=_per_class(scored), confusion=_confusion(scored),
        suspects=_suspects(scored), duplicates=found, near_threshold=threshold, crowded=crowded,
        threshold_source="auto" if similarity is None else "--similarity", phash_distance=used_distance,
        pairs_by_signal=pairs_by_signal, unlike=unlike, warnings=warnings)


def _few(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _scored(rows: pd.DataFrame, given: pd.Series, true: pd.Series) -> pd.DataFrame:
    """Per ok row with a matched label: the given name, its model label (`true`), the prediction
    and where the given label stands in the row's top-k."""
    truth = true[rows.index].to_numpy()
    position = [_position(names, label) for names, label in zip(rows.top_k_labels, truth)]
    given_score = [float(scores[p]) if p is not None else np.nan for scores, p in zip(rows.top_k_scores, position)]
    return pd.DataFrame({
        "path": rows.path.to_numpy(), "given": given[rows.index].to_numpy(), "true": truth,
        "predicted": rows.label.to_numpy(), "predicted_score": rows.score.to_numpy(np.float64),
        "given_score": np.array(given_score, np.float64),
        "in_top_k": np.array([p is not None for p in position], bool)})


def _position(names: np.ndarray, label: str) -> int | None:
    hits = np.flatnonzero(names == label)
    return int(hits[0]) if len(hits) else None


def _confusion(scored: pd.DataFrame) -> pd.DataFrame:
    counts = scored.groupby(["true", "predicted"]).size().rename("count").reset_index()
    return counts.astype({"count": np.int64}).sort_values(["true", "predicted"], ignore_index=True)


def _per_class(scored: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall and F1 per label given or predicted, 0 where undefined (as
    scikit-learn's zero_division=0); support is the number of rows given that label."""
    labels = sorted(set(scored.true) | set(scored.predicted))
    hits = scored[scored.true == scored.predicted].groupby("true").size()
    support = scored.groupby("true").size().reindex(labels, fill_value=0)
    predicted = scored.groupby("predicted").size().reindex(labels, fill_value=0)
    correct = hits.reindex(labels, fill_value=0)
    precision = (correct / predicted.where(predicted > 0)).fillna(0.0)
    recall = (correct / support.where(support > 0)).fillna(0.0)
    f1 = (2 * precision * recall / (precision + recall).where(precision + recall > 0)).fillna(0.0)
    return pd.DataFrame({"label": labels, "precision": precision.to_numpy(), "recall": recall.to_numpy(),
                         "f1": f1.to_numpy(), "support": support.to_numpy(np.int64)})


def _suspects(scored: pd.DataFrame) -> pd.DataFrame:
    """Rows predicted as another class than the given one, most doubtful first."""
    self_confidence = scored.given_score.fillna(0.0)
    threshold = self_confidence.groupby(scored.true).mean()
    wrong = scored[scored.true != scored.predicted].assign(
        doubt=lambda frame: frame.predicted_score - frame.given_score.fillna(0.0))
    wrong = wrong.assign(confident=wrong.predicted_score >= wrong.predicted.map(threshold).fillna(np.inf))
    wrong = wrong.sort_values(["doubt", "path"], ascending=[False, True], ignore_index=True)
    reasons = [_reason(row) for row in wrong.itertuples()]
    return pd.DataFrame({
        "rank": np.arange(1, len(wrong) + 1, dtype=np.int64), "path": wrong.path, "given": wrong.given,
        "given_label": wrong.true, "predicted": wrong.predicted, "predicted_score": wrong.predicted_score,
        "given_score": wrong.given_score, "doubt": wrong.doubt, "confident": wrong.confident.astype(bool),
        "reason": reasons})


def _reason(row) -> str:
    given = (f"given {row.given} at {row.given_score:.3f}" if row.in_top_k
             else f"given {row.given} not in its top-k")
    sure = "; confidently (above the class's confident-learning threshold)" if row.confident else ""
    return f"predicted {row.predicted} at {row.predicted_score:.3f}, {given}{sure}"


def _sorted_folder_warning(rows: pd.DataFrame, given: pd.Series, labels: list[str],
                           matching: Matching) -> list[str]:
    """The classic trap: a model trained with image_dataset_from_directory numbers its classes
    in sorted folder-name order (1, 10, 11, 2, ...), while the labels file lists them in another
    (1, 2, 3, ...). Warned when reading class i as the i-th given name in sorted order agrees
    with the given labels clearly better than the labels do."""
    names = sorted(set(given[rows.index].dropna()))
    if len(rows) == 0 or len(names) < 2:
        return []
    index = np.array([indices[0] for indices in rows.top_k_indices])
    as_sorted = np.array([names[i] if i < len(names) else None for i in index], dtype=object)
    truth = given[rows.index].to_numpy()
    sorted_agreement = float(np.mean(as_sorted == truth))
    labelled = np.array([matching.label_of.get(name) for name in truth], dtype=object)
    label_agreement = float(np.mean(labelled == rows.label.to_numpy()))
    if sorted_agreement < label_agreement + 0.2:
        return []
    example = ", ".join(names[:4])
    return [f"predictions agree with the given labels {sorted_agreement:.0%} of the time if class i is "
            f"the i-th given name in sorted order ({example}, ...), against {label_agreement:.0%} with "
            "the model's labels: the model was likely trained with classes numbered by sorted folder "
            "names, and its labels file is in another order. Score again with --labels listing the "
            "folder names in sorted order."]


def _duplicates(rows: pd.DataFrame, given: pd.Series, embeddings: tuple[np.ndarray, np.ndarray] | None,
                similarity: float | None, phash_distance: int | None
                ) -> tuple[pd.DataFrame, float | None, int | None, dict[str, int], int, dict[str, int]]:
    """(one row per file in a group of two or more, the embedding threshold used (None without
    embeddings), the phash distance used (None without phash), the pairs each signal found, the
    rows too crowded for near pairs, the near pairs each signal found but left out as unlike).
    Exact copies have the same content_hash, whatever their status; near copies are ok rows
    whose phash values or embeddings are alike, and whose fingerprints and mean colours do not
    say the two look different (`_Looks`). A pair found either way joins a group (the union),
    and each member's `signal` names what joined it."""
    count = len(rows)
    hashes = rows.content_hash.where(rows.content_hash.notna(), None).tolist() if "content_hash" in rows else [None] * count
    found = {"content_hash": duplicates.exact_pairs(hashes)}
    crowded = np.zeros(count, bool)
    threshold = used_distance = None
    unlike: dict[str, int] = {}
    looks = None
    if "phash" in rows and phash_distance is not None:
        looks = _Looks.of(rows)
        pairs, unlike["phash"], crowd = _phash_pairs(looks, hashes, phash_distance)
        if pairs is not None:
            found["phash"], used_distance = pairs, phash_distance
            crowded |= crowd
    if embeddings is not None:  # only ok rows have one
        numbers, vectors = embeddings
        near, threshold, crowd = duplicates.near_pairs(vectors, similarity)
        found["embedding"] = duplicates.Pairs(numbers[near.first], numbers[near.second], near.similarity)
        crowded[numbers] |= crowd
        if used_distance is not None:
            found["embedding"], unlike["embedding"] = looks.alike(found["embedding"])
    component = duplicates.components(count, *found.values())
    best = duplicates.best_similarity(count, *found.values())
    sizes = np.bincount(component, minlength=count)
    members = np.flatnonzero(sizes[component] >= 2)
    paired = {name: np.isin(np.arange(count), np.concatenate([pairs.first, pairs.second]))
              for name, pairs in found.items()}
    signal = ["+".join(name for name in SIGNALS if name in paired and paired[name][row]) for row in members]
    frame = pd.DataFrame({"component": component[members], "path": rows.path.to_numpy()[members],
                          "hash": np.array(hashes, dtype=object)[members],
                          "similarity": best[members].astype(np.float64),
                          "given": given.to_numpy()[members], "predicted": rows.label.to_numpy()[members],
                          "signal": np.array(signal, dtype=object)})
    counts = {name: len(pairs.first) for name, pairs in found.items()}
    result = _NO_DUPLICATES.copy() if frame.empty else _numbered(frame)
    return result, threshold, used_distance, counts, int(crowded.sum()), unlike


@dataclass
class _Looks:
    """What each row looks like, where the run recorded it: its phash and its mean colour."""
    has_phash: np.ndarray  # bool per row
    phash: np.ndarray  # uint64 per row (0 where none)
    has_colour: np.ndarray  # bool per row
    colour: np.ndarray  # [rows, 3] int16 levels (0 where none)

    @classmethod
    def of(cls, rows: pd.DataFrame) -> "_Looks":
        positions, codes = perceptual.from_text(rows.phash.tolist())
        has_phash, phash = np.zeros(len(rows), bool), np.zeros(len(rows), np.uint64)
        has_phash[positions], phash[positions] = True, codes
        has_colour, colour = np.zeros(len(rows), bool), np.zeros((len(rows), 3), np.int16)
        if "mean_colour" in rows:
            positions, levels = perceptual.colours_from_text(rows.mean_colour.tolist())
            has_colour[positions], colour[positions] = True, levels
        return cls(has_phash, phash, has_colour, colour)

    def alike(self, pairs: duplicates.Pairs) -> tuple[duplicates.Pairs, int]:
        """(`pairs` less those that do not look alike, how many those were): phash values more
        than UNLIKE_BITS bits apart (a small task model's embedding puts two members of a class
        as close as a copy), or mean colours more than UNLIKE_LEVELS apart in a channel (flat
        drawings of one size at one place share their phash whatever their colours). A pair
        with a row that lacks either is judged by what both have."""
        first, second = pairs.first, pairs.second
        unlike = ((self.has_phash[first] & self.has_phash[second]
                   & (perceptual.distances(self.phash[first], self.phash[second]) > UNLIKE_BITS))
                  | (self.has_colour[first] & self.has_colour[second]
                     & (perceptual.colour_distances(self.colour[first], self.colour[second]) > UNLIKE_LEVELS)))
        keep = ~unlike
        return duplicates.Pairs(first[keep], second[keep], pairs.similarity[keep]), int(unlike.sum())


def _phash_pairs(looks: _Looks, hashes: list[str | None], max_bits: int
                 ) -> tuple[duplicates.Pairs | None, int, np.ndarray]:
    """(pairs of rows whose phash values differ in at most `max_bits` bits and that look alike,
    how many did not, which rows are crowded); (None, 0, ...) when no row has a phash. One row
    per content_hash takes part: exact copies are grouped by their hash, and would otherwise
    crowd out an image copied often. Pairs unlike in colour leave before the crowds are
    counted, so a copy among lookalikes of other colours is still found."""
    positions = np.flatnonzero(looks.has_phash)
    codes = looks.phash[positions]
    crowded = np.zeros(len(hashes), bool)
    if not len(positions):
        return None, 0, crowded
    first_of_file, seen = np.ones(len(positions), bool), set()
    for n, position in enumerate(positions.tolist()):
        if hashes[position] is not None:
            first_of_file[n] = hashes[position] not in seen
            seen.add(hashes[position])
    positions, codes = positions[first_of_file], codes[first_of_file]
    near = hamming.near_pairs(codes, max_bits)
    alike, unlike = looks.alike(duplicates.Pairs(positions[near.first], positions[near.second], near.similarity))
    pairs, crowded = duplicates.without_crowds(alike, len(hashes))
    return pairs, unlike, crowded


_NO_DUPLICATES = pd.DataFrame({
    "group": pd.Series(dtype=np.int64), "path": pd.Series(dtype=object), "kind": pd.Series(dtype=object),
    "similarity": pd.Series(dtype=np.float64), "given": pd.Series(dtype=object),
    "predicted": pd.Series(dtype=object), "mixed_labels": pd.Series(dtype=bool), "signal": pd.Series(dtype=object)})


def _numbered(frame: pd.DataFrame) -> pd.DataFrame:
    """The member rows of `_duplicates` with their kind, label mix and group number: groups are
    numbered from 1, largest first, then by first path, so the same OUT numbers them alike."""
    copies = frame.groupby(["component", "hash"]).path.transform("size").reindex(frame.index)
    frame["kind"] = np.where(copies.fillna(0) >= 2, "exact", "near")
    frame.loc[frame.kind == "exact", "similarity"] = 1.0
    frame["mixed_labels"] = frame.groupby("component").given.transform(lambda names: names.dropna().nunique() > 1)
    order = (frame.groupby("component").agg(size=("path", "size"), first=("path", "min"))
             .sort_values(["size", "first"], ascending=[False, True]))
    frame["group"] = frame.component.map(dict(zip(order.index, range(1, len(order) + 1)))).astype(np.int64)
    frame = frame.sort_values(["group", "path"], ignore_index=True)
    return frame[list(_NO_DUPLICATES.columns)].astype({"mixed_labels": bool})
