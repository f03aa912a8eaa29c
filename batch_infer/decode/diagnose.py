"""What happens to a file that fell out of the graph: Pillow's decode of it (`rescue`), or why it
got an error row: refused unread (`unread_reason`), else the CHECKS in order, truncation, then
the decoder's own message, reading it again (`diagnose`)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import storage
from ..listing import ListedFile
from ..model import InputSpec
from ..tf_import import short_error, tf
from . import headers, pillow
from .graph import LEFT_TO_PILLOW, decode
from .options import DecodeOptions
from .plan import failed_check


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
    data, reason = read_again(item, options)
    return reason if reason is not None else diagnose_data(data, spec, options)


def read_again(item: ListedFile, options: DecodeOptions) -> tuple[tf.Tensor | None, str | None]:
    """(the file's bytes, None), or (None, why they could not be read)."""
    reason = unread_reason(item, options)
    if reason is not None:
        return None, reason
    try:
        return storage.read(item.fs_path), None
    except tf.errors.OpError as error:
        return None, f"read: {short_error(error)}"
    except OSError as error:  # from an object store
        return None, f"read: {error.strerror or f'{type(error).__name__} ({error})'}"


def diagnose_data(data: tf.Tensor | bytes, spec: InputSpec, options: DecodeOptions) -> str:
    """Why a file's bytes did not decode: the CHECKS in order, then truncation (a clearer word
    than most decoders' messages), then the decoder's own message."""
    data = tf.convert_to_tensor(data, tf.string)
    raw = data.numpy()
    failed = failed_check(headers.read_header(raw, orientation=False), raw, spec, options)
    if failed is not None:
        return failed
    if headers.ends_early(raw, headers.image_format(raw)):
        return "decode: truncated"
    try:
        decode(data, spec, options)
    except (tf.errors.OpError, ValueError) as error:
        return f"decode: {short_error(error)}"
    return "decode: failed in the pipeline but not when read again (did the file change meanwhile?)"


class Rescued(NamedTuple):
    """A file Pillow decoded: its upright pixels and its facts, as the graph gives them."""
    pixels: np.ndarray
    facts: dict[str, np.ndarray]  # width, height, content_hash (as `graph.file_facts`), one file


def rescue(item: ListedFile, data: bytes | None, spec: InputSpec,
           options: DecodeOptions) -> tuple[Rescued | None, str | None]:
    """For a file that dropped out of the graph: (its upright pixels from Pillow and its facts,
    None), or (None, the reason for its error row). `data` is the file's bytes when the engine
    has them; else the file is read again.

    The CHECKS come first, as in the graph, so a bomb the header gives away is never handed to
    Pillow; Pillow then checks --max-pixels from its own header read (for TIFF and HEIF, whose
    size only it reads) before decoding. A file Pillow refuses too gets the graph's diagnosis,
    unless only Pillow reads its format (then Pillow's reason says more).
    """
    if data is None:
        tensor, reason = read_again(item, options)
        if reason is not None:
            return None, reason
    else:
        tensor = tf.convert_to_tensor(data, tf.string)
    raw = tensor.numpy()
    header = headers.read_header(raw, orientation=False)
    failed = failed_check(header, raw, spec, options)
    if failed is not None or spec.encoded:  # an encoded-bytes model decodes files itself
        return None, failed or diagnose_data(tensor, spec, options)
    try:
        decoded = pillow.pixels(raw, options.max_pixels, options.exif_transpose)
        return Rescued(decoded.pixels, {"width": np.array(decoded.width), "height": np.array(decoded.height),
                                        "content_hash": tf.fingerprint(tensor[None])[0].numpy()}), None
    except pillow.Refused as refused:
        pillow_reason = refused.reason
    if header.format in (headers.TIFF, headers.HEIF) or pillow_reason.startswith("too-large"):
        return None, pillow_reason
    reason = diagnose_data(tensor, spec, options)
    return None, pillow_reason if LEFT_TO_PILLOW in reason else reason
