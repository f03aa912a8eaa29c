"""The only module that writes Parquet: rows to Arrow, parts committed atomically, resume.

A part is written under a name starting with `.`, fsynced, then renamed to `part-*.parquet`, so
every reader (pyarrow, pandas, DuckDB, Polars) sees complete parts only, at any moment. Object
stores have no rename: there a part is put under its final name in one request, which makes it
appear whole or not at all.
"""

from __future__ import annotations

import glob
import os
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .atomic import write_atomically

SCHEMA = pa.schema([
    ("path", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("label", pa.string()),
    ("score", pa.float32()),
    ("top_k_labels", pa.list_(pa.string())),
    ("top_k_indices", pa.list_(pa.int32())),
    ("top_k_scores", pa.list_(pa.float32())),
])


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best classes per row, best first; ties keep the lower index."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order.astype(np.int32), np.take_along_axis(scores, order, axis=1).astype(np.float32)


def _fixed_lists(values: pa.Array, rows: int, k: int) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32)), values)


def ok_rows(paths: list[str], scores: np.ndarray, k: int, labels: np.ndarray) -> pa.Table:
    """Rows for scored files, built column-wise: no Python loop per row."""
    indices, best = top_k(scores, k)
    rows = len(paths)
    names = labels[indices]
    return pa.table({
        "path": pa.array(paths, pa.string()),
        "status": pa.array(np.full(rows, "ok", dtype=object), pa.string()),
        "error": pa.nulls(rows, pa.string()),
        "label": pa.array(names[:, 0], pa.string()),
        "score": pa.array(best[:, 0], pa.float32()),
        "top_k_labels": _fixed_lists(pa.array(names.ravel(), pa.string()), rows, k),
        "top_k_indices": _fixed_lists(pa.array(indices.ravel(), pa.int32()), rows, k),
        "top_k_scores": _fixed_lists(pa.array(best.ravel(), pa.float32()), rows, k),
    }, schema=SCHEMA)


def prediction_rows(paths: list[str], scores: np.ndarray, failures: dict[int, str], k: int,
                    labels: np.ndarray) -> pa.Table:
    """Rows for one model call: scored rows, and error rows for the rows the model rejected."""
    good = np.array([row not in failures for row in range(len(paths))], dtype=bool)
    return pa.concat_tables([
        ok_rows([path for path, ok in zip(paths, good) if ok], scores[good], k, labels),
        error_rows([paths[row] for row in failures], list(failures.values())),
    ])


def error_rows(paths: list[str], errors: list[str]) -> pa.Table:
    rows = len(paths)
    columns = {"path": pa.array(paths, pa.string()),
               "status": pa.array(["error"] * rows, pa.string()),
               "error": pa.array(errors, pa.string())}
    return pa.table({field.name: columns.get(field.name, pa.nulls(rows, field.type))
                     for field in SCHEMA}, schema=SCHEMA)


class PartWriter:
    """Buffers rows and commits them as a new part every `max_rows` rows or `max_seconds`."""

    def __init__(self, output: str, name_prefix: str, metadata: dict[str, str], max_rows: int,
                 max_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.output = output
        self.name_prefix = name_prefix
        self.schema = SCHEMA.with_metadata({f"batch_infer.{k}": v for k, v in metadata.items()})
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.clock = clock
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.parts_written = 0
        self.last_commit = clock()

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.pending.append(table)
            self.pending_rows += table.num_rows
        if self.pending_rows >= self.max_rows or (
                self.pending_rows and self.clock() - self.last_commit >= self.max_seconds):
            self.commit()

    def commit(self) -> None:
        """Writes the buffered rows as one new part."""
        self.last_commit = self.clock()
        if not self.pending:
            return
        table = pa.concat_tables(self.pending).cast(self.schema)
        self.pending, self.pending_rows = [], 0
        name = f"part-{self.name_prefix}-{self.parts_written:05d}.parquet"
        if storage.is_url(self.output):
            self._put(table, name)
        else:
            self._write_and_rename(table, name)
        self.parts_written += 1

    def _write_and_rename(self, table: pa.Table, name: str) -> None:
        """Temporary name, fsync, rename, fsync the directory: complete or absent after a crash."""
        write_atomically(os.path.join(self.output, name),
                         lambda handle: pq.write_table(table, handle, compression="zstd"))

    def _put(self, table: pa.Table, name: str) -> None:
        """The whole part in one request under its final name: an object store has no rename,
        and an object appears only once its upload is complete."""
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="zstd")
        storage.put(storage.join(self.output, name), buffer.getvalue().to_pybytes())


def remove_stale_temporaries(output: str, shard_tag: str) -> None:
    """Deletes half-written parts left by killed runs of the same shard (we hold its lock)."""
    for leftover in glob.glob(os.path.join(glob.escape(output), f".part-{shard_tag}-*.tmp")):
        os.remove(leftover)
