"""--engine local: decode with tf.data and call the model in this process, a few batches at a
time (see `parallel`)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from . import parallel
from .config import RunConfig
from .listing import ListedFile
from .scorer import Scorer


class LocalEngine:
    def __init__(self, config: RunConfig):
        self.config = config

    def prepare(self) -> tuple[Scorer, dict[str, str]]:
        """Sets the device and thread pools (before TensorFlow runs its first op), then loads the
        model: (scorer, {"device", "threads"} for the metadata)."""
        from .model import configure_device

        device = configure_device(self.config.device)
        self.threads = parallel.configure(device)
        self.scorer = Scorer.load(self.config)
        return self.scorer, {"device": device, "threads": self.threads.describe()}

    def score(self, todo: list[ListedFile]) -> Iterator[pa.Table]:
        """Rows for every file of `todo`, in tables as they are ready: `threads.streams` model
        calls in flight, each batch's rows built on its stream."""
        from .pipeline import batches

        refused, readable = self.scorer.triage(todo)
        yield refused
        decoded = batches(readable, self.scorer.model.spec, self.config.batch_size,
                          self.scorer.decoding, self.threads)
        for _, table in parallel.in_order(lambda job: self.scorer.rows(*job), _with_gaps(readable, decoded),
                                          self.threads.streams):
            yield table


def _with_gaps(readable: list[ListedFile], decoded) -> Iterator[tuple]:
    """(files, positions among them that decoded, their images, None: no bytes at hand, their
    facts) per batch: the files a batch
    covers run from the one after the previous batch to its last, so files that dropped out of
    decoding are in the batch after them (or in a last one without images)."""
    next_index = 0
    for indices, images, facts in decoded:
        end = int(indices[-1]) + 1
        yield readable[next_index:end], indices - next_index, images, None, facts
        next_index = end
    if next_index < len(readable):
        yield readable[next_index:], np.array([], np.int64), None, None, {}
