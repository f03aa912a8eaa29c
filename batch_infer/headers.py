"""What an image file says about itself in its headers, read with TensorFlow ops before decoding.

A 20000x20000 PNG of one colour is a few kilobytes on disk and 1.2 GB once decoded, so its
declared size must be checked before a single pixel is; and phones store photos sideways with an
EXIF orientation tag that TensorFlow's decoders ignore. Both are read here with string and
gather ops, so they run inside the tf.data graph and Python never touches image bytes on the hot
path (except the block structure of GIFs, see `_gif_frames`). Formats are told apart exactly as
`tf.io.decode_image` does it (magic bytes, never the file name: `ClassifyFileFormat` in
TensorFlow's decode_image_op.cc), so the size checked here is the size of what would be decoded.

tf.data pays for every op once per call, so headers are read for a batch of files at once
(`read_headers`), and fixed-offset fields from tables in one gather rather than field by field;
only what libjpeg must find (a JPEG's size) is read file by file.
"""

from __future__ import annotations

from typing import NamedTuple

from .tf_import import tf

UNKNOWN, JPEG, PNG, GIF, BMP, WEBP, TIFF, HEIF = range(8)

# What each format starts with, and which format that is; "?" matches any byte (the RIFF chunk
# size, the ftyp box size). TIFF and HEIF (an ISO base media file: HEIC, HEIF, AVIF) have no
# TensorFlow decoder: they are recognised so that they reach the Pillow fallback (`decoding`).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"RIFF????WEBP",
          b"II*\0", b"MM\0*", b"II+\0", b"MM\0+", b"????ftyp")  # the last four: TIFF, BigTIFF
_MAGIC_FORMATS = (JPEG, PNG, GIF, BMP, WEBP, TIFF, TIFF, TIFF, TIFF, HEIF)
_WEBP_CHUNKS = (b"????????????VP8X", b"????????????VP8L")  # extended, lossless; else VP8, lossy

# Header fields at fixed offsets: name -> (offset, bytes, little-endian), from each format's spec.
_FIELDS = {
    "png_width": (16, 4, False), "png_height": (20, 4, False),  # IHDR, always the first chunk
    "gif_width": (6, 2, True), "gif_height": (8, 2, True),  # the logical screen
    "bmp_width": (18, 4, True), "bmp_height": (22, 4, True), "bmp_bits": (28, 2, True),
    "bmp_header_size": (14, 4, True), "bmp_compression": (30, 4, True),
    "os2_width": (18, 2, True), "os2_height": (20, 2, True),  # a 12-byte OS/2 1.x header
    "vp8x_flags": (20, 1, True), "vp8x_width": (24, 3, True), "vp8x_height": (27, 3, True),
    "vp8l_sizes": (21, 4, True),  # after the 0x2F signature: 14 bits width - 1, 14 bits height - 1
    "vp8_width": (26, 2, True), "vp8_height": (28, 2, True),  # low 14 bits; 2 bits of scaling
}

# Every magic number and fixed field (the last, a BMP's compression, ends at byte 34).
HEAD_BYTES = 34
# Where a JPEG's EXIF block is looked for (see `_exif_at`).
EXIF_SEARCH_BYTES = 65 * 1024
_IFD_ENTRIES = 64  # IFD0 of a camera JPEG has 10 to 20 entries


class Header(NamedTuple):
    """Declared facts about one file, as scalars; zeros for an unknown format."""

    format: tf.Tensor  # int64: UNKNOWN, JPEG, PNG, GIF, BMP, WEBP, TIFF or HEIF
    width: tf.Tensor  # int64; 0 when unknown here (TIFF and HEIF: Pillow reads it, see `fallback`)
    height: tf.Tensor  # int64
    frames: tf.Tensor  # int64
    pixels: tf.Tensor  # int64: what decoding holds in memory: width x height, or all GIF frames
    animated_webp: tf.Tensor  # bool: needs `with_webp_alpha_flag`
    palette_bmp: tf.Tensor  # bool: 8 bits per pixel, decoded by TensorFlow as bare indices
    odd_bmp: tf.Tensor  # bool: a BMP TensorFlow misreads: OS/2, compressed or with colour masks
    # (TensorFlow ignores them: BGRA order is assumed), 1, 4 or 16 bits
    webp_metadata: tf.Tensor  # bool: an EXIF or XMP chunk, which may say how to turn it upright
    png_metadata: tf.Tensor  # bool: a PNG chunk that may say so too (`png_metadata`), when asked
    exif_at: tf.Tensor  # int64: where a JPEG's EXIF APP1 segment starts, -1 if none (or not asked)


def _window(data: tf.Tensor, offset, length: int) -> tf.Tensor:
    """`length` bytes of `data` from `offset` as int64 values, zero-padded outside of it: [length]
    for one file, [files, length] for a batch (`offset` a scalar or one per file)."""
    start = tf.minimum(tf.maximum(tf.cast(offset, tf.int32), 0), tf.strings.length(data))
    text = tf.strings.substr(data, start, tf.fill(tf.shape(data), length))
    padded = tf.strings.substr(tf.strings.join([text, tf.constant(b"\0" * length)]), 0, length)
    values = tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)
    return tf.reshape(values, tf.concat([tf.shape(data), [length]], 0))


def _uint(values: tf.Tensor, offsets, length: int, little_endian) -> tf.Tensor:
    """Unsigned integers of `length` bytes at each of `offsets` (past the end reads as 0);
    `little_endian` may be a tensor: a TIFF block says its byte order at run time."""
    size = tf.size(values, out_type=tf.int64)
    indices = tf.cast(offsets, tf.int64)[..., None] + tf.range(length, dtype=tf.int64)
    digits = tf.gather(values, tf.minimum(indices, size - 1)) * tf.cast(indices < size, tf.int64)
    little = tf.constant([256**i for i in range(length)], tf.int64)
    return tf.reduce_sum(digits * tf.where(little_endian, little, tf.reverse(little, [0])), axis=-1)


def _fields(values: tf.Tensor) -> dict[str, tf.Tensor]:
    """Every entry of _FIELDS for a batch of [files, HEAD_BYTES] values, in one gather and one
    weighted sum."""
    indices, weights = [], []
    for offset, length, little in _FIELDS.values():
        powers = [256**i for i in range(length)]
        indices.append([offset + i for i in range(length)] + [0] * (4 - length))
        weights.append((powers if little else powers[::-1]) + [0] * (4 - length))
    sums = tf.reduce_sum(tf.gather(values, indices, axis=1) * tf.constant(weights, tf.int64), axis=2)
    return dict(zip(_FIELDS, tf.unstack(sums, len(_FIELDS), axis=1)))


def _starts_with(values: tf.Tensor, patterns: tuple[bytes, ...]) -> tf.Tensor:
    """[..., len(patterns)] bool: which patterns the bytes start with ("?" matches any byte)."""
    width = max(len(pattern) for pattern in patterns)
    expected = [list(pattern.ljust(width, b"?")) for pattern in patterns]
    wildcard = tf.constant(expected, tf.int64) == ord("?")
    return tf.reduce_all((values[..., None, :width] == tf.constant(expected, tf.int64)) | wildcard, axis=-1)


def _format(data: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    longer = tf.strings.length(data)[..., None] > 12  # TensorFlow's WebP check
    long_enough = tf.constant([False] * 4 + [True] + [False] * (len(_MAGIC) - 5))
    matches = _starts_with(values, _MAGIC) & (longer | ~long_enough)
    return tf.where(tf.reduce_any(matches, axis=-1),
                    tf.gather(tf.constant(_MAGIC_FORMATS, tf.int64), tf.argmax(tf.cast(matches, tf.int64), axis=-1)),
                    UNKNOWN)


def image_format(data: tf.Tensor) -> tf.Tensor:
    """UNKNOWN, JPEG, PNG, GIF, BMP or WEBP by the magic bytes tf.io.decode_image checks, or TIFF
    or HEIF."""
    return _format(data, _window(data, 0, HEAD_BYTES))


def _area(width: tf.Tensor, height: tf.Tensor) -> tf.Tensor:
    """width * height without int64 overflow for absurd declared sizes (4-byte PNG fields)."""
    return tf.minimum(width, 2**31) * tf.minimum(height, 2**31)


def _gif_frames(data: tf.Tensor, kind: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(frames, pixels of all frames) of each file of a batch that is a GIF; (1, 0) for others.
    TensorFlow's GIF decoder (giflib's DGifSlurp) holds every frame in memory even when it
    returns only the first, and a frame may declare itself larger than the logical screen, so
    every image descriptor counts.

    The only header read in Python (tf.py_function), and only for batches with a GIF in them:
    the walk is sequential, and a tf.while_loop anywhere in the map function cost about 1 ms of
    CPU on every file, GIF or not (TensorFlow 2.21), while the Python walk takes about 1 ms per
    MB of GIF. It reads block headers and sub-block lengths only, never the compressed pixels.
    """
    def walk(data, kind):
        counts = [_walk_gif_blocks(one) if is_gif else (1, 0) for one, is_gif in zip(data.numpy(), kind.numpy() == GIF)]
        return [tf.constant([count[i] for count in counts], tf.int64, shape=[len(counts)]) for i in (0, 1)]

    def walked():
        frames, pixels = tf.py_function(walk, [data, kind], [tf.int64, tf.int64])
        return tf.ensure_shape(frames, data.shape), tf.ensure_shape(pixels, data.shape)

    return tf.cond(tf.reduce_any(kind == GIF), walked,
                   lambda: (tf.ones_like(kind), tf.zeros_like(kind)))


def _walk_gif_blocks(raw: bytes) -> tuple[int, int]:
    raw = raw + bytes(16)  # zeros past the end: a short file ends the walk, not an error
    end = len(raw) - 16
    frames = pixels = 0
    position = 13 + _colour_table_size(raw[10])
    while position < end and raw[position] != 0x3B:  # the trailer
        if raw[position] == 0x2C:  # image descriptor: position, size, flags; then LZW code size
            frames += 1
            pixels += int.from_bytes(raw[position + 5:position + 7], "little") * int.from_bytes(
                raw[position + 7:position + 9], "little")
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


def read_headers(data: tf.Tensor, orientation: bool = True) -> Header:
    """The Header of each file of a batch ([files] strings), as [files] tensors, except the size
    of JPEGs, which `with_jpeg_size` adds file by file (0 until then). PNGs are scanned for
    `png_metadata`, and JPEGs for their EXIF block, only when `orientation` matters.

    String and arithmetic ops take the whole batch at once, so a batch of small files pays for
    the few dozen ops of this read once, not once per file.
    """
    values = _window(data, 0, HEAD_BYTES)
    kind = _format(data, values)
    field = _fields(values)
    zero = tf.zeros_like(kind)

    # BMP sizes are signed, as TensorFlow's decoder reads them; a negative height means top-down.
    os2 = field["bmp_header_size"] == 12
    bmp_width, bmp_height = (tf.where(os2, small, tf.abs(tf.where(value >= 2**31, value - 2**32, value)))
                             for value, small in ((field["bmp_width"], field["os2_width"]),
                                                  (field["bmp_height"], field["os2_height"])))
    extended, lossless = tf.unstack(_starts_with(values, _WEBP_CHUNKS), 2, axis=-1)
    webp_width = tf.where(extended, field["vp8x_width"] + 1, tf.where(
        lossless, field["vp8l_sizes"] % 2**14 + 1, field["vp8_width"] % 2**14))
    webp_height = tf.where(extended, field["vp8x_height"] + 1, tf.where(
        lossless, field["vp8l_sizes"] // 2**14 % 2**14 + 1, field["vp8_height"] % 2**14))

    by_format = tf.one_hot(kind, 8, dtype=tf.int64)
    width = tf.reduce_sum(by_format * tf.stack([zero, zero, field["png_width"], field["gif_width"], bmp_width,
                                                webp_width, zero, zero], axis=-1), axis=-1)
    height = tf.reduce_sum(by_format * tf.stack([zero, zero, field["png_height"], field["gif_height"], bmp_height,
                                                 webp_height, zero, zero], axis=-1), axis=-1)
    frames, frame_pixels = _gif_frames(data, kind)
    return Header(
        format=kind, width=width, height=height, frames=tf.where(kind == UNKNOWN, zero, frames),
        pixels=tf.maximum(_area(width, height), frame_pixels),
        animated_webp=(kind == WEBP) & extended & (field["vp8x_flags"] // 2 % 2 == 1),
        palette_bmp=(kind == BMP) & ~os2 & (field["bmp_bits"] == 8),
        odd_bmp=(kind == BMP) & (os2 | (field["bmp_compression"] != 0)
                                 | ((field["bmp_bits"] != 8) & (field["bmp_bits"] != 24) & (field["bmp_bits"] != 32))),
        webp_metadata=(kind == WEBP) & extended & (field["vp8x_flags"] // 4 % 4 != 0),  # bits 2, 3
        png_metadata=png_metadata(tf.where(kind == PNG, data, "")) if orientation else kind < 0,
        exif_at=_exif_at(data, kind == JPEG) if orientation else zero - 1)


def _exif_at(data: tf.Tensor, searched: tf.Tensor) -> tf.Tensor:
    """Where the APP1 segment of each `searched` file's "Exif\0\0" signature starts (its FF E1
    marker and length come first), -1 when there is none. An APP1 segment is at most 64 KiB and
    comes first, after at most a short JFIF APP0 segment, so only EXIF_SEARCH_BYTES are searched."""
    head = tf.where(searched, tf.strings.substr(data, tf.zeros_like(searched, tf.int32),
                                                tf.fill(tf.shape(data), EXIF_SEARCH_BYTES)), "")
    parts = tf.strings.split(head, sep=b"Exif\x00\x00", maxsplit=1)
    before = tf.gather(parts.flat_values, parts.row_starts())
    return tf.where(parts.row_lengths() > 1, tf.cast(tf.strings.length(before), tf.int64) - 4, -1)


def with_jpeg_size(header: Header, data: tf.Tensor) -> Header:
    """One file's Header with its JPEG size read: extract_jpeg_shape runs libjpeg's
    jpeg_read_header only, which finds the frame header (SOF) wherever it is, without decoding
    scan data. A JPEG whose headers are broken raises InvalidArgumentError here."""
    def jpeg_size():
        shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
        return shape[1], shape[0]

    width, height = tf.cond(header.format == JPEG, jpeg_size, lambda: (header.width, header.height))
    return header._replace(width=width, height=height,
                           pixels=tf.maximum(header.pixels, _area(width, height)))


@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def read_header(data: tf.Tensor) -> Header:
    """Format, declared size and decoding cost of one encoded file, without decoding it: the
    batch read on a batch of one, as `diagnose` and the fallback need it.

    Raises InvalidArgumentError only for a JPEG whose headers are broken.
    """
    return with_jpeg_size(Header(*(field[0] for field in read_headers(data[None]))), data)


# Where a PNG may say how it is turned, as Pillow's Image.getexif reads it: an eXIf chunk, EXIF
# as hex text ("Raw profile type exif", from ImageMagick), or tiff:Orientation in XMP.
# \C is any byte: RE2 reads the pattern as UTF-8, and "." does not match bytes that are not.
_PNG_METADATA = r"\C*(eXIf|Raw profile type exif|XML:com\.adobe\.xmp)\C*"


def png_metadata(data: tf.Tensor) -> tf.Tensor:
    """Whether a PNG has a chunk that may carry an orientation (bool scalar). One RE2 scan of the
    file; a false match (the four bytes inside compressed data) costs only speed, since such a
    file is decoded by Pillow, which reads the chunks properly."""
    return tf.strings.regex_full_match(data, _PNG_METADATA)


def with_webp_alpha_flag(data: tf.Tensor) -> tf.Tensor:
    """The file with its VP8X alpha flag set.

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
    """[256, 3] RGB colours of an 8-bit BMP, which TensorFlow decodes as bare palette indices.

    The palette follows the 14-byte file header and the DIB header (whose first 4 bytes are its
    size), one blue, green, red, unused quad per colour.
    """
    values = _window(data, 0, HEAD_BYTES)
    quads = tf.reshape(_window(data, 14 + _uint(values, 14, 4, True), 1024), (256, 4))
    return tf.cast(tf.reverse(quads[:, :3], axis=[1]), tf.uint8)


def exif_orientation(data: tf.Tensor, header: Header) -> tf.Tensor:
    """EXIF orientation of a JPEG, 1 (upright) to 8, from tag 0x0112 in IFD0 of its APP1 segment
    (`Header.exif_at`).

    The "Exif\\0\\0" signature must follow the segment's FF E1 marker and length. Then comes a
    TIFF block: II (little-endian) or MM (big-endian), 42, the offset of IFD0, which is an entry
    count and 12-byte entries (tag, type, count, value). A missing or malformed tag means 1, as
    in Pillow's ImageOps.exif_transpose.
    """
    def from_app1():
        app1 = _window(data, header.exif_at, 18)  # FF E1, the segment length, "Exif\0\0", the TIFF header
        little, big = tf.unstack(_starts_with(app1, (b"\xff\xe1??Exif\0\0II",
                                                     b"\xff\xe1??Exif\0\0MM")))
        ifd = _window(data, header.exif_at + 10 + _uint(app1, 14, 4, little), 2 + 12 * _IFD_ENTRIES)
        slots = tf.range(_IFD_ENTRIES, dtype=tf.int64)
        tags, values = tf.unstack(_uint(ifd, [2 + 12 * slots, 10 + 12 * slots], 2, little))
        is_orientation = (tags == 0x0112) & (slots < _uint(ifd, 0, 2, little))
        orientation = tf.reduce_max(tf.where(is_orientation, values, 0))
        return tf.where((little | big) & (orientation >= 1) & (orientation <= 8), orientation, 1)

    # A JPEG without EXIF skips the parse, whose few dozen small ops cost more than the search.
    return tf.cond(header.exif_at >= 0, from_app1, lambda: tf.constant(1, tf.int64))


_END_MARKERS = {JPEG: b"\xff\xd9", PNG: b"IEND\xaeB`\x82", GIF: b";"}


def ends_early(data: bytes, kind: int) -> bool:
    """Whether a file stops before its format's end: JPEG's EOI marker, PNG's IEND chunk, GIF's
    trailer, or the length its RIFF (WebP) or BMP header declares.

    Plain Python on purpose: only `diagnose` asks, about files that have already failed, to say
    "truncated" rather than the decoder's message. (TensorFlow 2.21 refuses every truncated
    JPEG, PNG, GIF, BMP and WebP by itself, so the pipeline needs no such check.)
    """
    if kind in _END_MARKERS:
        return not data.endswith(_END_MARKERS[kind])
    if kind == WEBP:
        return len(data) < 8 + int.from_bytes(data[4:8], "little")
    if kind == BMP:
        return len(data) < int.from_bytes(data[2:6], "little")
    return False
