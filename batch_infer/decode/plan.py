"""What a file's header decides before any pixel is decoded, in plain Python: the CHECKS a file
must pass, each with the reason it gives, the JPEG scale it is decoded at, and its `Plan`, the
row the graph's switch reads (`graph.plan_file` fills it, choosing the decoder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from ..model import InputSpec
from . import headers
from .options import DecodeOptions, Resize

FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP, TIFF, HEIC or AVIF"


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
    (0 when unknown), which tells `graph.decode_batch` whether a batch can be resized as one. Python
    ints for one file; in the graph a [7] int64 vector per file (`graph.plan_batch`), unstacked where
    it is used."""

    branch: int
    orientation: int
    ratio_index: int  # into JPEG_RATIOS
    width: int
    height: int
    upright_height: int
    upright_width: int


# The branch of the graph's switch for files that fail a check or are left to Pillow.
NOT_IN_GRAPH = 0


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


def upright_size(header: headers.Header, ratio: int) -> tuple[int, int]:
    """(height, width) of the pixels the graph decodes from a file: libjpeg rounds a scaled size
    up; EXIF orientations 5 to 8 swap the sides."""
    height, width = header.height, header.width
    if header.format == headers.JPEG:
        height, width = -(-height // ratio), -(-width // ratio)
    return (width, height) if header.orientation >= 5 else (height, width)


def failed_check(header: headers.Header, raw: bytes, spec: InputSpec, options: DecodeOptions) -> str | None:
    """The reason of the first of CHECKS the header fails, if any."""
    return next((check.reason(header, raw) for check in CHECKS if not check.passes(header, spec, options)), None)
