"""`batch-infer export`: ok rows of an output dataset in the shape another tool wants.

csv for spreadsheets, imagefolder (DEST/<label>/<file>) for training loaders such as Keras'
image_dataset_from_directory, torchvision's ImageFolder or Hugging Face's imagefolder, and
label-studio for reviewing the predictions as pre-annotations. Error rows and rows under
--min-score are left out and counted in the summary line. With --review, label-studio exports
instead the suspects and duplicate groups a `batch-infer review --output` wrote: one task per
file, with the given label and the prediction side by side, so a person can fix the label.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from .config import ConfigError
from . import storage
from .atomic import write_atomically

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["path", "status", "label", "score", "top_k_labels", "top_k_scores"]
FORMATS = ("csv", "imagefolder", "label-studio")
LOCAL_FILES = "/data/local-files/?d="
REVIEW_FILES = ("suspects.parquet", "duplicates.parquet")


def _min_score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, e.g. 0.8; got {text!r}")
    return value


def add_command(commands) -> None:
    parser = commands.add_parser(
        "export", help="write ok rows as CSV, an image folder per label, or Label Studio tasks",
        description="Export the ok rows of OUT for other tools. Example: batch-infer export "
                    "scores/ --format imagefolder --input photos/ --dest by_label/ --min-score 0.9")
    parser.add_argument("output", metavar="OUT", help="output directory of a batch-infer run")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="csv: path,label,score,top_k_labels,top_k_scores with top-k joined by '|'; "
                             "imagefolder: DEST/<label>/<path with / replaced by __>; label-studio: a "
                             "JSON task list with the top-1 label as a prediction")
    parser.add_argument("--dest", required=True, metavar="DEST",
                        help="file to write (csv, label-studio) or new or empty directory (imagefolder)")
    parser.add_argument("--input", metavar="DIR", help="the run's --input (needed by imagefolder)")
    parser.add_argument("--min-score", type=_min_score, default=0.0, metavar="S",
                        help="export only rows whose top-1 score is at least S (default: 0)")
    parser.add_argument("--link", choices=("hardlink", "copy"), default="hardlink",
                        help="imagefolder: hard-link the images (copied when DEST is on another "
                             "filesystem) or copy them (default: hardlink)")
    parser.add_argument("--image-root", default=LOCAL_FILES, metavar="PREFIX",
                        help="label-studio: prefix of each task's image URL, followed by the URL-quoted "
                             f"path (default: {LOCAL_FILES}, Label Studio's local files URL, which is "
                             "relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: set that to the run's "
                             f"--input, or give e.g. {LOCAL_FILES}photos/ or https://host/photos/). The "
                             "labeling config must name its tags image and choice: <Image name=\"image\" "
                             "value=\"$image\"/><Choices name=\"choice\" toName=\"image\">")
    parser.add_argument("--review", metavar="REVIEW_DIR",
                        help="label-studio: export the suspects and duplicate groups that `batch-infer "
                             "review OUT --output REVIEW_DIR` wrote, as review tasks carrying the given "
                             "label and the prediction, instead of every ok row")
    parser.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    _check_args(args)
    from .output import read_parts  # pyarrow only now: `--help` stays fast

    table, _ = read_parts(storage.absolute(args.output), COLUMNS)
    rows = table.to_pandas()
    if args.review:
        return export_review(rows, args)
    ok = rows[rows.status == "ok"]
    kept = ok[ok.score >= args.min_score].sort_values("path", ignore_index=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.dest)), exist_ok=True)
    write = {"csv": write_csv, "imagefolder": write_image_folder, "label-studio": write_label_studio}
    write[args.format](kept, args)
    print(json.dumps({"format": args.format, "dest": os.path.abspath(args.dest), "exported": len(kept),
                      "below_min_score": len(ok) - len(kept), "errors_skipped": len(rows) - len(ok)}),
          flush=True)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.review is not None:
        if args.format != "label-studio":
            raise ConfigError("--review exports review tasks, which only --format label-studio holds.")
        if args.min_score > 0:
            raise ConfigError("--review exports every suspect and duplicate; leave out --min-score.")
        missing = [name for name in REVIEW_FILES if not os.path.isfile(os.path.join(args.review, name))]
        if missing:
            raise ConfigError(f"{args.review} has no {' or '.join(missing)}; write them with `batch-infer "
                              f"review {args.output} --truth ... --output {args.review}`.")
    if args.format != "imagefolder":
        if os.path.isdir(args.dest):
            raise ConfigError(f"--dest {args.dest} is a directory; --format {args.format} writes a file.")
        return
    if args.input is None:
        raise ConfigError("--format imagefolder copies the images, so it needs --input DIR "
                          "(the run's --input).")
    if not os.path.isdir(args.input):
        raise ConfigError(f"--input {args.input} is not a directory; give the run's --input.")
    if os.path.exists(args.dest) and (not os.path.isdir(args.dest) or os.listdir(args.dest)):
        raise ConfigError(f"--dest {args.dest} exists and is not an empty directory; give a new one, "
                          "so that files of another export do not mix in.")


def _short(score: np.float32) -> float:
    """A float32 as its shortest decimal: 0.9997 in the JSON rather than 0.99970000982284546."""
    return float(str(score))


def write_csv(rows: pd.DataFrame, args: argparse.Namespace) -> None:
    """Top-k as `|`-joined text, since spreadsheets have no lists; `str` of a float32 is its
    shortest decimal that reads back as the same float32, as pandas writes the score column."""
    table = rows[["path", "label", "score"]].assign(
        top_k_labels=["|".join(labels) for labels in rows.top_k_labels],
        top_k_scores=["|".join(map(str, scores)) for scores in rows.top_k_scores])
    write_atomically(args.dest, lambda handle: table.to_csv(handle, index=False), text=True)


def write_label_studio(rows: pd.DataFrame, args: argparse.Namespace) -> None:
    """Label Studio's import format with predictions; model_version is the run id, so predictions of
    a resumed run tell which run made them, and score lets reviewers sort by confidence."""
    tasks = [{"data": {"image": args.image_root + quote(path, safe="/")},
              "predictions": [_choice(run_id, label, _short(score))]}
             for path, label, score, run_id in zip(rows.path, rows.label, rows.score.to_numpy(),
                                                   rows.run_id)]
    write_atomically(args.dest, lambda handle: json.dump(tasks, handle, ensure_ascii=False), text=True)


def _choice(model_version: str, label: str, score: float | None = None) -> dict:
    prediction = {"model_version": model_version,
                  "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                              "value": {"choices": [label]}}]}
    return prediction if score is None else {**prediction, "score": score}


def export_review(rows: pd.DataFrame, args: argparse.Namespace) -> int:
    """One task per suspect (by rank) and per member of a duplicate group (by group), each with
    two predictions to choose from: the given label and the model's. The task's data carries
    why it is there (reason, or group, kind and similarity) for the labeling view to show."""
    import pandas as pd

    suspects = pd.read_parquet(os.path.join(args.review, "suspects.parquet"))
    groups = pd.read_parquet(os.path.join(args.review, "duplicates.parquet"))
    run_of = dict(zip(rows.path, rows.run_id))
    score_of = dict(zip(rows.path, rows.score.to_numpy()))

    def task(path: str, given: str | None, predicted: str | None, details: dict) -> dict:
        predictions = [_choice("given label", given)] if given is not None else []
        if predicted is not None:
            predictions.append(_choice(run_of.get(path, ""), predicted, _short(score_of[path])))
        return {"data": {"image": args.image_root + quote(path, safe="/"), "path": path,
                         "given_label": given, "predicted": predicted, **details},
                "predictions": predictions}

    tasks = [task(row.path, row.given_label, row.predicted, {"review": "suspect", "rank": int(row.rank),
                                                             "reason": row.reason})
             for row in suspects.itertuples()]
    tasks += [task(row.path, row.given, row.predicted if isinstance(row.predicted, str) else None,
                   {"review": "duplicate", "group": int(row.group), "kind": row.kind,
                    "similarity": round(float(row.similarity), 4), "mixed_labels": bool(row.mixed_labels)})
              for row in groups.itertuples()]
    write_atomically(args.dest, lambda handle: json.dump(tasks, handle, ensure_ascii=False), text=True)
    print(json.dumps({"format": args.format, "dest": os.path.abspath(args.dest), "exported": len(tasks),
                      "suspects": len(suspects), "duplicates": len(groups)}), flush=True)
    return 0


def label_directory(label: str) -> str:
    """A label as a directory name: labels are free text, but a name cannot hold `/` or NUL, and
    `.` and `..` already mean something."""
    name = label.replace("/", "_").replace("\0", "_")
    return f"_{name}" if name in ("", ".", "..") else name


def write_image_folder(rows: pd.DataFrame, args: argparse.Namespace) -> None:
    """DEST/<label>/<path with / as __>: flat, because some loaders (Hugging Face's imagefolder)
    take the label from the file's parent directory. Every source is checked first, so a wrong
    --input fails before anything is written."""
    sources = [os.path.join(args.input, path) for path in rows.path]
    missing = [path for path, source in zip(rows.path, sources) if not os.path.isfile(source)]
    if missing:
        raise ConfigError(f"{len(missing)} of {len(sources)} images are not under {args.input} (first: "
                          f"{missing[0]}); give the run's --input.")
    targets = [os.path.join(args.dest, label_directory(label), path.replace("/", "__"))
               for label, path in zip(rows.label, rows.path)]
    first = {}
    for path, target in zip(rows.path, targets):  # "a/b.jpg" and "a__b.jpg" with the same label
        if first.setdefault(target, path) != path:
            raise ConfigError(f"{first[target]} and {path} would both be exported as {target}; "
                              "rename one of them.")
    os.makedirs(args.dest, exist_ok=True)
    for label in set(rows.label):
        os.makedirs(os.path.join(args.dest, label_directory(label)), exist_ok=True)
    for source, target in zip(sources, targets):
        if args.link == "copy":
            shutil.copy2(source, target)
            continue
        try:
            os.link(source, target)
        except OSError:  # another filesystem (EXDEV) or one without hard links: same bytes, copied
            shutil.copy2(source, target)
