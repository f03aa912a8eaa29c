"""A messy image folder built from real files: every case batch-infer must survive, and the row
each one must give.

Images are encoded with Pillow (a dev dependency only); bombs and broken files are crafted byte by
byte, since no encoder writes them on purpose. `build` returns {path column value: expectation},
where the expectation is "ok" or the start of the error reason.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import tensorflow as tf
from PIL import Image

from .images import random_pixels

# The limits the end-to-end run uses, small so that the bombs stay small.
MAX_PIXELS = 1_000_000
MAX_FILE_MB = 4


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def picture(seed: int = 0, height: int = 24, width: int = 40) -> Image.Image:
    """Smooth random blobs: survives JPEG, and no two of its 8 flips and turns look alike."""
    return Image.fromarray(random_pixels(seed, height, width))


def frames(count: int, height: int = 24, width: int = 40) -> list[Image.Image]:
    return [picture(seed, height, width) for seed in range(count)]


def animation(images: list[Image.Image], format: str, **options) -> bytes:
    return encode(images[0], format, save_all=True, append_images=images[1:], **options)


def with_orientation(image: Image.Image, orientation: int, quality: int = 95) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=quality, exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    """16-bit RGB, which Pillow cannot write, so TensorFlow's encoder: the picture as high bytes
    and 200 as every low byte, so the 8-bit result must be the picture (the high byte kept)."""
    pixels = np.asarray(picture(), np.uint16) * 256 + 200
    return tf.io.encode_png(pixels).numpy()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A one-colour palette PNG: under 2 MB on disk, width * height * 3 bytes once decoded."""
    compressor = zlib.compressobj(1)
    rows = b"\0" * ((width + 1) * 500)  # each row: filter type 0, then one palette index per pixel
    idat = b"".join(compressor.compress(rows) for _ in range(height // 500)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
            + png_chunk(b"PLTE", b"\x80\x80\x80") + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def gif_oversized_frame(screen: int, frame: int) -> bytes:
    """A GIF whose logical screen is small but whose one frame declares itself huge."""
    header = b"GIF89a" + struct.pack("<HH", screen, screen) + bytes([0x80, 0, 0]) + b"\0\0\0\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHH", 0, 0, frame, frame) + b"\0"
    lzw = bytes([2, 1, 0x2C, 0])  # code size 2, one sub-block holding the codes clear and end
    return header + descriptor + lzw + b";"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to declare another size."""
    data = bytearray(encode(picture(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(picture(), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """An animated, so extended (VP8X), WebP whose canvas is patched to another size."""
    data = bytearray(animation(frames(2), "WEBP"))
    data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(data)


def half(data: bytes) -> bytes:
    return data[:len(data) // 2]


def good_files() -> dict[str, bytes]:
    """Every format and layout that must decode, whatever its name says."""
    image = picture()
    gray = image.convert("L")
    return {
        "formats/png named as.jpg": encode(image, "PNG"),
        "formats/jpeg named as.png": encode(image, "JPEG"),
        "formats/baseline.jpg": encode(image, "JPEG", quality=90),
        "formats/progressive.jpeg": encode(image, "JPEG", quality=90, progressive=True),
        "formats/gray.jpg": encode(gray, "JPEG"),
        "formats/cmyk.jpg": encode(image.convert("CMYK"), "JPEG"),
        "formats/UPPER CASE.JPG": encode(image, "JPEG"),
        "formats/motion photo.jpg": encode(image, "JPEG") + b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 4,
        "formats/rgb.png": encode(image, "PNG"),
        "formats/gray.png": encode(gray, "PNG"),
        "formats/gray alpha.png": encode(image.convert("LA"), "PNG"),
        "formats/palette.png": encode(image.quantize(16), "PNG"),
        "formats/rgba.png": encode(image.convert("RGBA"), "PNG"),
        "formats/16-bit.png": sixteen_bit_png(),
        "formats/16-bit gray.png": encode(Image.fromarray(np.asarray(gray, np.uint16) * 257), "PNG"),
        "formats/still.gif": encode(image, "GIF"),
        "formats/animated.gif": animation(frames(3), "GIF"),
        "formats/lossy.webp": encode(image, "WEBP"),
        "formats/lossless.webp": encode(image, "WEBP", lossless=True),
        "formats/alpha.webp": encode(image.convert("RGBA"), "WEBP"),
        "formats/animated.webp": animation(frames(3), "WEBP"),
        "formats/animated alpha.webp": animation([f.convert("RGBA") for f in frames(3)], "WEBP"),
        "formats/24-bit.bmp": encode(image, "BMP"),
        "formats/32-bit.bmp": encode(image.convert("RGBA"), "BMP"),
        "formats/palette.bmp": encode(image.quantize(16), "BMP"),
        "formats/gray.bmp": encode(gray, "BMP"),
        "formats/1-bit.bmp": encode(image.convert("1"), "BMP"),  # decoded by Pillow
        "formats/tiff named.png": encode(image, "TIFF"),  # by content, as every file
        **{f"exif/orientation {o}.jpg": with_orientation(image, o) for o in range(1, 9)},
        "names/with space.jpg": encode(image, "JPEG"),
        "names/new\nline.jpg": encode(image, "JPEG"),
        "names/ünïcødé 写真.jpg": encode(image, "JPEG"),
        "names/-leading-dash.jpg": encode(image, "JPEG"),
        "names/--help.jpg": encode(image, "JPEG"),
    }


def bad_files() -> dict[str, tuple[bytes, str]]:
    """Files that must become error rows: {path: (bytes, reason prefix)}."""
    jpeg = encode(picture(1, 64, 64), "JPEG", quality=90)
    progressive = encode(picture(1, 64, 64), "JPEG", quality=90, progressive=True)
    scan = jpeg.index(b"\xff\xda")
    truncated = "decode: truncated"
    unknown = "decode: not a JPEG, PNG, GIF, BMP, WebP, TIFF, HEIC or AVIF file"
    return {
        "bad/empty.jpg": (b"", "decode: empty file"),
        "bad/random bytes.jpg": (np.random.default_rng(0).bytes(3000), unknown),
        "bad/saved web page.jpg": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", unknown),
        "bad/jpeg cut in header.jpg": (jpeg[:scan - 10], truncated),
        "bad/jpeg cut in scan.jpg": (jpeg[:(scan + len(jpeg)) // 2], truncated),
        "bad/jpeg cut before EOI.jpg": (jpeg[:-2], truncated),
        "bad/jpeg cut in EOI.jpg": (jpeg[:-1], truncated),
        "bad/progressive cut.jpg": (progressive[:len(progressive) * 2 // 3], truncated),
        "bad/png cut.png": (half(encode(picture(), "PNG")), truncated),
        "bad/gif cut.gif": (half(encode(picture(), "GIF")), truncated),
        "bad/webp cut.webp": (half(encode(picture(), "WEBP")), truncated),
        "bad/bmp cut.bmp": (half(encode(picture(), "BMP")), truncated),
        "bombs/png 20000x20000.png": (png_bomb(20000, 20000), "too-large: 20000x20000"),
        "bombs/jpeg header.jpg": (jpeg_claiming(60000, 50000), "too-large: 60000x50000"),
        "bombs/bmp header.bmp": (bmp_claiming(30000, -30000), "too-large: 30000x30000"),
        "bombs/webp canvas.webp": (webp_claiming(16000, 9000), "too-large: 16000x9000"),
        "bombs/gif frames.gif": (animation(frames(8, 400, 400), "GIF"),  # each frame is under the limit
                                 "too-large: 1280000 pixels in 8 frames"),
        "bombs/gif frame beyond screen.gif": (gif_oversized_frame(16, 2000),
                                              "too-large: 4000000 pixels in 1 frame"),
    }


def build(root: str) -> dict[str, str]:
    """Writes the corpus under `root` (which must not exist yet, or be empty) and returns
    {path: "ok" or error reason prefix} for every row the run must write."""
    expected = {}
    for path, data in good_files().items():
        _write(root, path, data)
        expected[path] = "ok"
    for path, (data, reason) in bad_files().items():
        _write(root, path, data)
        expected[path] = reason
    expected.update(_file_system_cases(root))
    return expected


def _write(root: str, path: str, data: bytes) -> None:
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as handle:
        handle.write(data)


def _file_system_cases(root: str) -> dict[str, str]:
    """Symlinks in and out of the root, loops, a FIFO, directories that look like files, a file
    over --max-file-mb, a name that is not UTF-8, and a device file when running as root."""
    fs = os.path.join(root, "fs")
    os.makedirs(os.path.join(fs, "folder.jpg"))
    outside = os.path.join(os.path.dirname(root), "outside.jpg")
    _write(os.path.dirname(root), "outside.jpg", encode(picture(), "JPEG"))
    _write(fs, "folder.jpg/inside.png", encode(picture(), "PNG"))
    os.symlink(outside, os.path.join(fs, "link out.jpg"))
    os.symlink(os.path.join(fs, "folder.jpg", "inside.png"), os.path.join(fs, "link in.png"))
    os.symlink("missing.jpg", os.path.join(fs, "dangling.jpg"))
    os.symlink("loop.jpg", os.path.join(fs, "loop.jpg"))
    os.symlink("folder.jpg", os.path.join(fs, "link to folder.jpg"))
    os.symlink(fs, os.path.join(fs, "folder.jpg", "back up"))  # a directory loop
    os.mkfifo(os.path.join(fs, "pipe.jpg"))
    with open(os.path.join(fs, "huge.jpg"), "wb") as handle:
        handle.truncate((MAX_FILE_MB + 1) * 2**20)  # sparse: costs no disk
    with open(os.path.join(os.fsencode(fs), b"latin-1 caf\xe9.jpg"), "wb") as handle:
        handle.write(encode(picture(), "JPEG"))
    expected = {
        "fs/folder.jpg/inside.png": "ok",
        "fs/link in.png": "ok",
        "fs/link out.jpg": "read: symlink points outside the input root",
        "fs/dangling.jpg": "read: No such file or directory",
        "fs/loop.jpg": "read: Too many levels of symbolic links",
        "fs/pipe.jpg": "read: not a regular file",
        "fs/huge.jpg": f"too-large: {MAX_FILE_MB + 1} MB file",
        "fs/latin-1 caf\\xe9.jpg": "ok",
    }
    try:
        os.mknod(os.path.join(fs, "device.jpg"), 0o600 | 0o020000, os.makedev(1, 3))  # /dev/null
        expected["fs/device.jpg"] = "read: not a regular file"
    except PermissionError:
        pass
    return expected
