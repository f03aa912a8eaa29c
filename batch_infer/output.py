"""Reading an output dataset back, locally or in object storage.

Resume, `report` and `export` all read OUT through `read_parts`, so they agree on what a part is
(`layout.PART_GLOB`) and all work on s3://, gs://... outputs.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from itertools import repeat
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .config import ConfigError
from .layout import METADATA_PREFIX, PART_GLOB


def part_files(output: str) -> tuple[list[str], object]:
    """(committed parts of OUT sorted by name, the pyarrow-compatible file system to open them
    with: None for local paths). An object store's listing cache is dropped first: parts
    committed by other runs since this process last looked must count."""
    if storage.is_url(output):
        fs, root = storage.filesystem(output)
        fs.invalidate_cache()
        return sorted(fs.glob(f"{root.rstrip('/')}/{PART_GLOB}")), fs
    return sorted(glob.glob(os.path.join(glob.escape(output), PART_GLOB))), None


def part_metadata(schema: pa.Schema) -> dict[str, str]:
    """The `batch_infer.*` key-value metadata of a part, without the prefix."""
    return {key[len(METADATA_PREFIX):].decode(): value.decode()
            for key, value in (schema.metadata or {}).items() if key.startswith(METADATA_PREFIX)}


def iter_parts(output: str, columns: list[str],
               optional: list[str] = ()) -> Iterator[tuple[pa.Table, dict[str, str]]]:
    """(rows of `columns` and of those `optional` columns the part has, metadata) of each
    committed part, one part in memory at a time."""
    parts, filesystem = part_files(output)
    for part in parts:
        schema = pq.read_schema(part, filesystem=filesystem)
        missing = [name for name in columns if name not in schema.names]
        if missing:
            raise ConfigError(f"{part} has no column {', '.join(missing)}; is it batch-infer output?")
        present = [name for name in optional if name in schema.names]
        yield pq.read_table(part, columns=[*columns, *present], filesystem=filesystem), part_metadata(schema)


def read_parts(output: str, columns: list[str],
               optional: list[str] = ()) -> tuple[pa.Table, list[dict[str, str]]]:
    """Every committed row of OUT (only `columns`, the `optional` columns where parts have them,
    null elsewhere, plus each part's `run_id`) and each part's metadata; ConfigError when OUT is
    missing or holds no parts, naming what to pass instead."""
    exists = storage.is_dir(output) if storage.is_url(output) else os.path.isdir(output)
    if not exists:
        raise ConfigError(f"{output} does not exist; give the --output directory of a batch-infer run.")
    tables, metadata = [], []
    for table, meta in iter_parts(output, columns, optional):
        tables.append(table.append_column("run_id", pa.array([meta.get("run_id", "")] * table.num_rows,
                                                             pa.string())))
        metadata.append(meta)
    if not tables:
        raise ConfigError(f"{output} has no {PART_GLOB} files; give the --output directory of a "
                          "batch-infer run.")
    return pa.concat_tables(tables, promote_options="default"), metadata


@dataclass
class Committed:
    """What OUT holds already: its parts, their metadata, and for each path the file size and
    modification time its row was scored at (None in parts written before they were recorded)
    and the index of the part holding it."""

    parts: list[str] = field(default_factory=list)
    filesystem: object = None
    metadata: list[dict[str, str]] = field(default_factory=list)
    rows: dict[str, tuple[int | None, int | None, int]] = field(default_factory=dict)


def committed(output: str) -> Committed:
    """Reads only the path, file_size and file_mtime columns of each part, one part at a time."""
    parts, filesystem = part_files(output)
    found = Committed(parts, filesystem)
    for index, part in enumerate(parts):
        schema = pq.read_schema(part, filesystem=filesystem)
        listed = [name for name in ("file_size", "file_mtime") if name in schema.names]
        table = pq.read_table(part, columns=["path", *listed], filesystem=filesystem)
        unknown = [None] * table.num_rows
        sizes = table.column("file_size").to_pylist() if "file_size" in listed else unknown
        mtimes = (table.column("file_mtime").cast(pa.int64()).to_pylist() if "file_mtime" in listed
                  else unknown)
        found.rows.update(zip(table.column("path").to_pylist(), zip(sizes, mtimes, repeat(index))))
        found.metadata.append(part_metadata(schema))
    return found
