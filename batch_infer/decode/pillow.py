"""The fallback decoder: Pillow, for files the tf.data graph does not decode.

TensorFlow has no decoder for TIFF, HEIC or AVIF, refuses 1- and 4-bit, 16-bit, RLE and OS/2
BMPs, some GIFs, and cannot read the orientation of a PNG or WebP. Such files drop out of the
graph like broken ones, and before one is called broken, `diagnose.rescue` asks Pillow, off the
hot path: a well-kept library that reads what image viewers read. Pixels come back as stored
formats give them to the graph's decoders (uint8, 1 to 4 channels, upright), so the same
`geometry.model_input` makes them model inputs.

Only the formats named in FORMATS are opened: Pillow has plugins (EPS, for one, which runs
Ghostscript) that have no business reading files from an untrusted folder.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

FORMATS = ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "AVIF"]
# File names of formats that only Pillow reads: the local engine hands them to it directly.
EXTENSIONS = ("tif", "tiff", "heic", "heif", "avif")
try:  # the batch-infer[heif] extra: HEIC and HEIF photos from phones
    import pillow_heif

    pillow_heif.register_heif_opener()
    FORMATS.append("HEIF")
except ImportError:
    pass

Image.init()  # every plugin, so that FORMATS can name them
# Pillow logs why a file failed (as well as raising); the error row says it. Without a handler of
# its own, Python's last-resort handler would print that bare on stderr.
logging.getLogger("PIL").addHandler(logging.NullHandler())

# --max-pixels is the limit that applies, checked below from the same header; Pillow's warning
# between its own limit and twice that would only be noise on stderr. Its error above twice its
# limit still applies.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Plugins warn about the damage they step over ("Truncated File Read", "Invalid APNG"); the file
# is then decoded or refused, and says so in its row.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class Refused(Exception):
    """Pillow did not decode the file; `reason` is its error row's text."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Decoded(NamedTuple):
    """What Pillow gives of a file: its pixels, and its size as stored (for `width`, `height`)."""
    pixels: np.ndarray  # uint8 [height, width, 1 to 4], upright when asked
    width: int  # before any turn
    height: int


def pixels(data: bytes, max_pixels: int, exif_transpose: bool) -> Decoded:
    """The first frame (page) of a file as uint8 [height, width, 1 to 4], upright when asked, as
    Pillow's ImageOps.exif_transpose turns it, with its stored size; Refused when Pillow cannot,
    or the size its header declares is over `max_pixels` (then nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise Refused(f"too-large: {width}x{height}")
            image.load()
            transparent = image.info.get("transparency") if image.format == "GIF" else None
            if exif_transpose:
                image = ImageOps.exif_transpose(image)
            return Decoded(_array(image, transparent), width, height)
    except Refused:
        raise
    except Image.DecompressionBombError as error:
        declared = re.search(r"\((\d+) pixels\)", str(error))
        raise Refused(f"too-large: {declared[1] if declared else 'over Pillow limit of'} pixels") from None
    except Image.UnidentifiedImageError:
        if data[4:8] == b"ftyp" and "HEIF" not in FORMATS:
            raise Refused("decode: HEIC/HEIF needs the heif extra: pip install 'batch-infer[heif]'") from None
        raise Refused("decode: Pillow cannot identify the image") from None
    except Exception as error:  # a broken file may raise anything from a plugin; it is one row
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise Refused("decode: truncated" if "truncated" in message else f"decode: {message}") from None


def high_bit_depth(samples: np.ndarray) -> np.ndarray:
    """Samples of more than 8 bits as uint8, by one rule for 16-bit PNGs, 16- and 32-bit TIFFs
    and float TIFFs: linear from `low` = the smaller of 0 and the least sample, to `high` = the
    least power of two at or above the greatest sample (1 at least), floor(256 (v - low) /
    (high - low)), at most 255. So a 16-bit photo keeps its high byte (as TensorFlow's PNG
    decoder gives it), 12 bits stored in 16 (microscopes, X-ray) read as 12 bits instead of
    black, float samples in 0..1 as 0..255, and any other floats by their range. Zero stays black
    unless samples go below it; NaN and infinities count as 0."""
    values = np.nan_to_num(np.asarray(samples, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low = min(0.0, float(values.min(initial=0.0)))
    high = 2.0 ** np.ceil(np.log2(max(float(values.max(initial=0.0)), 1.0)))
    return np.minimum(np.floor((values - low) * (256.0 / (high - low))), 255).astype(np.uint8)


def _array(image: Image.Image, transparent_index: int | None = None) -> np.ndarray:
    """Gray, gray+alpha, RGB or RGBA uint8, the channel layouts `geometry.to_channels` takes.

    Images of more than 8 bits a sample (16- and 32-bit integers, floats) go by `high_bit_depth`
    (Pillow's own conversion would clip them to white). Transparent pixels of a palette GIF
    become black, as TensorFlow's GIF decoder gives them, so a GIF's pixels do not depend on
    which decoder read it.
    """
    mode = image.mode
    if transparent_index is not None and mode in ("P", "L"):
        array = np.asarray(image.convert("RGB"))
        array = np.where((np.asarray(image) == transparent_index)[..., None], 0, array)
    elif mode in ("L", "LA", "RGB", "RGBA"):
        array = np.asarray(image)
    elif mode.startswith("I") or mode == "F":
        array = high_bit_depth(np.asarray(image))
    elif mode in ("1", "La"):
        array = np.asarray(image.convert("L" if mode == "1" else "LA"))
    else:  # palette, CMYK, YCbCr, LAB, premultiplied RGBa, RGBX
        array = np.asarray(image.convert("RGBA" if "A" in mode or "a" in mode else "RGB"))
    array = array.astype(np.uint8, copy=False)
    return array[..., None] if array.ndim == 2 else array
