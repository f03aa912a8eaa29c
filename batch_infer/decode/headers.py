"""What an image file says about itself in its headers, read before decoding.

A 20000x20000 PNG of one colour is a few kilobytes on disk and 1.2 GB once decoded, so its
declared size must be checked before a single pixel is; and phones store photos sideways with an
EXIF orientation tag that TensorFlow's decoders ignore. Formats are told apart exactly as
`tf.io.decode_image` does it (magic bytes, never the file name: `ClassifyFileFormat` in
TensorFlow's decode_image_op.cc), so the size checked here is the size of what would be decoded.

Plain Python over the first bytes of the file (and a walk over a JPEG's segments, a GIF's
blocks): the pipeline reads the headers of a batch of files in one call (`graph.plan_batch`),
and a few microseconds of Python per file cost far less than the hundred-odd small TensorFlow
ops that the same parse takes in a graph, each of which tf.data pays for on every call. Only the
two fixes that must edit bytes on their way to TensorFlow's decoders are graph ops.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from ..tf_import import tf

UNKNOWN, JPEG, PNG, GIF, BMP, WEBP, TIFF, HEIF = range(8)

# What each format starts with, and which format that is; "?" matches any byte (the RIFF chunk
# size, the ftyp box size). TIFF and HEIF (an ISO base media file: HEIC, HEIF, AVIF) have no
# TensorFlow decoder: they are recognised so that they reach the Pillow fallback (`pillow`).
_MAGIC = ((b"\xff\xd8\xff", JPEG), (b"\x89PNG\r\n\x1a\n", PNG), (b"GIF8", GIF), (b"BM", BMP),
          (b"RIFF????WEBP", WEBP), (b"II*\0", TIFF), (b"MM\0*", TIFF), (b"II+\0", TIFF),
          (b"MM\0+", TIFF), (b"????ftyp", HEIF))  # the TIFF four: TIFF, BigTIFF

# Every magic number and fixed field (the last, a BMP's compression, ends at byte 34).
HEAD_BYTES = 34
# Where a JPEG's EXIF block is looked for: an APP1 segment is at most 64 KiB and comes first,
# after at most a short JFIF APP0 segment.
EXIF_SEARCH_BYTES = 65 * 1024
_IFD_ENTRIES = 64  # IFD0 of a camera JPEG has 10 to 20 entries
# Where a PNG may say how it is turned, as Pillow's Image.getexif reads it: an eXIf chunk, or a
# text chunk of EXIF as hex ("Raw profile type exif", from ImageMagick) or of XMP (its
# tiff:Orientation), named by the keyword the chunk starts with.
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_PNG_KEYWORDS = (b"Raw profile type exif\0", b"XML:com.adobe.xmp\0")
# JPEG frame headers (SOF0 to SOF15) carry the size; C4, C8 and CC are other markers.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class Header(NamedTuple):
    """Declared facts about one file; zeros for an unknown format."""

    format: int  # UNKNOWN, JPEG, PNG, GIF, BMP, WEBP, TIFF or HEIF
    width: int  # 0 when unknown here (TIFF and HEIF: Pillow reads it, see `pillow`)
    height: int
    frames: int
    pixels: int  # what decoding holds in memory: width x height, or all GIF frames
    animated_webp: bool  # needs `with_webp_alpha_flag`
    palette_bmp: bool  # 8 bits per pixel, decoded by TensorFlow as bare indices
    odd_bmp: bool  # a BMP TensorFlow misreads: OS/2, compressed or with colour masks
    # (TensorFlow ignores them: BGRA order is assumed), 1, 4 or 16 bits
    webp_metadata: bool  # an EXIF or XMP chunk, which may say how to turn it upright
    png_metadata: bool  # a PNG chunk that may say so too (`png_may_be_turned`), when asked
    orientation: int  # a JPEG's EXIF orientation, 1 (upright) to 8; 1 when none or not asked
    deep_png: bool  # 16 bits a sample: Pillow decodes it, by the one rule for high bit depth (`fallback`)


def _uint(data: bytes, offset: int, length: int, little: bool = True) -> int:
    """An unsigned integer of `length` bytes at `offset`; bytes outside the data read as 0."""
    chunk = data[offset:offset + length].ljust(length, b"\0") if offset >= 0 else bytes(length)
    return int.from_bytes(chunk, "little" if little else "big")


def _matches(data: bytes, pattern: bytes) -> bool:
    return len(data) >= len(pattern) and all(
        data.startswith(piece, offset) for offset, piece in _pieces(pattern))


@functools.cache
def _pieces(pattern: bytes) -> tuple[tuple[int, bytes], ...]:
    """The runs of a pattern between its "?" wildcards, with their offsets."""
    pieces, offset = [], 0
    for piece in pattern.split(b"?"):
        if piece:
            pieces.append((offset, piece))
        offset += len(piece) + 1
    return tuple(pieces)


def image_format(data: bytes) -> int:
    """UNKNOWN, JPEG, PNG, GIF, BMP or WEBP by the magic bytes tf.io.decode_image checks, or TIFF
    or HEIF."""
    for magic, kind in _MAGIC:
        if _matches(data, magic) and (kind != WEBP or len(data) > 12):  # TensorFlow's WebP check
            return kind
    return UNKNOWN


def _area(width: int, height: int) -> int:
    """width * height, as the graph's int64 checks had it for absurd declared sizes."""
    return min(width, 2**31) * min(height, 2**31)


def read_header(data: bytes, orientation: bool = True) -> Header:
    """The Header of one file's bytes. PNGs are searched for `png_metadata`, and JPEGs for their
    EXIF orientation, only when `orientation` matters. Never raises: what does not parse reads
    as zeros, and the decoder then says what is wrong."""
    kind = image_format(data)
    width = height = 0
    frames, frame_pixels = (0, 0) if kind == UNKNOWN else (1, 0)
    animated_webp = palette_bmp = odd_bmp = webp_metadata = png_metadata = deep_png = False
    turned = 1
    if kind == JPEG:
        width, height = jpeg_size(data) or _libjpeg_size(data)
        turned = exif_orientation(data) if orientation else 1
    elif kind == PNG:  # IHDR, always the first chunk
        width, height = _uint(data, 16, 4, False), _uint(data, 20, 4, False)
        png_metadata = orientation and png_may_be_turned(data)
        deep_png = _uint(data, 24, 1) == 16  # IHDR's bit depth
    elif kind == GIF:  # the logical screen
        width, height = _uint(data, 6, 2), _uint(data, 8, 2)
        frames, frame_pixels = _walk_gif_blocks(data)
    elif kind == BMP:
        os2 = _uint(data, 14, 4) == 12  # a 12-byte OS/2 1.x header
        bits, compression = _uint(data, 28, 2), _uint(data, 30, 4)
        if os2:
            width, height = _uint(data, 18, 2), _uint(data, 20, 2)
        else:  # signed, as TensorFlow's decoder reads them; a negative height means top-down
            width, height = (abs(value - 2**32 if value >= 2**31 else value)
                             for value in (_uint(data, 18, 4), _uint(data, 22, 4)))
        palette_bmp = not os2 and bits == 8
        odd_bmp = os2 or compression != 0 or bits not in (8, 24, 32)
    elif kind == WEBP:
        chunk, flags = data[12:16], _uint(data, 20, 1)
        if chunk == b"VP8X":  # extended
            width, height = _uint(data, 24, 3) + 1, _uint(data, 27, 3) + 1
            animated_webp, webp_metadata = flags // 2 % 2 == 1, flags // 4 % 4 != 0  # bits 1; 2, 3
        elif chunk == b"VP8L":  # lossless: after the 0x2F signature, 14 bits width - 1, 14 height - 1
            sizes = _uint(data, 21, 4)
            width, height = sizes % 2**14 + 1, sizes // 2**14 % 2**14 + 1
        else:  # lossy: low 14 bits; 2 bits of scaling
            width, height = _uint(data, 26, 2) % 2**14, _uint(data, 28, 2) % 2**14
    return Header(kind, width, height, frames, max(_area(width, height), frame_pixels), animated_webp,
                  palette_bmp, odd_bmp, webp_metadata, png_metadata, turned, deep_png)


def png_may_be_turned(data: bytes) -> bool:
    """Whether a PNG has a chunk that may say how to turn it upright (`_PNG_KEYWORDS`), wherever
    it is: a walk over the chunk headers, which skips the image data (a search of the whole file
    for the names cost a small PNG more than the rest of its header read)."""
    offset = 8
    while offset + 8 <= len(data):
        kind = data[offset + 4:offset + 8]
        if kind == b"eXIf" or kind in _PNG_TEXT_CHUNKS and data.startswith(_PNG_KEYWORDS, offset + 8):
            return True
        if kind == b"IEND":
            break
        offset += 12 + _uint(data, offset, 4, False)  # length, type, data, CRC
    return False


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, found as libjpeg's jpeg_read_header finds it:
    marker by marker from the start, skipping each segment by its length (so a thumbnail inside
    EXIF is never taken), fill bytes, and stray bytes before a marker. None when there is no
    frame header before the scan, or it declares no size."""
    position, end = 2, len(data)
    while position + 1 < end:
        if data[position] != 0xFF:  # stray bytes: libjpeg warns and looks for the next marker
            position = data.find(b"\xff", position)
            if position < 0:
                break
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte
            position += 1
        elif marker in _SOF_MARKERS:
            height, width = _uint(data, position + 5, 2, False), _uint(data, position + 7, 2, False)
            return (width, height) if position + 9 <= end and width and height else None
        elif marker in (0xDA, 0xD9):  # the scan, or the end, before any frame header
            break
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
        else:
            position += 2 + _uint(data, position + 2, 2, False)
    return None


def _libjpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) as libjpeg reads them, for a JPEG whose frame header the walk did not find
    (so the pixel limit still holds if libjpeg reads more than the walk); (0, 0) when libjpeg
    cannot either, and the decode will say why."""
    try:
        height, width = (int(side) for side in tf.io.extract_jpeg_shape(data)[:2])
    except tf.errors.OpError:
        return 0, 0
    return width, height


def exif_orientation(data: bytes) -> int:
    """EXIF orientation of a JPEG, 1 (upright) to 8, from tag 0x0112 in IFD0 of its APP1 segment.

    The "Exif\\0\\0" signature must follow the segment's FF E1 marker and length. Then comes a
    TIFF block: II (little-endian) or MM (big-endian), 42, the offset of IFD0, which is an entry
    count and 12-byte entries (tag, type, count, value). A missing or malformed tag means 1, as
    in Pillow's ImageOps.exif_transpose.
    """
    found = data.find(b"Exif\0\0", 0, EXIF_SEARCH_BYTES)
    if found < 0:
        return 1
    app1 = max(found - 4, 0)  # FF E1, the segment length, "Exif\0\0", the TIFF header
    little = _matches(data[app1:], b"\xff\xe1??Exif\0\0II")
    if not little and not _matches(data[app1:], b"\xff\xe1??Exif\0\0MM"):
        return 1
    ifd = app1 + 10 + _uint(data, app1 + 14, 4, little)
    entries = min(_uint(data, ifd, 2, little), _IFD_ENTRIES)
    values = [_uint(data, ifd + 10 + 12 * slot, 2, little) for slot in range(entries)
              if _uint(data, ifd + 2 + 12 * slot, 2, little) == 0x0112]
    orientation = max(values, default=0)
    return orientation if 1 <= orientation <= 8 else 1


def _walk_gif_blocks(data: bytes) -> tuple[int, int]:
    """(frames, pixels of all frames) of a GIF. TensorFlow's GIF decoder (giflib's DGifSlurp)
    holds every frame in memory even when it returns only the first, and a frame may declare
    itself larger than the logical screen, so every image descriptor counts. Reads block headers
    and sub-block lengths only, never the compressed pixels."""
    raw = data + bytes(16)  # zeros past the end: a short file ends the walk, not an error
    end = len(raw) - 16
    frames = pixels = 0
    position = 13 + _colour_table_size(raw[10])
    while position < end and raw[position] != 0x3B:  # the trailer
        if raw[position] == 0x2C:  # image descriptor: position, size, flags; then LZW code size
            frames += 1
            pixels += _uint(raw, position + 5, 2) * _uint(raw, position + 7, 2)
            position += 11 + _colour_table_size(raw[position + 9])
        elif raw[position] == 0x21:  # extension: label, then sub-blocks
            position += 2
        else:
            break  # not GIF structure: the decoder will say what is wrong
        while position < end and raw[position] != 0:  # data sub-blocks: a length byte, then data
            position += raw[position] + 1
        position += 1
    return frames, pixels


def _colour_table_size(flags: int) -> int:
    """A GIF colour table is present when bit 7 is set: 2 ** (1 + low 3 bits) RGB entries."""
    return 3 * 2 ** (flags % 8 + 1) if flags >= 128 else 0


def with_webp_alpha_flag(data: tf.Tensor) -> tf.Tensor:
    """The file with its VP8X alpha flag set (a graph op, on the way to the decoder).

    TensorFlow 2.21 sizes its output by that flag (3 channels without it) but writes RGBA frames
    for any animation: with channels=0 an animated WebP without the flag overruns the buffer and
    kills the process (free(): invalid next size), and channels=3 or 4 are refused. With the
    flag set, channels=4 decodes the first frame correctly.
    """
    flags = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 20, 1), tf.uint8)[0], tf.int32)
    flagged = tf.gather(tf.constant([bytes([value]) for value in range(256)]),
                        tf.bitwise.bitwise_or(flags, 0x10))
    return tf.strings.join([tf.strings.substr(data, 0, 20), flagged, tf.strings.substr(data, 21, -1)])


def bmp_palette(data: tf.Tensor) -> tf.Tensor:
    """[256, 3] RGB colours of an 8-bit BMP, which TensorFlow decodes as bare palette indices (a
    graph op, beside the decoder).

    The palette follows the 14-byte file header and the DIB header (whose first 4 bytes are its
    size), one blue, green, red, unused quad per colour.
    """
    dib_size = tf.io.decode_raw(tf.strings.substr(tf.strings.join([data, b"\0" * 18]), 14, 4), tf.int32)[0]
    start = tf.clip_by_value(14 + dib_size, 0, tf.strings.length(data))  # zeros past the end
    palette = tf.strings.substr(tf.strings.join([data, b"\0" * 1024]), start, 1024)
    quads = tf.reshape(tf.io.decode_raw(palette, tf.uint8), (256, 4))
    return tf.reverse(quads[:, :3], axis=[1])


_END_MARKERS = {JPEG: b"\xff\xd9", PNG: b"IEND\xaeB`\x82", GIF: b";"}


def ends_early(data: bytes, kind: int) -> bool:
    """Whether a file stops before its format's end: JPEG's EOI marker, PNG's IEND chunk, GIF's
    trailer, or the length its RIFF (WebP) or BMP header declares.

    Only `diagnose` asks, about files that have already failed, to say "truncated" rather than
    the decoder's message. (TensorFlow 2.21 refuses every truncated JPEG, PNG, GIF, BMP and WebP
    by itself, so the pipeline needs no such check.)
    """
    if kind in _END_MARKERS:
        return not data.endswith(_END_MARKERS[kind])
    if kind == WEBP:
        return len(data) < 8 + int.from_bytes(data[4:8], "little")
    if kind == BMP:
        return len(data) < int.from_bytes(data[2:6], "little")
    return False
