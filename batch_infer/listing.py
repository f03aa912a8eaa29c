"""Finding the files to score, under an input root or in a manifest, and splitting them into
shards; and the columns the listing adds to every row (file size and modification time, and
the manifest columns asked for with --keep-columns).

Listing works on bytes so that any file name the OS allows can be opened; the `path` shown to
users is the relative name as UTF-8 text, `/`-separated. An s3://, gs://... root is listed through
`storage`, with the same sorting and the same `path` values. A manifest's paths are shown as the
manifest has them, in its order.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from . import storage
from .config import MANIFEST_SUFFIXES, ConfigError
from .progress import log


@dataclass(frozen=True)
class ListedFile:
    path: str  # relative to the input root, `/`-separated, as written to the `path` column
    fs_path: bytes  # absolute path to open, or the object's URL
    problem: str | None = None  # set when the entry must become an error row without being read
    size: int | None = 0  # bytes, from the listing's stat, so oversized files are refused unread
    mtime_ns: int | None = None  # modification time, so a file changed since its row is scored again
    row: int = 0  # the manifest row it came from


LISTED_FIELDS = [pa.field("file_size", pa.int64()), pa.field("file_mtime", pa.timestamp("ns", tz="UTC"))]


@dataclass
class Listing:
    """The files to score, and the columns the listing adds to each of their rows."""

    items: list[ListedFile]
    kept: pa.Table = field(default_factory=lambda: pa.table({}))  # manifest columns, one row per manifest row

    @property
    def fields(self) -> list[pa.Field]:
        return LISTED_FIELDS + list(self.kept.schema)

    def columns(self, items: list[ListedFile]) -> list[pa.Array]:
        """The listing's columns for `items`, in the order of `fields`."""
        kept = self.kept.take(pa.array([item.row for item in items], pa.int64())) if self.kept.num_columns else None
        return [pa.array([item.size if item.problem is None else None for item in items], pa.int64()),
                pa.array([item.mtime_ns for item in items], LISTED_FIELDS[1].type),
                *(kept.columns if kept is not None else [])]

    def annotator(self, items: list[ListedFile]) -> Callable[[pa.Table], pa.Table]:
        """A function that gives a table of rows of `items` (path, status, error, ...) the
        listing's columns after `error`. The columns are built once for all the items, and each
        table takes its rows from them, rather than converting Python lists for every table."""
        row_of = {item.path: row for row, item in enumerate(items)}
        columns = self.columns(items)

        def annotate(table: pa.Table) -> pa.Table:
            rows = pa.array([row_of[path] for path in table.column("path").to_pylist()], pa.int64())
            for offset, (field_, column) in enumerate(zip(self.fields, columns)):
                table = table.add_column(3 + offset, field_, column.take(rows))
            return table

        return annotate


def display_path(relative: bytes) -> str:
    """Relative name as text; bytes that are not UTF-8 are shown as \\xNN escapes."""
    return relative.decode("utf-8", "backslashreplace")


def list_images(root: str, extensions: tuple[str, ...], recursive: bool = True) -> list[ListedFile]:
    """All files under `root` whose extension matches, sorted by relative path.

    Directories reached through symlinks are not entered (that is how loops end) and, like
    directories named x.jpg, are not files, so they give no row. A symlinked file is scored only
    when it resolves inside the root; FIFOs, sockets, devices, dangling or looping symlinks are
    never opened. Refused entries become error rows, so every matching name is accounted for.
    A directory that cannot be listed is skipped with a warning.
    """
    if storage.is_url(root):
        return _list_objects(root, extensions, recursive)
    root_bytes = os.fsencode(os.path.abspath(root))
    real_root = os.path.realpath(root_bytes)
    suffixes = tuple(b"." + os.fsencode(ext.lower()) for ext in extensions)
    found: list[ListedFile] = []
    pending = [b""]
    while pending:
        relative_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(root_bytes, relative_dir)))
        except OSError as error:
            log.warning("cannot list %s (%s); files in it are not scored",
                        display_path(os.path.join(root_bytes, relative_dir)), error.strerror or error)
            continue
        for entry in entries:
            relative = os.path.join(relative_dir, entry.name) if relative_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    pending.append(relative)
                continue
            if not entry.name.lower().endswith(suffixes):
                continue
            listed = _listed(display_path(relative), entry, real_root)
            if listed is not None:
                found.append(listed)
    found.sort(key=lambda item: item.fs_path)
    return found


def _list_objects(root: str, extensions: tuple[str, ...], recursive: bool) -> list[ListedFile]:
    """Objects under a URL prefix whose extension matches, sorted by key. An object store has no
    symlinks, pipes or devices, so every match is a file to read."""
    suffixes = tuple("." + ext.lower() for ext in extensions)
    found = [ListedFile(relative, storage.join(root, relative).encode(), size=size, mtime_ns=modified)
             for relative, size, modified in storage.list_files(root, recursive)
             if relative.lower().endswith(suffixes)]
    found.sort(key=lambda item: item.fs_path)
    return found


def _listed(path: str, entry: os.DirEntry, real_root: bytes) -> ListedFile | None:
    """The entry as a file to score, as a refused file (an error row), or None for a directory
    behind a symlink, which is not a file. os.stat never opens anything, so a FIFO cannot block."""
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if os.path.commonpath([target, real_root]) != real_root:
            return ListedFile(path, entry.path, "read: symlink points outside the input root")
    try:
        info = os.stat(entry.path)
    except OSError as error:  # dangling or looping symlink, or a file that just vanished
        return ListedFile(path, entry.path, f"read: {error.strerror or error}")
    if stat.S_ISDIR(info.st_mode):
        return None
    if not stat.S_ISREG(info.st_mode):
        return ListedFile(path, entry.path, "read: not a regular file")
    return ListedFile(path, entry.path, size=info.st_size, mtime_ns=info.st_mtime_ns)


def shard_of(path: str, count: int) -> int:
    """Stable shard for a relative path: the same on every machine, run and Python version."""
    digest = hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def in_shard(files: list[ListedFile], shard: tuple[int, int]) -> list[ListedFile]:
    index, count = shard
    if count == 1:
        return files
    return [item for item in files if shard_of(item.path, count) == index]


def is_manifest(path: str) -> bool:
    return path.lower().endswith(MANIFEST_SUFFIXES)


def list_input(input: str, extensions: tuple[str, ...], recursive: bool, path_column: str = "path",
               keep_columns: tuple[str, ...] = ()) -> Listing:
    if is_manifest(input):
        return list_manifest(input, path_column, keep_columns)
    return Listing(list_images(input, extensions, recursive))


def read_manifest(path: str) -> pa.Table:
    """The manifest as a table, with the types its format gives (CSV and JSON types inferred)."""
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    lower = path.lower()
    try:
        if lower.endswith(".txt"):
            with open(path, encoding="utf-8") as handle:
                return pa.table({"path": [line.rstrip("\r\n") for line in handle if line.strip()]})
        if lower.endswith(".parquet"):
            return pyarrow.parquet.read_table(path)
        if lower.endswith(".jsonl"):
            return pyarrow.json.read_json(path)
        delimiter = "\t" if lower.endswith(".tsv") else ","
        return pyarrow.csv.read_csv(path, parse_options=pyarrow.csv.ParseOptions(delimiter=delimiter))
    except (OSError, pa.ArrowException, UnicodeDecodeError) as error:
        raise ConfigError(f"Manifest {path} could not be read ({str(error).splitlines()[0]}); give a "
                          "CSV, TSV, Parquet, JSON-lines or text file of paths.") from None


def list_manifest(manifest: str, path_column: str, keep_columns: tuple[str, ...]) -> Listing:
    """The files a manifest names, in its order. Relative paths resolve against the manifest's
    folder; URLs and absolute paths are taken as they are. A path listed twice is scored once."""
    table = read_manifest(manifest)
    column = "path" if manifest.lower().endswith(".txt") else path_column
    missing = [name for name in (column, *keep_columns) if name not in table.column_names]
    if missing:
        raise ConfigError(f"Manifest {manifest} has no column {', '.join(missing)}; its columns are "
                          f"{', '.join(table.column_names)}. Choose them with --path-column and --keep-columns.")
    if not pa.types.is_string(table.schema.field(column).type):
        table = table.set_column(table.column_names.index(column), column, table.column(column).cast(pa.string()))
    base = os.path.dirname(os.path.abspath(manifest))
    found, seen, duplicates = [], set(), []
    for row, path in enumerate(table.column(column).to_pylist()):
        if not path:
            continue
        if path in seen:
            duplicates.append(path)
            continue
        seen.add(path)
        found.append(_manifest_entry(row, path, base))
    if duplicates:
        log.warning("%d path(s) are listed more than once in %s and are scored once (first: %s)",
                    len(duplicates), manifest, duplicates[0])
    return Listing(found, table.select(list(keep_columns)))


def _manifest_entry(row: int, path: str, base: str) -> ListedFile:
    if storage.is_url(path):
        return ListedFile(path, path.encode(), size=None, row=row)
    location = os.fsencode(path if os.path.isabs(path) else os.path.join(base, path))
    try:
        info = os.stat(location)
    except OSError as error:
        return ListedFile(path, location, f"read: {error.strerror or error}", row=row)
    if not stat.S_ISREG(info.st_mode):
        return ListedFile(path, location, "read: not a regular file", row=row)
    return ListedFile(path, location, size=info.st_size, mtime_ns=info.st_mtime_ns, row=row)
