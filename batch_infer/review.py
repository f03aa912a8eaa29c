"""`batch-infer review`: its command line and where the given labels come from.

The work is in `findings`; this module stays light (no pandas or pyarrow at import), since the
command line imports it to build its parser.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def add_command(commands) -> None:
    parser = commands.add_parser(
        "review", help="compare predictions with the labels a dataset has: metrics, likely wrong "
                       "labels, duplicates",
        description="Compare the predictions in OUT with given labels: accuracy, per-class "
                    "metrics, the confusion matrix, rows whose label the model doubts, and "
                    "duplicate groups (exact by content_hash, near by embedding when OUT has one). "
                    "Example: batch-infer review scores/ --truth folder --output review/")
    parser.add_argument("output", metavar="OUT", help="output directory of a batch-infer run")
    add_truth_argument(parser, required=True)
    parser.add_argument("--output", dest="review_dir", metavar="REVIEW_DIR",
                        help="directory to write suspects, duplicates, per_class and confusion .parquet to")
    parser.add_argument("--similarity", type=_similarity, metavar="S",
                        help="near duplicates: centred cosine similarity of the embeddings at least S "
                             "(default: from the data, a tenth of the typical distance between an "
                             "image and its nearest neighbour)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=command)


def add_truth_argument(parser, required: bool) -> None:
    parser.add_argument("--truth", required=required, type=Truth.parse, metavar="folder|column:NAME",
                        help="where each file's given label is: folder (the first folder of its "
                             "path) or column:NAME (a manifest column kept with --keep-columns)")


def _similarity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -2.0
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a cosine similarity between -1 and 1, e.g. 0.93; got {text!r}")
    return value


def command(args: argparse.Namespace) -> int:
    from .findings import load

    review = load(args.output, args.truth, args.similarity)
    if args.review_dir:
        review.write(args.review_dir)
    summary = review.summary(args.review_dir)
    print(json.dumps(summary) if args.json else review.text(args.review_dir), flush=True)
    return 0


@dataclass(frozen=True)
class Truth:
    """Where the given labels are: the first folder of each path, or a kept manifest column."""
    column: str | None  # None: the folder

    @classmethod
    def parse(cls, text: str) -> "Truth":
        if text == "folder":
            return cls(None)
        if text.startswith("column:") and text[len("column:"):]:
            return cls(text[len("column:"):])
        raise argparse.ArgumentTypeError(f"must be folder or column:NAME; got {text!r}")

    def names(self, rows: pd.DataFrame) -> pd.Series:
        """The given label of each row as text, None where it has none (a file at the top of the
        input has no folder; an empty manifest cell has no label)."""
        if self.column is None:
            parts = rows.path.str.split("/", n=1)
            return parts.map(lambda part: part[0] if len(part) == 2 and part[0] else None)
        import pandas as pd

        values = rows[self.column]
        return values.map(lambda value: None if pd.isna(value) or str(value) == "" else str(value))

    def __str__(self) -> str:
        return "folder" if self.column is None else f"column:{self.column}"


