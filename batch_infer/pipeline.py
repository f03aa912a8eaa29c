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
from .decoding import (NOT_IN_GRAPH, DecodeOptions, Plan, decode_batch, decode_read, decode_with_facts,
                       file_facts, plan, read_batch)
from .listing import ListedFile
from .model import InputSpec
from .tf_import import tf


def batches(files: list[ListedFile], spec: InputSpec, batch_size: int, options: DecodeOptions,
            plan: parallel.ThreadPlan | None = None) -> Iterator[tuple[np.ndarray, tf.Tensor, dict]]:
    """Yields (file indices, batch of model inputs, the files' facts as arrays by name, see
    `decoding.file_facts`) in file order; failed files leave gaps.

    `plan` (by default the CPU plan for this machine) sets the decode threads, and how many
    batches wait ready: one per model stream, and one more.

    `files` are those `decoding.unread_reason` lets through (tf.io.read_file reads a whole file
    into memory, so oversized files must not come here). Local files are read, their headers
    parsed and their pixels decoded a batch at a time inside tf.data (`_read_and_decoded`); a
    batch that fails (a file that cannot be read, or decoded) is done again file by file, so that
    only that file drops out. Files in object storage, which TensorFlow cannot open, are read by
    Python threads and enter tf.data as bytes. The same decode runs on both.
    """
    plan = plan or parallel.plan_for("cpu", parallel.usable_cores())
    if files and storage.is_url(files[0].fs_path):
        dataset = (_fetched(files)
                   .map(as_written(lambda index, data: (index, *decode_with_facts(data, spec, options))),
                        num_parallel_calls=plan.decode, deterministic=True)
                   .ignore_errors().batch(batch_size))
        yield from _numpy(_threaded(dataset, plan))
        return
    one_by_one = BytesDecoder(spec, options, plan.decode)
    done = 0  # read batches
    dataset = _threaded(_read_and_decoded(files, spec, batch_size, options, plan), plan)
    for number, index_batch, images, facts in _numpy(dataset):
        for missing in range(done, number):
            yield from _one_by_one(files, missing * batch_size, batch_size, one_by_one)
        if len(index_batch):
            yield index_batch, images, facts
        done = number + 1
    for missing in range(done, -(-len(files) // batch_size)):
        yield from _one_by_one(files, missing * batch_size, batch_size, one_by_one)


def _read_and_decoded(files: list[ListedFile], spec: InputSpec, batch_size: int, options: DecodeOptions,
                      plan: parallel.ThreadPlan) -> tf.data.Dataset:
    """(read batch number, file indices, model inputs, facts) a read batch at a time. Files that
    fail a check or are left to Pillow leave the batch before decoding (gaps in the indices); a
    read batch that fails is missing from the numbers."""
    indices = np.arange(len(files), dtype=np.int64)
    paths = np.array([item.fs_path for item in files], dtype=object)

    def read_and_decoded(number, batch):
        index, path = batch
        positions, images, facts = decoded_batch(tf.map_fn(tf.io.read_file, path, fn_output_signature=tf.string),
                                                 spec, options)
        return number, tf.gather(index, positions), images, facts

    return (tf.data.Dataset.from_tensor_slices((indices, paths)).batch(batch_size).enumerate()
            .map(as_written(read_and_decoded), num_parallel_calls=plan.decode, deterministic=True)
            .ignore_errors())


def decoded_batch(data: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tuple[tf.Tensor, tf.Tensor, dict]:
    """(positions of the files the graph decodes, their model inputs, their facts) of a batch of
    file contents: files that fail a check or are left to Pillow leave it before decoding."""
    planned, content_hash = read_batch(data, spec, options)
    kept = planned[:, Plan._fields.index("branch")] != NOT_IN_GRAPH
    planned, content_hash = tf.boolean_mask(planned, kept), tf.boolean_mask(content_hash, kept)
    return (tf.where(kept)[:, 0], decode_batch(tf.boolean_mask(data, kept), planned, spec, options),
            file_facts(planned, content_hash))


def as_written(function):
    """`function` traced as written, without AutoGraph: the decode uses tf.cond where it branches,
    and AutoGraph's conversion of every function it calls took about 6 of the 7 seconds that
    tracing the decode took, as long as importing TensorFlow, before the first file."""
    return tf.autograph.experimental.do_not_convert(function)


def _threaded(dataset: tf.data.Dataset, plan: parallel.ThreadPlan) -> tf.data.Dataset:
    threading = tf.data.Options()
    threading.autotune.enabled = False  # see `parallel`
    threading.threading.private_threadpool_size = plan.decode
    threading.threading.max_intra_op_parallelism = 1
    return dataset.prefetch(plan.streams + 1).with_options(threading)


def _numpy(dataset: tf.data.Dataset) -> Iterator[tuple]:
    for *numbers, images, facts in dataset:
        yield (*(number.numpy() for number in numbers), images, {name: value.numpy() for name, value in facts.items()})


def _one_by_one(files: list[ListedFile], first: int, batch_size: int,
                decode: "BytesDecoder") -> Iterator[tuple[np.ndarray, tf.Tensor, dict]]:
    """The read batch from file `first` on, which failed in tf.data, read and decoded again one
    file at a time; the files that fail again leave gaps, which `decoding.diagnose` explains."""
    data = list(decode.pool.map(_read_or_none, files[first:first + batch_size]))
    readable = [i for i, one in enumerate(data) if one is not None]
    positions, images, facts = decode([data[i] for i in readable])
    if len(positions):
        yield first + np.array(readable, np.int64)[positions], images, facts


def _read_or_none(item: ListedFile) -> bytes | None:
    try:
        return tf.io.read_file(item.fs_path).numpy()
    except tf.errors.OpError:
        return None


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
    more than decoding it. `batch` decodes them as the local pipeline does a read batch; called,
    it decodes file by file on a pool of threads (TensorFlow releases the GIL), so that a file
    that fails drops out alone."""

    def __init__(self, spec: InputSpec, options: DecodeOptions, threads: int | None = None):
        self.spec, self.options = spec, options
        # Each file's header is read here, in Python (`decoding.plan`); only its decode is traced.
        signature = [tf.TensorSpec([], tf.string), tf.TensorSpec([len(Plan._fields)], tf.int64)]
        self.function = tf.function(lambda data, planned: decode_read(
            data, planned, tf.fingerprint(data[None])[0], spec, options),
            autograph=False, input_signature=signature)
        self.batch_function = tf.function(as_written(lambda data: decoded_batch(data, spec, options)),
                                          autograph=False, input_signature=[tf.TensorSpec([None], tf.string)])
        self.pool = ThreadPoolExecutor(threads or parallel.usable_cores())

    def batch(self, files: list[bytes]) -> tuple[np.ndarray, tf.Tensor | None, dict[str, np.ndarray]]:
        """As a call, in one call of the batch decode; file by file when a file fails it."""
        try:
            positions, images, facts = self.batch_function(tf.constant(files, tf.string))
        except tf.errors.OpError:
            return self(files)
        return positions.numpy(), images, {name: value.numpy() for name, value in facts.items()}

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
            return self.function(data, np.array(plan(data, self.spec, self.options), np.int64))
        except tf.errors.OpError:
            return None
