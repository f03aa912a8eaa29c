"""The tf.data pipeline: read, decode and batch files, keeping each image's file index.

A file that cannot be read or decoded, or that fails a limit, is dropped by `ignore_errors` and
shows up as a gap in the indices; `diagnose.diagnose` then finds out why, so one bad file never
stops the stream and never shifts another file's prediction onto it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, NamedTuple

import numpy as np

from .. import parallel, storage
from ..listing import ListedFile
from ..model import InputSpec
from ..tf_import import tf
from .graph import decode_batch, file_facts, plan_batch
from .options import DecodeOptions
from .plan import NOT_IN_GRAPH, Plan


class DecodedBatch(NamedTuple):
    """Files decoded as one batch, as both engines hand them to the scorer: where they are
    (indices into the listing in `batches`, positions among the bytes given to `BytesDecoder`),
    their model inputs in that order (None when none decoded), and their facts by name (width,
    height, content_hash, see `graph.file_facts`; and the phash thumbnail). Files missing from
    `positions` dropped out."""

    positions: np.ndarray
    images: tf.Tensor | None
    facts: dict[str, np.ndarray]


NONE_DECODED = DecodedBatch(np.array([], np.int64), None, {})


def batches(files: list[ListedFile], spec: InputSpec, batch_size: int, options: DecodeOptions,
            plan: parallel.ThreadPlan | None = None,
            read_batches: int | None = None) -> Iterator[DecodedBatch]:
    """Yields the decoded files by their indices in `files`, a read batch at a time, in file
    order; failed files leave gaps. A read batch holds up to `read_batches` model batches of `batch_size` files (by default
    `batches_per_read`): the model is called a model batch at a time (`scorer.Scorer`).

    `plan` (by default the CPU plan for this machine) sets the decode threads, and how many
    batches wait ready: one per model stream, and one more.

    `files` are those `diagnose.unread_reason` lets through (tf.io.read_file reads a whole file
    into memory, so oversized files must not come here). Files are read, their headers parsed
    and their pixels decoded a read batch at a time inside tf.data (`_read_and_decoded`); a read
    batch that fails (a file that cannot be read, or decoded) is done again in smaller parts, so
    that only that file drops out.
    """
    plan = plan or parallel.plan_for("cpu", parallel.usable_cores())
    again = BytesDecoder(spec, options, plan.decode)
    read_size = batch_size * (read_batches or batches_per_read(files, spec, batch_size))
    done = 0  # read batches
    dataset = _threaded(_read_and_decoded(files, spec, read_size, options, plan), plan)
    for number, index_batch, images, facts in _numpy(dataset):
        for missing in range(done, number):
            yield from _again(files, missing * read_size, read_size, again)
        if len(index_batch):  # not every file left to Pillow or failing a check
            yield DecodedBatch(index_batch, images, facts)
        done = number + 1
    for missing in range(done, -(-len(files) // read_size)):
        yield from _again(files, missing * read_size, read_size, again)


# A read batch (one tf.data element, one job for a model stream, one table of rows) holds several
# model batches of small files: each costs its files a fixed share (the header call, the decode
# loop's set-up, the conds, the stream's hand-over and the table) that small files notice. It
# stays within about READ_BATCH_BYTES of file contents and of model inputs, so large photos are
# read a model batch at a time.
READ_BATCH_BYTES = 8 * 2**20
MAX_BATCHES_PER_READ = 8


def batches_per_read(files: list[ListedFile], spec: InputSpec, batch_size: int) -> int:
    """How many model batches one read batch holds, from the median file size of the listing
    and the size of a model input."""
    sizes = sorted(item.size or 0 for item in files[::max(1, len(files) // 1000)]) or [0]
    input_bytes = 0 if spec.encoded else 4 * spec.channels * spec.image_size[0] * spec.image_size[1]  # float32
    per_file = max(sizes[len(sizes) // 2], input_bytes, 1)
    return max(1, min(MAX_BATCHES_PER_READ, READ_BATCH_BYTES // (per_file * batch_size)))


def _read_and_decoded(files: list[ListedFile], spec: InputSpec, read_size: int, options: DecodeOptions,
                      plan: parallel.ThreadPlan) -> tf.data.Dataset:
    """(read batch number, file indices, model inputs, facts) a read batch at a time. Files that
    fail a check or are left to Pillow leave the batch before decoding (gaps in the indices); a
    read batch that fails is missing from the numbers. Local files are read by tf.io.read_file;
    files in object storage, which TensorFlow cannot open, by Python threads (`_fetched`), and
    they enter tf.data as bytes."""
    if files and storage.is_url(files[0].fs_path):
        source, read = _fetched(files).batch(read_size), tf.identity
    else:
        paths = np.array([item.fs_path for item in files], dtype=object)
        source = tf.data.Dataset.from_tensor_slices((np.arange(len(files), dtype=np.int64), paths)).batch(read_size)

        def read(path):
            return tf.map_fn(tf.io.read_file, path, fn_output_signature=tf.string)

    def read_and_decoded(number, batch):
        index, where = batch
        positions, images, facts = decoded_batch(read(where), spec, options)
        return number, tf.gather(index, positions), images, facts

    return (source.enumerate().map(as_written(read_and_decoded), num_parallel_calls=plan.decode, deterministic=True)
            .ignore_errors())


def decoded_batch(data: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tuple[tf.Tensor, tf.Tensor, dict]:
    """(positions of the files the graph decodes, their model inputs, their facts, with their
    `thumbnail`s unless the model takes encoded bytes) of a batch of file contents: files that
    fail a check or are left to Pillow leave it before decoding."""
    planned, content_hash = plan_batch(data, spec, options)
    kept = planned[:, Plan._fields.index("branch")] != NOT_IN_GRAPH
    planned, content_hash = tf.boolean_mask(planned, kept), tf.boolean_mask(content_hash, kept)
    images, thumbnails = decode_batch(tf.boolean_mask(data, kept), planned, spec, options)
    facts = file_facts(planned, content_hash)
    if thumbnails is not None:
        facts["thumbnail"] = thumbnails
    return tf.where(kept)[:, 0], images, facts


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


def _again(files: list[ListedFile], first: int, read_size: int, decode: BytesDecoder) -> Iterator[DecodedBatch]:
    """The read batch from file `first` on, which failed in tf.data, read and decoded again in
    smaller batches (`BytesDecoder.__call__`), unless none of it decodes; the files that fail
    again leave gaps, which `diagnose.diagnose` explains."""
    positions, images, facts = decode.readable(decode.read(files[first:first + read_size]), failed=True)
    if len(positions):
        yield DecodedBatch(first + positions, images, facts)


def _fetched(files: list[ListedFile]) -> tf.data.Dataset:
    """(index, bytes) of every file in object storage, read ahead by a pool of threads. A file
    that could not be read comes as no bytes, which fails the header checks: a gap that
    `diagnose` explains, reading it again."""
    urls = [item.fs_path.decode() for item in files]

    def generate():
        for position, data in storage.read_ahead(urls):
            yield position, data if data is not None else b""

    return tf.data.Dataset.from_generator(
        generate, output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)))


class BytesDecoder:
    """`decoded_batch` for files that arrive as bytes a batch at a time (Ray hands them over, and
    a read batch that failed in tf.data comes back here), traced once: a tf.data pipeline per
    batch would trace the decode again for every batch, which costs more than decoding it."""

    def __init__(self, spec: InputSpec, options: DecodeOptions, threads: int | None = None):
        self.batch_function = tf.function(as_written(lambda data: decoded_batch(data, spec, options)),
                                          autograph=False, input_signature=[tf.TensorSpec([None], tf.string)])
        self.pool = ThreadPoolExecutor(threads or parallel.usable_cores())  # for reads, and parts

    def read(self, files: list[ListedFile]) -> list[bytes | None]:
        """The files' contents, read side by side on the pool; None for one that cannot be read."""
        return list(self.pool.map(storage.read_or_none, [item.fs_path for item in files]))

    def readable(self, data: list[bytes | None], failed: bool = False) -> DecodedBatch:
        """`batch` of the files of `data` that could be read (None: not), positions among all of
        `data`; with `failed`, for files that already failed as one batch, straight in parts."""
        readable = np.array([i for i, one in enumerate(data) if one is not None], np.int64)
        positions, images, facts = (self if failed else self.batch)([data[i] for i in readable])
        return DecodedBatch(readable[positions], images, facts)

    def batch(self, files: list[bytes]) -> DecodedBatch:
        """The files decoded in one call; as a call (in parts) when a file fails it."""
        decoded = self._tried(files)
        return decoded if decoded.images is not None else self(files)

    def __call__(self, files: list[bytes]) -> DecodedBatch:
        """As `batch`, for files of which one or more fail to decode: in parts of about the
        square root of their number, side by side on the pool, and a part that fails file by
        file, so that a failed file drops out alone (a gap in the positions, as in `batches`;
        `diagnose_data` says why). Each call costs about as much as decoding several small
        files, so for 32 files with one bad, 6 parts and then 6 files take 12 calls where one
        at a time takes 32."""
        size = max(1, math.isqrt(len(files)))
        parts = [list(range(start, min(start + size, len(files)))) for start in range(0, len(files), size)]

        def tried(groups: list[list[int]]) -> list[tuple[list[int], DecodedBatch]]:
            return list(zip(groups, self.pool.map(lambda group: self._tried([files[i] for i in group]), groups)))

        done = tried(parts)
        done += tried([[i] for part, (_, images, _) in done if images is None and len(part) > 1 for i in part])
        decoded = [(np.array(part, np.int64)[positions], images, facts)
                   for part, (positions, images, facts) in sorted(done, key=lambda one: one[0])
                   if images is not None and len(positions)]
        if not decoded:
            return NONE_DECODED
        positions, images, facts = zip(*decoded)
        return DecodedBatch(np.concatenate(positions), tf.concat(images, 0),
                            {name: np.concatenate([one[name] for one in facts]) for name in facts[0]})

    def _tried(self, files: list[bytes]) -> DecodedBatch:
        """`batch` of these files, or NONE_DECODED when one of them fails."""
        try:
            positions, images, facts = self.batch_function(tf.constant(files, tf.string))
        except tf.errors.OpError:
            return NONE_DECODED
        return DecodedBatch(positions.numpy(), images, {name: value.numpy() for name, value in facts.items()})
