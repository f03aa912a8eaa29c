"""The tf.data pipeline: read, check, decode, turn upright, resize and batch files, keeping each
image's file index.

A file that cannot be read or decoded, or that fails a limit, is dropped by `ignore_errors` and
shows up as a gap in the indices; `diagnose` then finds out why, so one bad file never stops the
stream and never shifts another file's prediction onto it.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from . import headers, parallel, storage
from .listing import ListedFile
from .tf_import import tf


@dataclass(frozen=True)
class InputSpec:
    """What the pipeline must produce for one image."""

    encoded: bool  # the signature takes the file's bytes (tf.string) and decodes them itself
    image_size: tuple[int, int] | None
    channels: int | None
    dtype: tf.DType
    preprocess: str


CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def preprocess(pixels: tf.Tensor, mode: str) -> tf.Tensor:
    """Float pixels 0..255 (RGB) to what the model was trained on, by the usual conventions."""
    if mode == "raw":
        return pixels
    if mode == "unit":
        return pixels / 255.0
    if mode == "symmetric":
        return pixels / 127.5 - 1.0
    if mode == "caffe":
        return pixels[..., ::-1] - tf.constant(CAFFE_BGR_MEAN)
    if mode == "torch":
        return (pixels / 255.0 - tf.constant(TORCH_MEAN)) / tf.constant(TORCH_STD)
    raise ValueError(f"unknown preprocess mode {mode!r}")


@dataclass(frozen=True)
class DecodeOptions:
    """What a file may cost and how it is turned upright: the run options of the same names."""

    max_pixels: int
    max_file_mb: int
    exif_transpose: bool
    scaled_decode: bool

    @classmethod
    def from_config(cls, config) -> "DecodeOptions":
        return cls(config.max_pixels, config.max_file_mb, config.exif_transpose, config.scaled_decode)

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 2**20


def decode(data: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tf.Tensor:
    """Encoded bytes to one model input, shaped and typed as the signature wants.

    The header checks run before the decoder (control dependencies), so a decompression bomb
    costs a header read and never its pixels; a failed check drops the file like a decode error
    and `diagnose` names the reason. Models that take encoded bytes get the pixel limit too, as
    they would decode the bomb themselves. EXIF orientation is applied before resizing.
    Resizing is bilinear with antialiasing, so large photos are not aliased when shrunk.
    """
    header = headers.read_header(data)
    acceptable = header.pixels <= options.max_pixels
    if not spec.encoded:
        acceptable &= header.format != headers.UNKNOWN
    # Strings only: with other data, tf.debugging.Assert wraps itself in a cond, a call per file.
    with tf.control_dependencies([tf.debugging.Assert(acceptable, ["header check failed"])]):
        data = tf.identity(data)
    if spec.encoded:
        return data
    scale = _jpeg_scale(header, max(spec.image_size)) if options.scaled_decode else tf.constant(0, tf.int32)
    image = _channels(_decode_pixels(data, header, scale, options.exif_transpose), spec.channels)
    height, width = spec.image_size
    pixels = tf.cond(tf.reduce_all(tf.shape(image)[:2] == (height, width)),  # exact, and saves the resize
                     lambda: tf.cast(image, tf.float32),
                     lambda: tf.image.resize(image, (height, width), antialias=True))
    pixels.set_shape((height, width, spec.channels))
    if spec.dtype == tf.uint8 and spec.preprocess == "raw":
        return tf.cast(tf.round(tf.clip_by_value(pixels, 0.0, 255.0)), tf.uint8)
    return tf.cast(preprocess(pixels, spec.preprocess), spec.dtype)


JPEG_RATIOS = (1, 2, 4, 8)


def _jpeg_scale(header: headers.Header, target_side: int) -> tf.Tensor:
    """Index into JPEG_RATIOS of the largest DCT scale-down that still leaves the image's short
    side at least the model's long side, so the final antialiased resize only ever shrinks (and
    EXIF turns cannot matter). A 12 MP photo for a 224x224 model decodes at 500x375: a 64th of
    the pixels, a fraction of the time."""
    short_side = tf.minimum(header.width, header.height)
    return tf.add_n([tf.cast(short_side >= ratio * target_side, tf.int32) for ratio in JPEG_RATIOS[1:]])


def _decode_pixels(data: tf.Tensor, header: headers.Header, jpeg_scale: tf.Tensor,
                   exif_transpose: bool) -> tf.Tensor:
    """The file's pixels in its own layout: 1 to 4 channels, 8 bits (16-bit PNGs keep their
    high byte), the first frame of an animation (expand_animations=False); JPEGs decoded at
    1 / JPEG_RATIOS[jpeg_scale] of their size by the decoder itself and, with `exif_transpose`,
    turned upright by their EXIF orientation.

    One switch on the format, so that each file pays for its own format's work only: in tf.data
    every cond is a function call per file, tens of microseconds, a fair share of a small PNG.
    channels=0 because TensorFlow refuses other counts for some files: channels=1 for BMP, GIF
    and CMYK JPEG, channels=3 for WebP with alpha. Animated WebP and 8-bit BMP need the
    workarounds in `headers`.
    """
    def jpeg():
        image = tf.switch_case(jpeg_scale, [lambda ratio=ratio: tf.io.decode_jpeg(data, channels=0, ratio=ratio)
                                            for ratio in JPEG_RATIOS])
        return _upright(image, headers.exif_orientation(data)) if exif_transpose else image

    def animated_webp():
        return tf.io.decode_image(headers.with_webp_alpha_flag(data), channels=4, expand_animations=False)

    def other():
        return tf.io.decode_image(data, channels=0, expand_animations=False)

    def palette_bmp():
        return tf.gather(headers.bmp_palette(data), tf.cast(other()[..., 0], tf.int32))

    branch = tf.where(header.format == headers.JPEG, 0, tf.where(
        header.animated_webp, 1, tf.where(header.palette_bmp, 2, 3)))
    return tf.switch_case(branch, [jpeg, animated_webp, palette_bmp, other])


def _channels(image: tf.Tensor, wanted: int) -> tf.Tensor:
    """Gray, gray+alpha, RGB or RGBA as the model's 1 or 3 channels. Alpha is dropped, as
    Pillow's convert("RGB") does; colour becomes gray by the same ITU-R 601 luma for every format
    (gray pixels stay exactly as they are)."""
    rgb = tf.cond(tf.shape(image)[-1] >= 3, lambda: image[..., :3],
                  lambda: tf.image.grayscale_to_rgb(image[..., :1]))
    result = tf.image.rgb_to_grayscale(rgb) if wanted == 1 else rgb
    result.set_shape((None, None, wanted))
    return result


# EXIF orientation 1..8: how the stored pixels were turned, undone in this order, as Pillow's
# ImageOps.exif_transpose does: transpose (swap rows and columns), then mirror, then flip.
_TRANSPOSED = (False, False, False, False, True, True, True, True)
_MIRRORED = (False, True, True, False, False, True, True, False)
_FLIPPED = (False, False, True, True, False, False, True, True)


def _upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """The image as a viewer shows it, for EXIF orientation 1..8."""
    def turned():
        index = orientation - 1
        result = image
        for steps, turn in ((_TRANSPOSED, tf.image.transpose), (_MIRRORED, tf.image.flip_left_right),
                            (_FLIPPED, tf.image.flip_up_down)):
            result = tf.cond(tf.gather(steps, index), lambda turn=turn, result=result: turn(result),
                             lambda result=result: result)
        return result

    return tf.cond(orientation == 1, lambda: image, turned)  # one cheap test for most files


def batches(files: list[ListedFile], spec: InputSpec, batch_size: int, options: DecodeOptions,
            plan: parallel.ThreadPlan | None = None) -> Iterator[tuple[np.ndarray, tf.Tensor]]:
    """Yields (file indices, batch of model inputs) in file order; failed files leave gaps.

    `plan` (by default the CPU plan for this machine) sets the decode threads, and how many
    batches wait ready: one per model stream, and one more.

    Files over --max-file-mb are left out before anything is read (tf.io.read_file reads the
    whole file into memory), so they are gaps too. Files in object storage, which TensorFlow
    cannot open, are read by Python threads and enter tf.data as bytes; local files keep
    tf.io.read_file inside tf.data. The same `decode` runs on both.
    """

    def load(index, path):
        return index, decode(tf.io.read_file(path), spec, options)

    plan = plan or parallel.plan_for("cpu", parallel.usable_cores())
    kept = [i for i, item in enumerate(files) if item.size <= options.max_file_bytes]
    if kept and storage.is_url(files[kept[0]].fs_path):
        dataset = (_fetched(files, kept)
                   .map(lambda index, data: (index, decode(data, spec, options)),
                        num_parallel_calls=plan.decode, deterministic=True))
    else:
        indices = np.array(kept, dtype=np.int64)
        paths = np.array([files[i].fs_path for i in kept], dtype=object)
        dataset = (tf.data.Dataset.from_tensor_slices((indices, paths))
                   .map(load, num_parallel_calls=plan.decode, deterministic=True))
    threading = tf.data.Options()
    threading.autotune.enabled = False  # see `parallel`
    threading.threading.private_threadpool_size = plan.decode
    threading.threading.max_intra_op_parallelism = 1
    dataset = (dataset.ignore_errors().batch(batch_size).prefetch(plan.streams + 1)
               .with_options(threading))
    for index_batch, images in dataset:
        yield index_batch.numpy(), images


def _fetched(files: list[ListedFile], kept: list[int]) -> tf.data.Dataset:
    """(index, bytes) of files in object storage, read ahead by a pool of threads; a file that
    could not be read is left out, a gap that `diagnose` explains."""
    urls = [files[i].fs_path.decode() for i in kept]

    def generate():
        for position, data in storage.read_ahead(urls):
            if data is not None:
                yield kept[position], data

    return tf.data.Dataset.from_generator(
        generate, output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)))


class BytesDecoder:
    """`decode` for files that arrive as bytes a batch at a time (Ray hands them over), traced
    once: a tf.data pipeline per batch would trace `decode` again for every batch, which costs
    more than decoding it. Files decode on a pool of threads, as TensorFlow releases the GIL."""

    def __init__(self, spec: InputSpec, options: DecodeOptions, threads: int | None = None):
        self.function = tf.function(lambda data: decode(data, spec, options),
                                    input_signature=[tf.TensorSpec([], tf.string)])
        self.pool = ThreadPoolExecutor(threads or parallel.usable_cores())

    def __call__(self, files: list[bytes]) -> tuple[np.ndarray, tf.Tensor | None]:
        """(positions that decoded, their model inputs as one batch); failed files leave gaps,
        as in `batches`, and `diagnose_data` says why."""
        images = list(self.pool.map(self._one, files))
        positions = np.array([i for i, image in enumerate(images) if image is not None], np.int64)
        if not len(positions):
            return positions, None
        return positions, tf.stack([image for image in images if image is not None])

    def _one(self, data: bytes) -> tf.Tensor | None:
        try:
            return self.function(data)
        except tf.errors.OpError:
            return None


_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$")


def short_error(error: Exception) -> str:
    """A TensorFlow error message without the op and device decorations.

    Errors raised inside a tf.function start with "Graph execution error" and a Python stack;
    the op's own message is the last line before its "[[{{node ...}}]]" tag.
    """
    message = (getattr(error, "message", None) or str(error)).strip()
    if message.startswith("Graph execution error"):
        message = re.split(r"\n\s*\[\[", message)[0].strip().splitlines()[-1]
    return _TF_NOISE.sub("", message).strip().splitlines()[0] if message else type(error).__name__


def diagnose(item: ListedFile, spec: InputSpec, options: DecodeOptions) -> str:
    """The reason a file fell out of the pipeline: the checks of `batches` and `decode` in their
    order (too-large before anything else), then truncation, then the decoder's own message."""
    if item.size > options.max_file_bytes:
        return f"too-large: {math.ceil(item.size / 2**20)} MB file"
    try:
        data = read(item)
    except tf.errors.OpError as error:
        return f"read: {short_error(error)}"
    except OSError as error:  # from an object store
        return f"read: {error.strerror or f'{type(error).__name__} ({error})'}"
    return diagnose_data(data, spec, options)


def read(item: ListedFile) -> tf.Tensor:
    """A file's bytes, from disk or from object storage."""
    if storage.is_url(item.fs_path):
        return tf.constant(storage.read_bytes(item.fs_path.decode()))
    return tf.io.read_file(item.fs_path)


def diagnose_data(data: tf.Tensor | bytes, spec: InputSpec, options: DecodeOptions) -> str:
    """Why a file's bytes did not decode: the checks of `decode` in their order, then
    truncation, then the decoder's own message."""
    data = tf.convert_to_tensor(data, tf.string)
    if int(tf.strings.length(data)) == 0:
        return "decode: empty file"
    kind = int(headers.image_format(data))
    if kind == headers.UNKNOWN and not spec.encoded:
        return "decode: not a JPEG, PNG, GIF, BMP or WebP file"
    try:
        header = headers.read_header(data)
    except tf.errors.OpError:
        header = None  # a JPEG whose headers libjpeg cannot read; decode says why below
    if header is not None and int(header.pixels) > options.max_pixels:
        kind, width, height, frames, pixels = (int(value) for value in header[:5])
        if kind == headers.GIF and pixels > width * height:  # its frames, not its screen
            return f"too-large: {pixels} pixels in {frames} frame{'s' if frames != 1 else ''}"
        return f"too-large: {width}x{height}"
    if headers.ends_early(data.numpy(), kind):
        return "decode: truncated"
    try:
        decode(data, spec, options)
    except (tf.errors.OpError, ValueError) as error:
        return f"decode: {short_error(error)}"
    return "decode: failed in the pipeline but not when retried alone"
