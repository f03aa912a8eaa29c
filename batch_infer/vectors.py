"""The embeddings of OUT as one float32 array, for `review`'s near-copy search.

Read part by part straight into one preallocated array: reading the column whole first holds it
twice (Arrow's copy and numpy's), and more while tables are concatenated; at 100,000 rows of
1,280 floats that was 1.8 GB for 512 MB of embeddings. Here one part's column is in Arrow at a
time, and a part is at most about 32 MiB of rows (see `sink`).
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from .output import part_files

COLUMN = "embedding"


def read_embeddings(output: str, paths: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(the numbers of the rows of `paths` that have an embedding, ascending; their vectors
    [rows, D] float32), None when no part of OUT has the column. Rows are found by path, so a
    part committed since `paths` were read (by a run still going) cannot shift them."""
    parts, filesystem = part_files(output)
    schemas = [pq.read_schema(part, filesystem=filesystem) for part in parts]
    with_column = [(part, schema) for part, schema in zip(parts, schemas) if COLUMN in schema.names]
    if not with_column:
        return None
    dim = with_column[0][1].field(COLUMN).type.list_size
    row_of = {path: row for row, path in enumerate(paths)}
    vectors = np.empty((len(paths), dim), np.float32)  # pages of rows never written are never touched
    has = np.zeros(len(paths), bool)
    for part, _ in with_column:
        table = pq.read_table(part, columns=["path", COLUMN], filesystem=filesystem)
        rows = np.array([row_of.get(path, -1) for path in table.column("path").to_pylist()], np.int64)
        column = table.column(COLUMN)
        valid = np.concatenate([chunk.is_valid().to_numpy(zero_copy_only=False) for chunk in column.chunks]
                               or [np.zeros(0, bool)])
        keep = valid & (rows >= 0)
        values = column.filter(keep).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors[rows[keep]] = values.reshape(-1, dim)
        has[rows[keep]] = True
        del table, column, values
    numbers = np.flatnonzero(has)
    for start in range(0, len(numbers), 4096):  # packed in place: row j moves up from numbers[j] >= j
        moved = numbers[start:start + 4096]
        vectors[start:start + len(moved)] = vectors[moved]
    return numbers, vectors[:len(numbers)]
