"""`batch-infer export`: ok rows of an output dataset in the shape another tool wants.

csv for spreadsheets, imagefolder (DEST/<label>/<file>) for training loaders such as Keras'
image_dataset_from_directory, torchvision's ImageFolder or Hugging Face's imagefolder, and
label-studio for reviewing the predictions as pre-annotations. Error rows and rows under
--min-score are left out and counted in the summary line. With --review, label-studio exports
instead the suspects and duplicate groups a `batch-infer review --output` wrote: one task per
file, with the given label and the prediction side by side, so a person can fix the label.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from .config import LOCAL_FILES, ConfigError
from . import storage
from .atomic import write_atomically

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["path", "status", "label", "score", "top_k_labels", "top_k_scores"]
REVIEW_FILES = ("suspects.parquet", "duplicates.parquet")


def export(out: str, format: str, dest: str, input: str | None = None, min_score: float = 0.0,
           link: str = "hardlink", image_root: str = LOCAL_FILES, review: str | None = None) -> dict:
    """Writes the export; returns what `batch-infer export` prints: format, dest and counts."""
    _check(out, format, dest, input, min_score, review)
    from .output import read_parts  # pyarrow only now: `--help` stays fast

    table, _ = read_parts(storage.absolute(out), COLUMNS)
    rows = table.to_pandas()
    if review:
        return export_review(rows, review, dest, image_root)
    ok = rows[rows.status == "ok"]
    kept = ok[ok.score >= min_score].sort_values("path", ignore_index=True)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    if format == "csv":
        write_csv(kept, dest)
    elif format == "imagefolder":
        write_image_folder(kept, input, dest, link)
    else:
        write_label_studio(kept, dest, image_root)
    return {"format": format, "dest": os.path.abspath(dest), "exported": len(kept),
            "below_min_score": len(ok) - len(kept), "errors_skipped": len(rows) - len(ok)}


def _check(out: str, format: str, dest: str, input: str | None, min_score: float, review: str | None) -> None:
    if review is not None:
        if format != "label-studio":
            raise ConfigError("--review exports review tasks, which only --format label-studio holds.")
        if min_score > 0:
            raise ConfigError("--review exports every suspect and duplicate; leave out --min-score.")
        missing = [name for name in REVIEW_FILES if not os.path.isfile(os.path.join(review, name))]
        if missing:
            raise ConfigError(f"{review} has no {' or '.join(missing)}; write them with `batch-infer "
                              f"review {out} --truth ... --output {review}`.")
    if format != "imagefolder":
        if os.path.isdir(dest):
            raise ConfigError(f"--dest {dest} is a directory; --format {format} writes a file.")
        return
    if input is None:
        raise ConfigError("--format imagefolder copies the images, so it needs --input DIR "
                          "(the run's --input).")
    if not os.path.isdir(input):
        raise ConfigError(f"--input {input} is not a directory; give the run's --input.")
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise ConfigError(f"--dest {dest} exists and is not an empty directory; give a new one, "
                          "so that files of another export do not mix in.")


def _short(score: np.float32) -> float:
    """A float32 as its shortest decimal: 0.9997 in the JSON rather than 0.99970000982284546."""
    return float(str(score))


def write_csv(rows: pd.DataFrame, dest: str) -> None:
    """Top-k as `|`-joined text, since spreadsheets have no lists; `str` of a float32 is its
    shortest decimal that reads back as the same float32, as pandas writes the score column."""
    table = rows[["path", "label", "score"]].assign(
        top_k_labels=["|".join(labels) for labels in rows.top_k_labels],
        top_k_scores=["|".join(map(str, scores)) for scores in rows.top_k_scores])
    write_atomically(dest, lambda handle: table.to_csv(handle, index=False), text=True)


def write_label_studio(rows: pd.DataFrame, dest: str, image_root: str) -> None:
    """Label Studio's import format with predictions; model_version is the run id, so predictions of
    a resumed run tell which run made them, and score lets reviewers sort by confidence."""
    tasks = [{"data": {"image": image_root + quote(path, safe="/")},
              "predictions": [_choice(run_id, label, _short(score))]}
             for path, label, score, run_id in zip(rows.path, rows.label, rows.score.to_numpy(),
                                                   rows.run_id)]
    write_atomically(dest, lambda handle: json.dump(tasks, handle, ensure_ascii=False), text=True)


def _choice(model_version: str, label: str, score: float | None = None) -> dict:
    prediction = {"model_version": model_version,
                  "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                              "value": {"choices": [label]}}]}
    return prediction if score is None else {**prediction, "score": score}


def export_review(rows: pd.DataFrame, review: str, dest: str, image_root: str) -> dict:
    """One task per suspect (by rank) and per member of a duplicate group (by group), each with
    two predictions to choose from: the given label and the model's. The task's data carries
    why it is there (reason, or group, kind and similarity) for the labeling view to show."""
    import pandas as pd

    suspects = pd.read_parquet(os.path.join(review, "suspects.parquet"))
    groups = pd.read_parquet(os.path.join(review, "duplicates.parquet"))
    run_of = dict(zip(rows.path, rows.run_id))
    score_of = dict(zip(rows.path, rows.score.to_numpy()))

    def task(path: str, given: str | None, predicted: str | None, details: dict) -> dict:
        predictions = [_choice("given label", given)] if given is not None else []
        if predicted is not None:
            predictions.append(_choice(run_of.get(path, ""), predicted, _short(score_of[path])))
        return {"data": {"image": image_root + quote(path, safe="/"), "path": path,
                         "given_label": given, "predicted": predicted, **details},
                "predictions": predictions}

    tasks = [task(row.path, row.given_label, row.predicted, {"review": "suspect", "rank": int(row.rank),
                                                             "reason": row.reason})
             for row in suspects.itertuples()]
    tasks += [task(row.path, row.given, row.predicted if isinstance(row.predicted, str) else None,
                   {"review": "duplicate", "group": int(row.group), "kind": row.kind,
                    "similarity": round(float(row.similarity), 4), "mixed_labels": bool(row.mixed_labels)})
              for row in groups.itertuples()]
    write_atomically(dest, lambda handle: json.dump(tasks, handle, ensure_ascii=False), text=True)
    return {"format": "label-studio", "dest": os.path.abspath(dest), "exported": len(tasks),
            "suspects": len(suspects), "duplicates": len(groups)}


def label_directory(label: str) -> str:
    """A label as a directory name: labels are free text, but a name cannot hold `/` or NUL, and
    `.` and `..` already mean something."""
    name = label.replace("/", "_").replace("\0", "_")
    return f"_{name}" if name in ("", ".", "..") else name


def write_image_folder(rows: pd.DataFrame, input: str, dest: str, link: str) -> None:
    """DEST/<label>/<path with / as __>: flat, because some loaders (Hugging Face's imagefolder)
    take the label from the file's parent directory. Every source is checked first, so a wrong
    --input fails before anything is written."""
    sources = [os.path.join(input, path) for path in rows.path]
    missing = [path for path, source in zip(rows.path, sources) if not os.path.isfile(source)]
    if missing:
        raise ConfigError(f"{len(missing)} of {len(sources)} images are not under {input} (first: "
                          f"{missing[0]}); give the run's --input.")
    targets = [os.path.join(dest, label_directory(label), path.replace("/", "__"))
               for label, path in zip(rows.label, rows.path)]
    first = {}
    for path, target in zip(rows.path, targets):  # "a/b.jpg" and "a__b.jpg" with the same label
        if first.setdefault(target, path) != path:
            raise ConfigError(f"{first[target]} and {path} would both be exported as {target}; "
                              "rename one of them.")
    os.makedirs(dest, exist_ok=True)
    for label in set(rows.label):
        os.makedirs(os.path.join(dest, label_directory(label)), exist_ok=True)
    for source, target in zip(sources, targets):
        if link == "copy":
            shutil.copy2(source, target)
            continue
        try:
            os.link(source, target)
        except OSError:  # another filesystem (EXDEV) or one without hard links: same bytes, copied
            shutil.copy2(source, target)
