"""The only module that writes Parquet: parts committed atomically.

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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import storage
from .atomic import write_atomically
from .layout import METADATA_PREFIX, part_name, temporary_parts_glob
from .output import Committed

# A classification row is about 200 bytes, so --commit-every bounds a part; a 1,280-d embedding
# adds 5 KiB a row, and rows are then committed by size too: a part holds at most about this
# much Arrow data (2000 rows of 1,280 floats is 10 MiB; of 4,096 floats, 32 MiB).
MAX_PENDING_BYTES = 32 * 2**20


class PartWriter:
    """Buffers rows and commits them as a new part every `max_rows` rows, `max_bytes` bytes of
    Arrow data or `max_seconds`, whichever comes first."""

    def __init__(self, output: str, name_prefix: str, schema: pa.Schema, metadata: dict[str, str],
                 max_rows: int, max_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 max_bytes: int = MAX_PENDING_BYTES):
        self.output = output
        self.name_prefix = name_prefix
        self.schema = schema.with_metadata({METADATA_PREFIX + k.encode(): v for k, v in metadata.items()})
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self.clock = clock
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self.parts_written = 0
        self.last_commit = clock()

    def add(self, table: pa.Table) -> None:
        """Buffers `table`, committing a part each time `max_rows` are pending: a table larger
        than what is left of a part (a read batch of small files) is split, so that no part
        holds more than `max_rows` rows (parts committed for their bytes or age hold fewer)."""
        while self.pending_rows + table.num_rows >= self.max_rows:
            room = self.max_rows - self.pending_rows
            self._pend(table.slice(0, room))
            self.commit()
            table = table.slice(room)
        self._pend(table)
        if self.pending_bytes >= self.max_bytes or (
                self.pending_rows and self.clock() - self.last_commit >= self.max_seconds):
            self.commit()

    def _pend(self, table: pa.Table) -> None:
        if table.num_rows:
            self.pending.append(table)
            self.pending_rows += table.num_rows
            self.pending_bytes += table.nbytes

    def commit(self) -> None:
        """Writes the buffered rows as one new part."""
        self.last_commit = self.clock()
        if not self.pending:
            return
        table = pa.concat_tables(self.pending).cast(self.schema)
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        name = part_name(self.name_prefix, self.parts_written)
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
        storage.put(storage.join(self.output, name), _parquet_bytes(table))


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue().to_pybytes()


def drop_rows(found: Committed, paths: set[str]) -> None:
    """Rewrites each part holding any of `paths` without their rows (a part left empty is
    removed), each part atomically, so that at every moment a path has at most one row and a
    crash before they are scored again leaves them merely unscored."""
    affected = sorted({found.rows[path][2] for path in paths})
    for index in affected:
        part = found.parts[index]
        table = pq.read_table(part, filesystem=found.filesystem)
        kept = table.filter(pc.invert(pc.is_in(table.column("path"), pa.array(sorted(paths), pa.string()))))
        if found.filesystem is not None:  # one request replaces the object whole, as `storage.put`
            if kept.num_rows:
                found.filesystem.pipe_file(part, _parquet_bytes(kept))
            else:
                found.filesystem.rm(part)
        elif kept.num_rows:
            write_atomically(part, lambda handle: pq.write_table(kept, handle, compression="zstd"))
        else:
            os.remove(part)


def remove_stale_temporaries(output: str, shard_tag: str) -> None:
    """Deletes half-written parts left by killed runs of the same shard (we hold its lock)."""
    for leftover in glob.glob(os.path.join(glob.escape(output), temporary_parts_glob(shard_tag))):
        os.remove(leftover)
