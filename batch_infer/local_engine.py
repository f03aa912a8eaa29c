"""--engine local: decode with tf.data and call the model in this process, a few batches at a
time (see `parallel`)."""

from __future__ import annotations

import itertools
from typing import Iterator

import pyarrow as pa

from . import parallel
from .config import RunConfig
from .decode import pillow
from .decode.pipeline import NONE_DECODED, DecodedBatch, batches
from .listing import ListedFile
from .scorer import Scorer

FALLBACK_SUFFIXES = tuple(f".{extension}" for extension in pillow.EXTENSIONS)


class LocalEngine:
    def __init__(self, config: RunConfig):
        self.config = config

    def prepare(self) -> tuple[Scorer, dict[str, str]]:
        """Sets the device and thread pools (before TensorFlow runs its first op), then loads the
        model: (scorer, {"device", "threads"} for the metadata)."""
        from .model import configure_device

        device = configure_device(self.config.device)
        self.threads = parallel.configure(device)
        self.scorer = Scorer.load(self.config, self.threads)
        return self.scorer, {"device": device, "threads": self.threads.describe()}

    def score(self, todo: list[ListedFile]) -> Iterator[pa.Table]:
        """Rows for every file of `todo`, in tables as they are ready: `threads.streams` read
        batches (`pipeline.batches`) in flight, each scored and made into rows on its stream."""

        refused, readable = self.scorer.triage(todo)
        yield refused
        # Files named as formats only Pillow reads skip the graph, which would read them whole
        # only to drop them; the rest are judged by content (a TIFF named .jpg is rescued too).
        direct = [item for item in readable if item.path.lower().endswith(FALLBACK_SUFFIXES)]
        graph = [item for item in readable if not item.path.lower().endswith(FALLBACK_SUFFIXES)]
        decoded = batches(graph, self.scorer.model.spec, self.config.batch_size, self.scorer.decoding,
                          self.threads)
        size = self.config.batch_size
        jobs = itertools.chain(_with_gaps(graph, decoded, size),
                               ((direct[start:start + size], NONE_DECODED) for start in range(0, len(direct), size)))
        for _, table in parallel.in_order(lambda job: self.scorer.rows(*job), jobs, self.threads.streams):
            yield table


def _with_gaps(readable: list[ListedFile], decoded: Iterator[DecodedBatch],
               batch_size: int) -> Iterator[tuple[list[ListedFile], DecodedBatch]]:
    """(files, those of them that decoded, by their positions among them) per batch: the files a batch
    covers run from the one after the previous batch to its last, so files that dropped out of
    decoding are in the batch after them. A run of more than `batch_size` such files (a folder
    of TIFFs, which the Pillow fallback decodes) comes first in jobs of its own, `batch_size`
    files each, so that they are decoded on every stream and committed as they go."""
    next_index = 0
    for batch in decoded:
        first, end = int(batch.positions[0]), int(batch.positions[-1]) + 1
        while first - next_index > batch_size:
            yield readable[next_index:next_index + batch_size], NONE_DECODED
            next_index += batch_size
        yield readable[next_index:end], batch._replace(positions=batch.positions - next_index)
        next_index = end
    for start in range(next_index, len(readable), batch_size):
        yield readable[start:start + batch_size], NONE_DECODED
