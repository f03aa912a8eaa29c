"""The tf.data pipeline: read, decode and batch files, keeping each image's file index.

A file that cannot be read or decoded, or that fails a limit, is dropped by `ignore_errors` and
shows up as a gap in the indices; `decoding.diagnose` then finds out why, so one bad file never
stops the stream and never shifts another file's prediction onto it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from . import parallel, storage
from .decoding import DecodeOptions, decode_with_facts
from .listing import ListedFile
from .model import InputSpec
from .tf_import import tf


def batches(files: list[ListedFile], spec: InputSpec, batch_size: int, options: DecodeOptions,
            plan: parallel.ThreadPlan | None = None) -> Iterator[tuple[np.ndarray, tf.Tensor]]:
    """Yields (file indices, batch of model inputs, the files' facts as arrays by name, see
    `decoding.decode_with_facts`) in file order; failed files leave gaps.

    `plan` (by default the CPU plan for this machine) sets the decode threads, and how many
    batches wait ready: one per model stream, and one more.

    `files` are those `decoding.unread_reason` lets through (tf.io.read_file reads a whole file
    into memory, so oversized files must not come here). Files in object storage, which
    TensorFlow cannot open, are read by Python threads and enter tf.data as bytes; local files
    keep tf.io.read_file inside tf.data. The same `decode` runs on both.
    """

    def load(index, path):
        return (index, *decode_with_facts(tf.io.read_file(path), spec, options))

    plan = plan or parallel.plan_for("cpu", parallel.usable_cores())
    if files and storage.is_url(files[0].fs_path):
        dataset = (_fetched(files)
                   .map(lambda index, data: (index, *decode_with_facts(data, spec, options)),
                        num_parallel_calls=plan.decode, deterministic=True))
    else:
        indices = np.arange(len(files), dtype=np.int64)
        paths = np.array([item.fs_path for item in files], dtype=object)
        dataset = (tf.data.Dataset.from_tensor_slices((indices, paths))
                   .map(load, num_parallel_calls=plan.decode, deterministic=True))
    threading = tf.data.Options()
    threading.autotune.enabled = False  # see `parallel`
    threading.threading.private_threadpool_size = plan.decode
    threading.threading.max_intra_op_parallelism = 1
    dataset = (dataset.ignore_errors().batch(batch_size).prefetch(plan.streams + 1)
               .with_options(threading))
    for index_batch, images, facts in dataset:
        yield index_batch.numpy(), images, {name: value.numpy() for name, value in facts.items()}


def _fetched(files: list[ListedFile]) -> tf.data.Dataset:
    """(index, bytes) of files in object storage, read ahead by a pool of threads; a file that
    could not be read is left out, a gap that `diagnose` explains."""
    urls = [item.fs_path.decode() for item in files]

    def generate():
        for position, data in storage.read_ahead(urls):
            if data is not None:
                yield position, data

    return tf.data.Dataset.from_generator(
        generate, output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)))


class BytesDecoder:
    """`decode` for files that arrive as bytes a batch at a time (Ray hands them over), traced
    once: a tf.data pipeline per batch would trace `decode` again for every batch, which costs
    more than decoding it. Files decode on a pool of threads, as TensorFlow releases the GIL."""

    def __init__(self, spec: InputSpec, options: DecodeOptions, threads: int | None = None):
        self.function = tf.function(lambda data: decode_with_facts(data, spec, options),
                                    input_signature=[tf.TensorSpec([], tf.string)])
        self.pool = ThreadPoolExecutor(threads or parallel.usable_cores())

    def __call__(self, files: list[bytes]) -> tuple[np.ndarray, tf.Tensor | None, dict[str, np.ndarray]]:
        """(positions that decoded, their model inputs as one batch, their facts by name);
        failed files leave gaps, as in `batches`, and `diagnose_data` says why."""
        decoded = list(self.pool.map(self._one, files))
        positions = np.array([i for i, one in enumerate(decoded) if one is not None], np.int64)
        if not len(positions):
            return positions, None, {}
        images, facts = zip(*(decoded[i] for i in positions))
        return positions, tf.stack(images), {name: np.stack([one[name].numpy() for one in facts])
                                             for name in facts[0]}

    def _one(self, data: bytes) -> tuple[tf.Tensor, dict] | None:
        try:
            return self.function(data)
        except tf.errors.OpError:
            return None
