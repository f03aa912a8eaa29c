"""The tf.data graph's decode: from a file's bytes and its `Plan` to pixels, by the DECODERS table
read by both the graph and the per-file diagnosis.

Each file's plan is decided from its header, in Python, before the graph decodes it
(`plan_file`, a batch at a time by `plan_batch`): the graph then runs one switch per file, whose
first branch fails a file that failed a check or is left to Pillow, and the others decode;
`diagnose.diagnose_data` runs the same checks in order, then the same decode, and reports the
first thing that fails. A further format is one more DECODERS entry. Files the graph does not
decode drop out of it; `pillow.rescue` then decodes them with Pillow, and their pixels go
through the same `geometry.model_input`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..model import InputSpec
from ..perceptual import SIDE, thumbnails
from ..tf_import import tf
from . import headers
from .geometry import model_input, resized, scaled, to_channels
from .options import DecodeOptions
from .plan import JPEG_RATIOS, NOT_IN_GRAPH, CHECKS, Plan, jpeg_ratio, scale_target, upright_size


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
    decode: Callable[[tf.Tensor, Plan], tf.Tensor] | None  # data, its plan (as tensors); None: Pillow's


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
            or header.odd_bmp or header.deep_png
            or (header.webp_metadata or header.png_metadata) and options.exif_transpose, None),
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
# The `decoder` of an ok row: the graph's decoders, or the fallback.
TENSORFLOW, PILLOW = "tensorflow", "pillow"


# The switch's branches: the first fails, then one per decoder the graph runs (DECODERS, or the
# one of --preset keras).
GRAPH_DECODERS = tuple(decoder for decoder in DECODERS if decoder.decode is not None)
_BRANCHES = {decoder.name: 1 + index for index, decoder in enumerate(GRAPH_DECODERS)}  # by name: no dataclass ==


def plan_file(data: bytes, spec: InputSpec, options: DecodeOptions) -> Plan:
    """The Plan of one file's bytes, from its header: the first of DECODERS that takes it."""
    header = headers.read_header(data, options.exif_transpose)
    passes = all(check.passes(header, spec, options) for check in CHECKS)
    if spec.encoded or options.decoder == "keras":
        branch, ratio = 1 if passes else NOT_IN_GRAPH, 1
    else:
        ratio = jpeg_ratio(header, scale_target(spec, options.resize), options)
        decoder = next(decoder for decoder in DECODERS if decoder.takes(header, options, ratio))
        branch = _BRANCHES[decoder.name] if passes and decoder.decode is not None else NOT_IN_GRAPH
    upright = upright_size(header, ratio) if branch != NOT_IN_GRAPH else (0, 0)
    return Plan(branch, header.orientation, JPEG_RATIOS.index(ratio), header.width, header.height, *upright)


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


def plan_batch(data: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tuple[tf.Tensor, tf.Tensor]:
    """(the `plan` of each file as a [files, 7] int64 tensor, the 64-bit fingerprints) of a batch
    of files ([files] strings), in one call for the batch: the headers are read in Python (see
    `headers`), and tf.data pays for that call once per batch rather than once per file. One
    tensor, not one per field: unbatching costs each file a little for every tensor it splits."""
    def plans(data: np.ndarray) -> np.ndarray:
        return np.array([plan_file(raw, spec, options) for raw in data], np.int64).reshape(-1, len(Plan._fields))

    planned = tf.numpy_function(plans, [data], tf.int64, stateful=False)  # a fifth cheaper a call than py_function
    return tf.ensure_shape(planned, [data.shape[0], len(Plan._fields)]), tf.fingerprint(data)


def decode_read(data: tf.Tensor, planned: tf.Tensor, content_hash: tf.Tensor, spec: InputSpec,
                options: DecodeOptions) -> tuple[tf.Tensor, dict]:
    """One file of a `plan_batch` (`planned` its row of plans): its model input, and what it
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


def decode_batch(data: tf.Tensor, planned: tf.Tensor, spec: InputSpec,
                 options: DecodeOptions) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(the model inputs of a batch of files ([files] strings, their plans [files, 7]), none of
    them NOT_IN_GRAPH, as one batch; their `perceptual.thumbnails`, None for a model that takes
    encoded bytes). Each file is decoded on its own, in tf.map_fn, which costs a
    file far less than a tf.data element does. Two things are decided once for the batch: when
    every file takes the same one of SMALL_FILE_DECODERS, each is decoded by it alone, without a
    switch a file; and when the plans say every file's pixels come out the same size, they are
    resized as one batch, which gives the values of one at a time for a fraction of the cost
    (and their thumbnails are made as one batch too). A file that fails to decode fails the
    batch (see `pipeline`)."""
    if spec.encoded:
        return data, None
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
            return tf.cond(one_size, lambda: (tf.cast(image, tf.float32), tf.zeros([SIDE, SIDE, spec.channels])),
                           lambda: (resized(image, spec.image_size, options.resize), thumbnails(image)))

        images, thumbs = tf.map_fn(upright, (data, planned), fn_output_signature=(
            tf.TensorSpec([None, None, spec.channels], tf.float32), tf.TensorSpec([SIDE, SIDE, spec.channels], tf.float32)))
        return tf.cond(one_size, lambda: (scaled(resized(images, spec.image_size, options.resize), spec),
                                          thumbnails(images)),
                       lambda: (scaled(tf.ensure_shape(images, [None, *spec.image_size, spec.channels]), spec),
                                thumbs))

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
        lambda: (tf.zeros([0, *spec.image_size, spec.channels], spec.dtype), tf.zeros([0, SIDE, SIDE, spec.channels])))


def decode_with_facts(data: tf.Tensor, spec: InputSpec, options: DecodeOptions) -> tuple[tf.Tensor, dict]:
    """`decode_read` of one file, as a batch of one."""
    planned, content_hash = plan_batch(data[None], spec, options)
    return decode_read(data, planned[0], content_hash[0], spec, options)


def checked(data: tf.Tensor, planned: Plan) -> tf.Tensor:
    """The bytes, for a model that decodes them itself, only once the CHECKS pass."""
    # Strings only: with other data, tf.debugging.Assert wraps itself in a cond, a call per file.
    with tf.control_dependencies([tf.debugging.Assert(planned.branch != NOT_IN_GRAPH, ["header check failed"])]):
        return tf.identity(data)


