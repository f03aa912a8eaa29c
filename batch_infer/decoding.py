"""From a file's bytes to one model input, and the reason when that fails.

Two tables drive both the tf.data graph and the per-file diagnosis, so the two cannot drift:
CHECKS, the limits a file must pass before any pixel is decoded, each with the reason it gives,
and DECODERS, which turns which files into pixels. Both are decided from the file's header, in
Python, before the graph decodes it (`plan`): the graph then runs one switch per file, whose
first branch fails a file that failed a check or is left to Pillow, and the others decode;
`diagnose_data` runs the same checks in order, then the same decode, and reports the first thing
that fails. A further format is one more DECODERS entry.

Files the graph does not decode (the formats TensorFlow has no decoder for, files its decoders
refuse, and PNGs and WebPs that may say how to turn them upright) drop out of it; `rescue`
then decodes them with Pillow (see `fallback`), after the same CHECKS, and their pixels go
through the same `model_input`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from . import fallback, headers, storage
from .listing import ListedFile
from .model import InputSpec
from .preprocessing import preprocess
from .tf_import import short_error, tf


@dataclass(frozen=True)
class Resize:
    """How upright pixels become the model's size: the run options of the same names.

    Every mode first takes a centred box of the image, then resizes that box to the model size
    with `interpolation` (antialiased when shrinking, if `antialias`):
    - stretch: the whole image, both sides to the model size (aspect ratio not kept);
    - crop: the largest centred box of the model's aspect ratio, exactly as Keras'
      `smart_resize` (`crop_to_aspect_ratio=True`) computes it;
    - pad: the whole image scaled to fit, zeros around it, as `tf.image.resize_with_pad`
      (Keras' `pad_to_aspect_ratio=True`).
    `crop_fraction` F < 1 then keeps the centre F of that box (each side floor(F * side)), which
    is timm's crop_pct: "resize to size/F, then take the centre" with the crop done first, so only
    the pixels kept are resized.
    """

    mode: str = "stretch"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    antialias: bool = True

    @classmethod
    def from_config(cls, config) -> "Resize":
        return cls(config.resize, config.crop_fraction, config.interpolation, config.antialias)

    @property
    def is_default(self) -> bool:
        return self == Resize()

    def flags(self) -> str:
        """The run flags that give this resize, defaults left out: "--resize crop --no-antialias"."""
        words = [] if self.mode == "stretch" else [f"--resize {self.mode}"]
        if self.crop_fraction != 1.0:
            words.append(f"--crop-fraction {self.crop_fraction:g}")
        if self.interpolation != "bilinear":
            words.append(f"--interpolation {self.interpolation}")
        if not self.antialias:
            words.append("--no-antialias")
        return " ".join(words)

    def describe(self) -> str:
        """In words: "crop, centre 0.875, bicubic, antialiased"."""
        words = [self.mode] + ([f"centre {self.crop_fraction:g}"] if self.crop_fraction != 1.0 else [])
        return ", ".join(words + [self.interpolation, "antialiased" if self.antialias else "no antialias"])

    def metadata(self) -> dict[str, str]:
        return {"resize": self.mode, "crop_fraction": repr(float(self.crop_fraction)),
                "interpolation": self.interpolation, "antialias": str(self.antialias).lower()}


@dataclass(frozen=True)
class DecodeOptions:
    """What a file may cost, how it is turned upright and resized: the run options of the same
    names. `decoder` "keras" (set by --preset keras) decodes every file with
    `tf.io.decode_image(channels=C, expand_animations=False)`, as Keras' dataset utility does,
    instead of the DECODERS table."""

    max_pixels: int
    max_file_mb: int
    exif_transpose: bool
    scaled_decode: bool
    resize: Resize = Resize()
    decoder: str = "batch-infer"
    preset: str | None = None

    @classmethod
    def from_config(cls, config) -> "DecodeOptions":
        return cls(config.max_pixels, config.max_file_mb, config.exif_transpose, config.scaled_decode,
                   Resize.from_config(config), "keras" if config.preset == "keras" else "batch-infer",
                   config.preset)

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 2**20

    def metadata(self) -> dict[str, str]:
        return {"exif_transpose": str(self.exif_transpose).lower(), "max_pixels": str(self.max_pixels),
                "max_file_mb": str(self.max_file_mb), "scaled_decode": str(self.scaled_decode).lower(),
                **self.resize.metadata(), "decoder": self.decoder, "preset": self.preset or "none"}


JPEG_RATIOS = (1, 2, 4, 8)


def jpeg_ratio(header: headers.Header, target_side: float, options: DecodeOptions) -> int:
    """The largest of JPEG_RATIOS that libjpeg may decode a JPEG down by (--scaled-decode) and
    still leave its short side at least `target_side` (`scale_target`), so the final resize only
    ever shrinks (and EXIF turns cannot matter). A 12 MP photo for a 224x224 model decodes at
    500x375: a 64th of the pixels, a fraction of the time."""
    short_side = min(header.width, header.height)
    return max(ratio for ratio in JPEG_RATIOS if ratio == 1 or options.scaled_decode
               and short_side >= ratio * target_side)


def scale_target(spec: InputSpec, resize: Resize) -> float:
    """The short side a scaled JPEG decode must keep: the model's long side over the crop
    fraction. Every mode's box then still holds at least the model's size in pixels: stretch
    and crop keep F times a side at least as long as the short side, each box side covering the
    model side it becomes; pad scales the whole image, whose sides are all at least the model's
    long side."""
    return max(spec.image_size) / resize.crop_fraction


# EXIF orientation 1..8: how the stored pixels were turned, undone in this order, as Pillow's
# ImageOps.exif_transpose does: transpose (swap rows and columns), then mirror, then flip.
_TRANSPOSED = (False, False, False, False, True, True, True, True)
_MIRRORED = (False, True, True, False, False, True, True, False)
_FLIPPED = (False, False, True, True, False, False, True, True)


def _upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """The image as a viewer shows it, for EXIF orientation 1..8: one transpose and one reverse
    whose axes the orientation picks, rather than a cond a step (each cond is one more function
    to trace at start-up and to call a file)."""
    index = orientation - 1
    image = tf.transpose(image, tf.where(tf.gather(_TRANSPOSED, index), [1, 0, 2], [0, 1, 2]))
    turns = tf.stack([tf.gather(_MIRRORED, index), tf.gather(_FLIPPED, index)])
    return tf.reverse(image, tf.boolean_mask([1, 0], turns))  # mirror: the width axis; flip: the height


@dataclass(frozen=True)
class Decoder:
    """Pixels for the files `takes` picks (from their header, in Python): [height, width, 1 to 4
    channels] uint8, as stored (JPEGs turned upright by EXIF when asked), by graph ops."""

    name: str
    takes: Callable[[headers.Header, DecodeOptions, int], bool]  # header, options, its `jpeg_ratio`
    decode: Callable[[tf.Tensor, "Plan"], tf.Tensor] | None  # data, its plan (as tensors); None: Pillow's


def _upright_jpeg(ratio: int) -> Decoder:
    """Decoded at 1 / ratio of its size by libjpeg itself (`jpeg_ratio`). One op: in tf.data a
    switch runs as a graph of every branch, so every op of every branch costs each file a
    little, whichever branch it takes."""
    return Decoder(f"JPEG at 1/{ratio}", lambda header, options, file_ratio: header.format == headers.JPEG
                   and header.orientation == 1 and file_ratio == ratio,
                   lambda data, planned: tf.io.decode_jpeg(data, channels=0, ratio=ratio))


def _turned_jpeg(data, planned):
    """A JPEG whose EXIF says to turn it (only read with --exif-transpose), at its `jpeg_ratio`."""
    image = tf.switch_case(tf.cast(planned.ratio_index, tf.int32),
                           [lambda ratio=ratio: tf.io.decode_jpeg(data, channels=0, ratio=ratio) for ratio in JPEG_RATIOS])
    return _upright(image, planned.orientation)


def _any_format(data, planned):
    """channels=0 because TensorFlow refuses other counts for some files: channels=1 for BMP,
    GIF and CMYK JPEG, channels=3 for WebP with alpha. The first frame of an animation
    (expand_animations=False); 16-bit PNGs keep their high byte."""
    return tf.io.decode_image(data, channels=0, expand_animations=False)


def _animated_webp(data, planned):
    return tf.io.decode_image(headers.with_webp_alpha_flag(data), channels=4, expand_animations=False)


LEFT_TO_PILLOW = "left to the Pillow fallback"


def _failing(message: str) -> tf.Tensor:
    with tf.control_dependencies([tf.debugging.Assert(tf.constant(False), [message])]):
        return tf.zeros((0, 0, 3), tf.uint8)


def _palette_bmp(data, planned):
    return tf.gather(headers.bmp_palette(data), tf.cast(_any_format(data, planned)[..., 0], tf.int32))


# The first entry that takes a file decodes it; the last takes every file, and refuses (with
# TensorFlow's message) what it cannot read. Animated WebP and 8-bit BMP need the workarounds
# in `headers`. Files the first entry takes (PNGs and WebPs that may say how to turn them
# upright among them) drop out of the graph before any decode, as files that fail a check do;
# they, and files the others refuse, are decoded by Pillow in `rescue`, off the hot path.
DECODERS = (
    Decoder("Pillow", lambda header, options, ratio: header.format in (headers.TIFF, headers.HEIF)
            or header.odd_bmp or (header.webp_metadata or header.png_metadata) and options.exif_transpose,
            None),
    *(_upright_jpeg(ratio) for ratio in JPEG_RATIOS),
    Decoder("turned JPEG", lambda header, options, ratio: header.format == headers.JPEG, _turned_jpeg),
    Decoder("animated WebP", lambda header, options, ratio: header.animated_webp, _animated_webp),
    Decoder("8-bit BMP", lambda header, options, ratio: header.palette_bmp, _palette_bmp),
    Decoder("GIF, PNG, BMP or WebP", lambda header, options, ratio: True, _any_format),
)
# What small files of one format decode by (JPEGs at full size: their short side is under twice
# the model's); `decode_batch` gives a batch of them their decoder without a switch a file. A
# switch costs a file about 15 us, which only small files notice.
SMALL_FILE_DECODERS = ("JPEG at 1/1", "GIF, PNG, BMP or WebP")
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP, TIFF, HEIC or AVIF"
# The `decoder` of an ok row: the graph's decoders, or the fallback.
TENSORFLOW, PILLOW = "tensorflow", "pillow"


@dataclass(frozen=True)
class Check:
    """A limit checked from the header before decoding; `reason` names the failure for a row."""

    passes: Callable[[headers.Header, InputSpec, DecodeOptions], bool]
    reason: Callable[[headers.Header, bytes], str]


def _format_reason(header, data: bytes) -> str:
    return "decode: empty file" if not data else f"decode: not a {FORMAT_NAMES} file"


def _pixels_reason(header, data: bytes) -> str:
    if header.format == headers.GIF and header.pixels > header.width * header.height:  # its frames, not its screen
        return f"too-large: {header.pixels} pixels in {header.frames} frame{'s' if header.frames != 1 else ''}"
    return f"too-large: {header.width}x{header.height}"


# In order. Models that take encoded bytes get the pixel limit too, as they would decode the
# bomb themselves, but no format check: they may read formats we do not.
CHECKS = (
    Check(lambda header, spec, options: spec.encoded or header.format != headers.UNKNOWN, _format_reason),
    Check(lambda header, spec, options: header.pixels <= options.max_pixels, _pixels_reason),
)


class Plan(NamedTuple):
    """What a file's header decides before its pixels are decoded: which branch of the graph's
    switch decodes it (NOT_IN_GRAPH when it fails one of CHECKS, or Pillow decodes it), how EXIF
    says to turn it and the JPEG scale to decode it at (for "turned JPEG"), its stored size (0
    when unknown) for the `width` and `height` columns, and the size its pixels decode to, upright
    (0 when unknown), which tells `decode_batch` whether a batch can be resized as one. Python
    ints for one file; in the graph a [7] int64 vector per file (`read_batch`), unstacked where
    it is used."""

    branch: int
    orientation: int
    ratio_index: int  # into JPEG_RATIOS
    width: int
    height: int
    upright_height: int
    upright_width: int


# The switch's branches: the first fails, then one per decoder the graph runs (DECODERS, or the
# one of --preset keras).
NOT_IN_GRAPH = 0
GRAPH_DECODERS = tuple(decoder for decoder in DECODERS if decoder.decode is not None)
_BRANCHES = {decoder.name: 1 + index for index, decoder in enumerate(GRAPH_DECODERS)}  # by name: no dataclass ==


def plan(data: bytes, spec: InputSpec, options: DecodeOptions) -> Plan:
    """The Plan of one file's bytes, from its header: the first of DECODERS that takes it."""
    header = headers.read_header(data, options.exif_transpose)
    passes = all(check.passes(header, spec, options) for check in CHECKS)
    if spec.encoded or options.decoder == "keras":
        branch, ratio = 1 if passes else NOT_IN_GRAPH, 1
    else:
        ratio = jpeg_ratio(header, scale_target(spec, options.resize), options)
        decoder = next(decoder for decoder in DECODERS if decoder.takes(header, options, ratio))
        branch = _BRANCHES[decoder.name] if passes and decoder.decode is not None else NOT_IN_GRAPH
    upright = _upright_size(header, ratio) if branch != NOT_IN_GRAPH else (0, 0)
    return Plan(branch, header.orientation, JPEG_RATIOS.index(ratio), header.width, header.height, *upright)


def _upright_size(header: headers.Header, ratio: int) -> tuple[int, int]:
    """(height, width) of the pixels the graph decodes from a file: libjpeg rounds a scaled size
    up; EXIF orientations 5 to 8 swap the sides."""
    height, width = header.height, header.width
    if header.format == headers.JPEG:
        height, width = -(-height // ratio), -(-width // ratio)
    return (width, height) if header.orientation >= 5 else (height, width)


def to_channels(image: tf.Tensor, wanted: int) -> tf.Tensor:
    """Gray, gray+alpha, RGB or RGBA as the model's 1 or 3 channels. Alpha is dropped, as
    Pillow's convert("RGB") does; colour becomes gray by the same ITU-R 601 luma for every format
    (gray pixels stay exactly as they are)."""
    # A slice and a tile, not a cond: RGB(A) keeps channels 0 to 2; gray (+ alpha) repeats channel 0.
    colour = tf.shape(image)[-1] >= 3
    kept = image[..., :tf.where(colour, 3, 1)]
    rgb = tf.tile(kept, tf.concat([tf.ones([image.shape.rank - 1], tf.int32), [tf.where(colour, 1, 3)]], 0))
    result = tf.image.rgb_to_grayscale(rgb) if wanted == 1 else rgb
    result.set_shape((None, None, wanted))
    return result


def _keras_pixels(data: tf.Tensor, orientation: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tf.Tensor:
    """As `keras.utils.image_dataset_from_directory` decodes: decode_image into the model's
    channels (the decoder's own colour conversion), first frame, never at reduced scale; turned
    by EXIF (JPEGs only) when --exif-transpose is given explicitly."""
    image = tf.io.decode_image(data, channels=spec.channels, expand_animations=False)
    if options.exif_transpose:
        image = _upright(image, orientation)
    image.set_shape((None, None, spec.channels))
    return image


def graph_decoders(spec: InputSpec, options: DecodeOptions) -> list[Callable[[tf.Tensor, Plan], tf.Tensor]]:
    """The branches of the graph's switch, by `Plan.branch`: the first fails (NOT_IN_GRAPH),
    then the decoders the graph runs: DECODERS', or the one of --preset keras."""
    def not_in_graph(data, planned):
        return _failing(f"a header check failed, or {LEFT_TO_PILLOW}")

    if options.decoder == "keras":
        return [not_in_graph, lambda data, planned: _keras_pixels(data, planned.orientation, spec, options)]
    return [not_in_graph] + [decoder.decode for decoder in GRAPH_DECODERS]


def pixels(data: tf.Tensor, planned: Plan, spec: InputSpec, options: DecodeOptions) -> tf.Tensor:
    """The file's pixels by the branch its `plan` chose: one switch, so that each file pays for
    its own format's work only, and a file refused by CHECKS fails before any pixel is decoded,
    so a decompression bomb costs a header read. A failed check drops the file like a decode
    error, and `diagnose` names the reason; a file left to Pillow drops out the same way."""
    return tf.switch_case(tf.cast(planned.branch, tf.int32),
                          [lambda decode=decode: decode(data, planned) for decode in graph_decoders(spec, options)])


def decode(data: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tf.Tensor:
    """Encoded bytes to one model input, shaped and typed as the signature wants."""
    return decode_with_facts(data, spec, options)[0]


def read_batch(data: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tuple[tf.Tensor, tf.Tensor]:
    """(the `plan` of each file as a [files, 7] int64 tensor, the 64-bit fingerprints) of a batch
    of files ([files] strings), in one call for the batch: the headers are read in Python (see
    `headers`), and tf.data pays for that call once per batch rather than once per file. One
    tensor, not one per field: unbatching costs each file a little for every tensor it splits."""
    def plans(data: np.ndarray) -> np.ndarray:
        return np.array([plan(raw, spec, options) for raw in data], np.int64).reshape(-1, len(Plan._fields))

    planned = tf.numpy_function(plans, [data], tf.int64, stateful=False)  # a fifth cheaper a call than py_function
    return tf.ensure_shape(planned, [data.shape[0], len(Plan._fields)]), tf.fingerprint(data)


def decode_read(data: tf.Tensor, planned: tf.Tensor, content_hash: tf.Tensor, spec: InputSpec,
                options: DecodeOptions) -> tuple[tf.Tensor, dict]:
    """One file of a `read_batch` (`planned` its row of plans): its model input, and what it
    says of itself, where its bytes already are: the stored size from the header (0 when
    unknown; int64, which the columns narrow) and a 64-bit fingerprint of the bytes (FarmHash, as
    tf.fingerprint computes it), for the `width`, `height` and `content_hash` columns."""
    facts = file_facts(planned, content_hash)
    planned = Plan(*tf.unstack(planned))
    if spec.encoded:
        return checked(data, planned), facts
    return model_input(pixels(data, planned, spec, options), spec, options.resize), facts


def file_facts(planned: tf.Tensor, content_hash: tf.Tensor) -> dict[str, tf.Tensor]:
    """The `width`, `height` and `content_hash` columns of one file's plan ([7]) or a batch's
    ([files, 7]), and its fingerprints."""
    return {"width": planned[..., Plan._fields.index("width")],
            "height": planned[..., Plan._fields.index("height")], "content_hash": content_hash}


# The most pixels a batch resized as one may hold: its pixels wait, as float32, until the last file
# is decoded (48 MiB for RGB), where one at a time holds one image. Small files are what it is for:
# a resize call costs a file tens of microseconds, which only a small file's decode notices.
ONE_RESIZE_PIXELS = 2**22


def decode_batch(data: tf.Tensor, planned: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tf.Tensor:
    """The model inputs of a batch of files ([files] strings, their plans [files, 7]), none of
    them NOT_IN_GRAPH, as one batch. Each file is decoded on its own, in tf.map_fn, which costs a
    file far less than a tf.data element does. Two things are decided once for the batch: when
    every file takes the same one of SMALL_FILE_DECODERS, each is decoded by it alone, without a
    switch a file; and when the plans say every file's pixels come out the same size, they are
    resized as one batch, which gives the values of one at a time for a fraction of the cost. A
    file that fails to decode fails the batch (see `pipeline`)."""
    if spec.encoded:
        return data
    heights = planned[:, Plan._fields.index("upright_height")]
    widths = planned[:, Plan._fields.index("upright_width")]
    one_size = ((tf.reduce_min(heights) == tf.reduce_max(heights)) & (tf.reduce_min(widths) == tf.reduce_max(widths))
                & (tf.reduce_min(heights) > 0)  # an empty batch has min > max
                & (tf.reduce_sum(heights * widths) <= ONE_RESIZE_PIXELS))

    def decoded(decode=None):
        """The batch with every file decoded by `decode`, or by its own branch when None."""
        def upright(one):
            file_plan = Plan(*tf.unstack(one[1]))
            image = to_channels(decode(one[0], file_plan) if decode else pixels(one[0], file_plan, spec, options),
                                spec.channels)
            return tf.cond(one_size, lambda: tf.cast(image, tf.float32),
                           lambda: resized(image, spec.image_size, options.resize))

        images = tf.map_fn(upright, (data, planned),
                           fn_output_signature=tf.TensorSpec([None, None, spec.channels], tf.float32))
        return scaled(tf.cond(one_size, lambda: resized(images, spec.image_size, options.resize),
                              lambda: tf.ensure_shape(images, [None, *spec.image_size, spec.channels])), spec)

    # A batch whose files all take one branch that small files take skips the switch a file.
    decoders = graph_decoders(spec, options)
    alone = [branch for branch in range(1, len(decoders))
             if options.decoder == "keras" or GRAPH_DECODERS[branch - 1].name in SMALL_FILE_DECODERS]
    branches = planned[:, Plan._fields.index("branch")]
    shared = tf.where(tf.reduce_min(branches) == tf.reduce_max(branches), tf.reduce_min(branches), NOT_IN_GRAPH)
    choice = tf.reduce_sum(tf.cast(tf.equal(shared, alone), tf.int32) * tf.range(1, len(alone) + 1))  # 0: none
    return tf.cond(  # tf.map_fn cannot stack no files of an unknown size
        tf.size(data) > 0,
        lambda: tf.switch_case(choice, [decoded] + [lambda branch=branch: decoded(decoders[branch]) for branch in alone]),
        lambda: tf.zeros([0, *spec.image_size, spec.channels], spec.dtype))


def decode_with_facts(data: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tuple[tf.Tensor, dict]:
    """`decode_read` of one file, as a batch of one."""
    planned, content_hash = read_batch(data[None], spec, options)
    return decode_read(data, planned[0], content_hash[0], spec, options)


def checked(data: tf.Tensor, planned: Plan) -> tf.Tensor:
    """The bytes, for a model that decodes them itself, only once the CHECKS pass."""
    # Strings only: with other data, tf.debugging.Assert wraps itself in a cond, a call per file.
    with tf.control_dependencies([tf.debugging.Assert(planned.branch != NOT_IN_GRAPH, ["header check failed"])]):
        return tf.identity(data)


def model_input(image: tf.Tensor, spec: InputSpec, resize: Resize = Resize()) -> tf.Tensor:
    """Upright pixels as stored ([height, width, 1 to 4] uint8) to one model input: the model's
    channels, its size (`resized`), its dtype and pixel scaling (`scaled`). Every decoder's
    pixels come through here."""
    return scaled(resized(to_channels(image, spec.channels), spec.image_size, resize), spec)


def _box(height, width, target: tuple[int, int], resize: Resize):
    """(top, left, box height, box width) of the centred box that becomes the model input, in
    int32, computed in float32 as Keras computes its crop (so --preset keras matches it)."""
    target_height, target_width = target
    if resize.mode == "crop":
        box_height = tf.cast(tf.cast(width * target_height, tf.float32) / target_width, tf.int32)
        box_height = tf.maximum(tf.minimum(height, box_height), 1)
        box_width = tf.cast(tf.cast(height * target_width, tf.float32) / target_height, tf.int32)
        box_width = tf.maximum(tf.minimum(width, box_width), 1)
    else:
        box_height, box_width = height, width
    if resize.crop_fraction != 1.0:
        fraction = tf.constant(resize.crop_fraction, tf.float32)
        box_height = tf.maximum(tf.cast(tf.floor(fraction * tf.cast(box_height, tf.float32)), tf.int32), 1)
        box_width = tf.maximum(tf.cast(tf.floor(fraction * tf.cast(box_width, tf.float32)), tf.int32), 1)
    top = tf.cast(tf.cast(height - box_height, tf.float32) / 2, tf.int32)
    left = tf.cast(tf.cast(width - box_width, tf.float32) / 2, tf.int32)
    return top, left, box_height, box_width


def resized(image: tf.Tensor, size: tuple[int, int], resize: Resize = Resize()) -> tf.Tensor:
    """[height, width, channels] pixels, or a batch of images of one size, to float32 at `size`
    by `resize` (see `Resize`); values are not clipped, so bicubic and lanczos3 may overshoot
    0..255 as they do in Keras. An image (or box) that already has the size skips the resize and
    keeps its pixels, which is exactly what any of the filters would give."""
    height, width = size
    shape = tf.shape(image)
    if resize.mode == "pad":
        result = tf.cond(
            tf.reduce_all(shape[-3:-1] == (height, width)), lambda: tf.cast(image, tf.float32),
            lambda: tf.cast(tf.image.resize_with_pad(image, height, width, method=resize.interpolation,
                                                     antialias=resize.antialias), tf.float32))
    else:
        if resize.mode == "crop" or resize.crop_fraction != 1.0:
            top, left, box_height, box_width = _box(shape[-3], shape[-2], size, resize)
            image = image[..., top:top + box_height, left:left + box_width, :]
        result = tf.cond(
            tf.reduce_all(tf.shape(image)[-3:-1] == (height, width)), lambda: tf.cast(image, tf.float32),
            lambda: tf.cast(tf.image.resize(image, (height, width), method=resize.interpolation,
                                            antialias=resize.antialias), tf.float32))
    result.set_shape(image.shape[:-3].concatenate((height, width, image.shape[-1])))
    return result


def scaled(pixels: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    """Resized float pixels 0..255 in the signature's dtype and pixel scaling: uint8 models get
    them rounded and clipped, float models scaled by --preprocess."""
    if spec.dtype == tf.uint8 and spec.preprocess == "raw":
        return tf.cast(tf.round(tf.clip_by_value(pixels, 0.0, 255.0)), tf.uint8)
    return tf.cast(preprocess(pixels, spec.preprocess), spec.dtype)


def unread_reason(item: ListedFile, options: DecodeOptions) -> str | None:
    """Why a listed file gets an error row without being read: the listing refused it, or it is
    over --max-file-mb (tf.io.read_file would read all of it into memory)."""
    if item.problem is not None:
        return item.problem
    if item.size is not None and item.size > options.max_file_bytes:  # unknown for URLs in a manifest
        return f"too-large: {math.ceil(item.size / 2**20)} MB file"
    return None


def diagnose(item: ListedFile, spec: InputSpec, options: DecodeOptions) -> str:
    """The reason a file fell out of the pipeline, reading it again."""
    data, reason = _read_again(item, options)
    return reason if reason is not None else diagnose_data(data, spec, options)


def _read_again(item: ListedFile, options: DecodeOptions) -> tuple[tf.Tensor | None, str | None]:
    """(the file's bytes, None), or (None, why they could not be read)."""
    reason = unread_reason(item, options)
    if reason is not None:
        return None, reason
    try:
        return read(item), None
    except tf.errors.OpError as error:
        return None, f"read: {short_error(error)}"
    except OSError as error:  # from an object store
        return None, f"read: {error.strerror or f'{type(error).__name__} ({error})'}"


def read(item: ListedFile) -> tf.Tensor:
    """A file's bytes, from disk or from object storage."""
    if storage.is_url(item.fs_path):
        return tf.constant(storage.read_bytes(item.fs_path.decode()))
    return tf.io.read_file(item.fs_path)


def read_or_none(item: ListedFile) -> bytes | None:
    """A file's bytes, read in Python (a TensorFlow op called from Python costs a small file more
    than reading it), from disk or object storage; None when it cannot be read, which
    `diagnose` then explains."""
    try:
        if storage.is_url(item.fs_path):
            return storage.read_bytes(item.fs_path.decode())
        with open(item.fs_path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def rescue(item: ListedFile, data: bytes | None, spec: InputSpec,
           options: DecodeOptions) -> tuple[np.ndarray | None, str | None]:
    """For a file that dropped out of the graph: (its upright pixels from Pillow, None), or
    (None, the reason for its error row). `data` is the file's bytes when the engine has them;
    else the file is read again.

    The CHECKS come first, as in the graph, so a bomb the header gives away is never handed to
    Pillow; Pillow then checks --max-pixels from its own header read (for TIFF and HEIF, whose
    size only it reads) before decoding. A file Pillow refuses too gets the graph's diagnosis,
    unless only Pillow reads its format (then Pillow's reason says more).
    """
    if data is None:
        tensor, reason = _read_again(item, options)
        if reason is not None:
            return None, reason
    else:
        tensor = tf.convert_to_tensor(data, tf.string)
    raw = tensor.numpy()
    header = headers.read_header(raw, orientation=False)
    failed = _failed_check(header, raw, spec, options)
    if failed is not None or spec.encoded:  # an encoded-bytes model decodes files itself
        return None, failed or diagnose_data(tensor, spec, options)
    try:
        return fallback.pixels(raw, options.max_pixels, options.exif_transpose), None
    except fallback.Refused as refused:
        pillow_reason = refused.reason
    if header.format in (headers.TIFF, headers.HEIF) or pillow_reason.startswith("too-large"):
        return None, pillow_reason
    reason = diagnose_data(tensor, spec, options)
    return None, pillow_reason if LEFT_TO_PILLOW in reason else reason


def _failed_check(header: headers.Header, raw: bytes, spec: InputSpec, options: DecodeOptions) -> str | None:
    """The reason of the first of CHECKS the header fails, if any."""
    return next((check.reason(header, raw) for check in CHECKS if not check.passes(header, spec, options)), None)


def diagnose_data(data: tf.Tensor | bytes, spec: InputSpec, options: DecodeOptions) -> str:
    """Why a file's bytes did not decode: the CHECKS in order, then truncation (a clearer word
    than most decoders' messages), then the decoder's own message."""
    data = tf.convert_to_tensor(data, tf.string)
    raw = data.numpy()
    failed = _failed_check(headers.read_header(raw, orientation=False), raw, spec, options)
    if failed is not None:
        return failed
    if headers.ends_early(raw, headers.image_format(raw)):
        return "decode: truncated"
    try:
        decode(data, spec, options)
    except (tf.errors.OpError, ValueError) as error:
        return f"decode: {short_error(error)}"
    return "decode: failed in the pipeline but not when read again (did the file change meanwhile?)"


class ModelInputs:
    """`model_input` for pixels from the fallback, traced once for any size and channel count."""

    def __init__(self, spec: InputSpec, resize: Resize = Resize()):
        self.function = tf.function(lambda image: model_input(image, spec, resize), autograph=False,
                                    input_signature=[tf.TensorSpec([None, None, None], tf.uint8)])

    def __call__(self, images: list[np.ndarray]) -> tf.Tensor:
        return tf.stack([self.function(image) for image in images])
