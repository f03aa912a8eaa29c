"""Object storage for --input and --output: s3://, gs:// and any other fsspec URL.

TensorFlow cannot open s3:// (its S3 file system left core TensorFlow), so remote files are read
here, many at a time, and handed to tf.data as bytes; local paths never come here and keep
tf.io.read_file's fast path. Object stores have no rename, so a part is put under its final name
in one request instead: an S3 PUT, or a GCS upload, makes the object appear whole or not at all.

Credentials come from wherever each client library looks (environment variables, ~/.aws,
gcloud's application default credentials, instance and pod roles), never from flags, so they
stay out of process listings, job files and logs. fsspec is imported on first use only, so local
runs never pay for it.
"""

from __future__ import annotations

import os
import re
from typing import Iterator

from .parallel import in_order

# Reads in flight when streaming remote files: an object store answers in tens of milliseconds,
# so about this many parallel GETs keep a decoder busy while holding only a window of files in
# memory.
READ_AHEAD = 32

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# The package each scheme needs, named in the error when it is missing.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def is_url(path: str | bytes) -> bool:
    """s3://bucket/prefix, gs://..., memory://...: a path for fsspec rather than the OS."""
    return bool(_SCHEME.match(path.decode("utf-8", "replace") if isinstance(path, bytes) else path))


def absolute(path: str) -> str:
    """A local path made absolute; a URL as it is."""
    return path if is_url(path) else os.path.abspath(path)


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def filesystem(url: str):
    """(fsspec file system, path without the scheme) for a URL; ImportError when the package for
    its scheme (s3fs, gcsfs, ...) is not installed."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


def is_dir(url: str) -> bool:
    """Whether anything is stored under the URL (object stores have prefixes, not directories)."""
    fs, path = filesystem(url)
    fs.invalidate_cache()
    return fs.isdir(path)


def container_exists(url: str) -> bool:
    """Whether the bucket (S3, GCS) of `url` exists: an output in a bucket that does not would
    fail only at the first part, after minutes of work. True for other schemes."""
    if scheme(url) not in EXTRAS:
        return True
    fs, path = filesystem(url)
    return fs.exists(path.split("/", 1)[0])


def list_files(url: str, recursive: bool) -> list[tuple[str, int, int | None]]:
    """(path relative to `url`, `/`-separated, size in bytes, last-modified in ns since the
    epoch or None) of every object under it.

    The listing cache is dropped first: a run must see what other runs committed since.
    """
    fs, root = filesystem(url)
    fs.invalidate_cache()
    prefix = root.rstrip("/") + "/"
    found = fs.find(root, maxdepth=None if recursive else 1, detail=True)
    return [(name[len(prefix):], int(info["size"]), modified_ns(info)) for name, info in found.items()
            if info["type"] == "file" and name.startswith(prefix)]


# Where fsspec back ends put an object's modification time: s3fs, gcsfs, local and memory.
_MODIFIED_KEYS = ("LastModified", "updated", "mtime", "created")


def modified_ns(info: dict) -> int | None:
    """An object's last-modified time from its fsspec info, in ns; None when it has none."""
    import datetime

    for key in _MODIFIED_KEYS:
        value = info.get(key)
        if isinstance(value, str):
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.timezone.utc)
            return int(value.timestamp() * 1e6) * 1000
        if isinstance(value, (int, float)):
            return int(value * 1e9)
    return None


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


def read_ahead(urls: list[str], window: int = READ_AHEAD) -> Iterator[tuple[int, bytes | None]]:
    """(position in `urls`, the object's bytes) in order, `window` reads in flight; None for an
    object that could not be read, so the caller can leave a gap and ask why later."""

    def read(url: str) -> bytes | None:
        try:
            return read_bytes(url)
        except OSError:  # fsspec back ends report missing, forbidden and failed reads as OSError
            return None

    for (position, _), data in in_order(lambda item: read(item[1]), enumerate(urls), window):
        yield position, data


def put(url: str, data: bytes) -> None:
    """Stores `data` under `url` in one request (s3fs switches to a multipart upload only past
    100 MB, and that too appears only when complete), so readers never see half an object."""
    fs, path = filesystem(url)
    fs.pipe_file(path, data)


def read(path: bytes):
    """A file's bytes as a tf.string tensor, from disk or from object storage."""
    from .tf_import import tf

    if is_url(path):
        return tf.constant(read_bytes(path.decode()))
    return tf.io.read_file(path)


def read_or_none(path: bytes) -> bytes | None:
    """A file's bytes, read in Python (a TensorFlow op called from Python costs a small file more
    than reading it), from disk or object storage; None when it cannot be read, which
    `decode.diagnose` then explains."""
    try:
        if is_url(path):
            return read_bytes(path.decode())
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None
