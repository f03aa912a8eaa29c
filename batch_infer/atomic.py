"""Every local file batch-infer writes (parts, reports, exports) goes through `write_atomically`:
temporary name, fsync, rename, fsync of the directory, so after a crash a file is complete or
absent and a reader never sees half of one."""

from __future__ import annotations

import os
from typing import IO, Callable

from .layout import temporary as temporary_of


def fsync_directory(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(dest: str, write: Callable[[IO], None], text: bool = False) -> None:
    """Calls `write` on a temporary file next to `dest`, then renames it into place, so that a
    reader never sees half a file and a crash leaves the old file or the new one."""
    folder = os.path.dirname(os.path.abspath(dest))
    temporary = temporary_of(dest)
    with open(temporary, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, dest)
    fsync_directory(folder)
