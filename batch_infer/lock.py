"""One writer per output and shard, so concurrent scheduler retries never score a file twice.

The lock is an flock on a file inside OUT: the kernel drops it when the holder dies, however it
dies, so a stale lock file never blocks a later run.

An object store (s3://, gs://) has no flock, and a lock object is no substitute: a run killed
with kill -9, or with its node, could not remove it, and the stale object would refuse the very
re-run that resumes the job. So an object-store output has no lock; keeping one run per output
and shard at a time is the scheduler's job there (an Airflow task instance runs one try at a
time). Two overlapping runs still cannot damage the output, as each writes parts of its own
(the run id is in their names); the cost is files scored twice, which give duplicate rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time

from . import storage
from .config import ConfigError
from .layout import lock_file
from .progress import log


def output_lock(output: str, shard_tag: str):
    """The lock for one output and shard: an flock on disk, none in an object store."""
    if storage.is_url(output):
        log.info("no lock in object storage: run one job per output and shard at a time")
        return contextlib.nullcontext()
    return OutputLock(output, shard_tag)


class OutputLock:
    def __init__(self, output: str, shard_tag: str):
        self.path = lock_file(output, shard_tag)
        self.descriptor: int | None = None

    def __enter__(self) -> "OutputLock":
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 200).decode("utf-8", "replace").strip() or "unknown process"
            os.close(descriptor)
            raise ConfigError(f"Output {os.path.dirname(self.path)} is being written by another "
                              f"batch-infer run ({holder}) for the same shard; wait for it to finish "
                              "or choose another --output.") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()} since "
                             f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}".encode())
        self.descriptor = descriptor
        return self

    def __exit__(self, *exc_info) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None
