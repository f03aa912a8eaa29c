"""Every image a viewer opens is scored, upright, with the pixels Pillow shows.

A representative corpus is written with Pillow (and by hand where Pillow does not write a
variant: 4-bit, RLE, 16-bit and OS/2 BMPs, a TIFF bomb) and scored end to end by a model that
returns its own input, so each ok row carries the exact model input it was given: compared,
file by file, with Pillow's `exif_transpose(...).convert("RGB")` resized the same way.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pyarrow.dataset as ds
import pytest
import tensorflow as tf
from PIL import Image, ImageOps, features

from support import corpus
from batch_infer.cli import main

SIZE = 16
ORIENTATIONS = range(1, 9)


def save_echo_model(path):
    """float32 [None, 16, 16, 3] raw pixels in; the same pixels / 255 out, as 768 "scores"."""
    module = tf.Module()
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    function = tf.function(lambda images: {"pixels": tf.reshape(images / 255.0, (-1, SIZE * SIZE * 3))},
                           input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": function})
    return str(path)


@pytest.fixture(scope="module")
def echo_model(tmp_path_factory):
    return save_echo_model(tmp_path_factory.mktemp("echo") / "model")


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def palette_picture(colours: int) -> Image.Image:
    return corpus.picture(3, 24, 40).quantize(colours)


def bmp(width: int, height: int, bits: int, rows: list[bytes], palette: list[tuple[int, int, int]] = (),
        compression: int = 0, core_header: bool = False) -> bytes:
    """A BMP written by hand: rows bottom-up, each padded to 4 bytes (unless RLE-encoded)."""
    if core_header:  # OS/2 1.x: BITMAPCOREHEADER, 16-bit sizes, 3-byte palette entries
        info = struct.pack("<IHHHH", 12, width, height, 1, bits)
        colours = b"".join(bytes((b, g, r)) for r, g, b in palette)
    else:
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, 0, 2835, 2835,
                           len(palette), 0)
        colours = b"".join(bytes((b, g, r, 0)) for r, g, b in palette)
    pixels = b"".join(rows)
    offset = 14 + len(info) + len(colours)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + colours + pixels


def padded(row: bytes) -> bytes:
    return row + b"\0" * (-len(row) % 4)


def hand_made_bmps() -> dict[str, bytes]:
    image = palette_picture(16)
    width, height = image.size
    indices = np.asarray(image)
    palette = [tuple(image.getpalette()[3 * i:3 * i + 3]) for i in range(16)]
    bottom_up = indices[::-1]
    four_bit = [padded(bytes((int(row[x]) << 4) | int(row[x + 1]) for x in range(0, width, 2)))
                for row in bottom_up]
    rle8 = [b"".join(bytes((1, int(value))) for value in row) + b"\0\0" for row in bottom_up]
    rle8[-1] = rle8[-1][:-2] + b"\0\1"  # end of bitmap
    rgb = np.asarray(corpus.picture(4, 24, 40))
    sixteen = [padded(b"".join(struct.pack("<H", (int(r) >> 3) << 10 | (int(g) >> 3) << 5 | int(b) >> 3)
                               for r, g, b in row)) for row in rgb[::-1]]
    os2 = [padded(row[:, ::-1].tobytes()) for row in rgb[::-1]]  # BGR
    return {
        "bmp/4-bit palette.bmp": bmp(width, height, 4, four_bit, palette),
        "bmp/rle8.bmp": bmp(width, height, 8, rle8, palette + [(0, 0, 0)] * 240, compression=1),
        "bmp/16-bit.bmp": bmp(40, 24, 16, sixteen),
        "bmp/os2 24-bit.bmp": bmp(40, 24, 24, os2, core_header=True),
        "bmp/os2 palette.bmp": bmp(width, height, 8, [padded(row.tobytes()) for row in bottom_up],
                                   palette + [(0, 0, 0)] * 240, core_header=True),
    }


def tiff_claiming(width: int, height: int) -> bytes:
    """A TIFF whose header declares width x height of 8-bit gray, with a few bytes of strip."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + bytes(16)


def good_files() -> dict[str, bytes]:
    image = corpus.picture(5, 24, 40)
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(image.size))
    sixteen = np.asarray(image.convert("L"), np.uint16) * 257 + 100
    pages = [corpus.picture(seed, 24, 40) for seed in (6, 7, 8)]
    transparent = palette_picture(8)
    files = {
        "bmp/1-bit.bmp": encode(image.convert("1"), "BMP"),
        "bmp/8-bit palette.bmp": encode(palette_picture(200), "BMP"),
        "bmp/gray.bmp": encode(image.convert("L"), "BMP"),
        "bmp/24-bit.bmp": encode(image, "BMP"),
        "bmp/32-bit.bmp": encode(rgba, "BMP"),
        **hand_made_bmps(),
        **{f"webp/orientation {o}.webp": encode(image, "WEBP", lossless=True, exif=exif(o)) for o in ORIENTATIONS},
        **{f"png/orientation {o}.png": encode(image, "PNG", exif=exif(o)) for o in ORIENTATIONS},
        **{f"tiff/orientation {o}.tif": encode(image, "TIFF", exif=exif(o)) for o in ORIENTATIONS},
        "png/orientation 0 (invalid).png": encode(image, "PNG", exif=exif(0)),
        "webp/orientation 9 (invalid).webp": encode(image, "WEBP", lossless=True, exif=exif(9)),
        "tiff/16-bit gray.tif": encode(Image.fromarray(sixteen), "TIFF"),
        "tiff/16-bit gray.png": encode(Image.fromarray(sixteen), "PNG"),
        "tiff/rgba.tiff": encode(rgba, "TIFF"),
        "tiff/cmyk.tif": encode(image.convert("CMYK"), "TIFF"),
        "tiff/lzw.tif": encode(image, "TIFF", compression="tiff_lzw"),
        "tiff/jpeg.tif": encode(image, "TIFF", compression="jpeg"),
        "tiff/palette.tif": encode(palette_picture(16), "TIFF"),
        "tiff/1-bit.tif": encode(image.convert("1"), "TIFF"),
        "tiff/multi-page.tif": encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]),
        "tiff/named as jpeg.jpg": encode(image, "TIFF"),
        "gif/transparent.gif": encode(transparent, "GIF", transparency=2),
        "gif/opaque.gif": encode(transparent, "GIF"),
    }
    if features.check("avif"):
        files["avif/photo.avif"] = encode(image, "AVIF", quality=100)
    return files


def reference(data: bytes) -> np.ndarray:
    """What the model should get: Pillow's upright first frame, resized as model_input resizes.
    16-bit gray keeps its high byte (Pillow's own convert clips it to white) and a GIF's
    transparent pixels are black, as the README says."""
    with Image.open(io.BytesIO(data)) as image:
        transparent = image.info.get("transparency") if image.format == "GIF" else None
        upright = ImageOps.exif_transpose(image)
        if upright.mode.startswith("I;16"):
            pixels = np.repeat((np.asarray(upright, np.int64) >> 8).astype(np.uint8)[..., None], 3, axis=2)
        else:
            pixels = np.asarray(upright.convert("RGB"))
            if transparent is not None:
                pixels = np.where((np.asarray(upright) == transparent)[..., None], 0, pixels)
    if pixels.shape[:2] == (SIZE, SIZE):
        return pixels.astype(np.float32)
    return tf.image.resize(pixels, (SIZE, SIZE), antialias=True).numpy()


def model_inputs(output: str) -> dict[str, tuple[np.ndarray | None, dict]]:
    """{path: (the model input the echo model was given, the row)} from the top-768 lists."""
    result = {}
    for row in ds.dataset(output).to_table().to_pylist():
        pixels = None
        if row["status"] == "ok":
            flat = np.zeros(SIZE * SIZE * 3, np.float32)
            flat[np.asarray(row["top_k_labels"], int)] = row["top_k_scores"]
            pixels = flat.reshape(SIZE, SIZE, 3) * 255.0
        result[row["path"]] = (pixels, row)
    return result


def score(root, output, model, *extra) -> dict:
    code = main(["run", "--model", model, "--input", str(root), "--output", str(output), "--quiet",
                 "--top-k", str(SIZE * SIZE * 3), "--batch-size", "8",
                 "--extensions", "bmp,png,webp,tif,tiff,jpg,gif,avif", *extra])
    assert code == 0
    return model_inputs(str(output))


@pytest.fixture(scope="module")
def scored(tmp_path_factory, echo_model):
    root = tmp_path_factory.mktemp("formats")
    files = good_files()
    files["tiff/bomb.tif"] = tiff_claiming(100_000, 100_000)
    files["tiff/over max-pixels.tif"] = tiff_claiming(2000, 1000)
    files["tiff/broken.tif"] = encode(corpus.picture(), "TIFF")[:60]
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return files, score(root, tmp_path_factory.mktemp("out") / "out", echo_model, "--max-pixels", "1000000")


@pytest.mark.parametrize("path", sorted(good_files()))
def test_model_input_is_pillows_upright_image(scored, path):
    files, rows = scored
    pixels, row = rows[path]
    assert row["status"] == "ok", row["error"]
    expected = reference(files[path])
    lossy = path.endswith((".avif", "jpeg.tif"))  # two decoders of one lossy stream may differ a little
    np.testing.assert_allclose(pixels, expected, atol=6.0 if lossy else 0.01)


def test_rows_name_their_decoder(scored):
    _, rows = scored
    decoders = {path: row["decoder"] for path, (_, row) in rows.items()}
    assert decoders["bmp/24-bit.bmp"] == "tensorflow"
    assert decoders["png/orientation 1.png"] == "pillow"  # it has an eXIf chunk, so Pillow turns it
    assert decoders["bmp/rle8.bmp"] == decoders["tiff/named as jpeg.jpg"] == "pillow"
    assert all(decoder in ("tensorflow", "pillow") for path, decoder in decoders.items()
               if rows[path][1]["status"] == "ok")
    assert all(decoder is None for path, decoder in decoders.items() if rows[path][1]["status"] == "error")


def test_rows_pillow_decoded_have_their_stored_size_content_hash_and_phash(scored):
    """As rows the graph decoded have them: the size before any turn, the same FarmHash of the
    bytes (so an exact copy of a TIFF is found), and a fingerprint."""
    files, rows = scored
    pillow = {path: row for path, (_, row) in rows.items() if row["decoder"] == "pillow"}
    assert len(pillow) >= 10
    for path, row in pillow.items():
        with Image.open(io.BytesIO(files[path])) as image:
            assert (row["width"], row["height"]) == image.size, path
        assert row["content_hash"] == tf.fingerprint(tf.constant([files[path]]))[0].numpy().tobytes().hex()
        assert len(row["phash"]) == 16


def test_tiff_bombs_and_broken_tiffs_are_refused(scored):
    _, rows = scored
    assert rows["tiff/bomb.tif"][1]["error"].startswith("too-large: ")
    assert rows["tiff/over max-pixels.tif"][1]["error"] == "too-large: 2000x1000"
    assert rows["tiff/broken.tif"][1]["error"].startswith("decode: ")


def test_without_exif_transpose_webp_stays_as_stored(tmp_path, echo_model):
    image = corpus.picture(5, 24, 40)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "turned.webp").write_bytes(encode(image, "WEBP", lossless=True, exif=exif(6)))
    rows = score(tmp_path / "in", tmp_path / "out", echo_model, "--no-exif-transpose")
    pixels, row = rows["turned.webp"]
    assert row["decoder"] == "tensorflow"
    np.testing.assert_allclose(pixels, reference(encode(image, "PNG")), atol=0.01)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF")
def test_heic_without_the_extra_says_how_to_get_it(tmp_path, echo_model):
    try:
        import pillow_heif  # noqa: F401
        pytest.skip("the heif extra is installed")
    except ImportError:
        pass
    data = bytearray(encode(corpus.picture(), "AVIF"))
    data[8:12] = b"heic"  # a HEIC container as far as the magic bytes go
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "phone.heic").write_bytes(bytes(data))
    code = main(["run", "--model", echo_model, "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out"), "--quiet", "--extensions", "heic"])
    assert code == 0
    row = ds.dataset(str(tmp_path / "out")).to_table().to_pylist()[0]
    assert row["status"] == "error" and "batch-infer[heif]" in row["error"]


def test_libjpeg_lines_become_counted_log_lines(tmp_path, capfd, echo_model):
    data = bytearray(encode(corpus.picture(1, 64, 64), "JPEG", quality=90))
    middle = len(data) * 3 // 4
    data[middle:middle + 3] = b"\x00\xff\xd3"  # an RST marker where none belongs
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "corrupt.jpg").write_bytes(bytes(data))
    capfd.readouterr()
    assert main(["run", "--model", echo_model, "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out")]) == 0
    out, err = capfd.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["warnings"] >= 1
    assert "batch-infer: decoder said: Corrupt JPEG data" in err
    assert not [line for line in err.splitlines() if line.startswith("Corrupt JPEG")]


def test_pngs_that_may_say_how_to_turn_them_are_found_by_their_chunks():
    """What Pillow's getexif reads (an eXIf chunk, EXIF as hex text, XMP), before or after the
    image data; the same words anywhere else do not count."""
    import zlib

    from PIL import PngImagePlugin

    from batch_infer.decode.headers import png_may_be_turned

    image = corpus.picture(3, 16, 16)

    def with_text(kind: str, keyword: str, text: str = "x") -> bytes:
        info = PngImagePlugin.PngInfo()
        (info.add_itxt if kind == "iTXt" else info.add_text)(keyword, text, zip=kind == "zTXt")
        return encode(image, "PNG", pnginfo=info)

    def chunk_before_end(data: bytes, kind: bytes, body: bytes) -> bytes:
        chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        return data[:-12] + chunk + data[-12:]

    plain = encode(image, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    assert png_may_be_turned(encode(image, "PNG", exif=exif.tobytes()))
    assert png_may_be_turned(with_text("tEXt", "Raw profile type exif"))
    assert png_may_be_turned(with_text("zTXt", "Raw profile type exif"))
    assert png_may_be_turned(with_text("iTXt", "XML:com.adobe.xmp"))
    assert png_may_be_turned(chunk_before_end(plain, b"eXIf", exif.tobytes()))
    assert not png_may_be_turned(plain)
    assert not png_may_be_turned(with_text("tEXt", "Comment", "eXIf Raw profile type exif XML:com.adobe.xmp"))
    assert not png_may_be_turned(plain[:20])  # cut inside IHDR


def test_high_bit_depth_is_one_rule_for_png_tiff_and_float_tiff(tmp_path, echo_model):
    """12-bit samples stored in a 16-bit PNG, a 16-bit TIFF, and as floats 0..1 in a float TIFF
    give the same model input, read as 12 bits (not black); a 16-bit photo that uses the whole
    range keeps its high byte, as TensorFlow's PNG decoder gives it."""
    twelve = (np.arange(256).reshape(16, 16) * 16 + 7).astype(np.uint16)  # 7 .. 4087
    whole = (np.arange(256).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535
    files = {"12 in 16-bit.png": tf.io.encode_png(twelve[..., None]).numpy(),
             "12 in 16-bit.tif": encode(Image.fromarray(twelve), "TIFF"),
             "12 as float.tif": encode(Image.fromarray((twelve / 4096).astype(np.float32)), "TIFF"),
             "whole 16-bit.png": tf.io.encode_png(whole[..., None]).numpy()}
    for name, data in files.items():
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
    rows = score(tmp_path / "in", tmp_path / "out", echo_model)
    for name in files:
        pixels, row = rows[name]
        assert row["decoder"] == "pillow", name
        expected = (np.arange(256).reshape(16, 16) if name.startswith("12") else
                    tf.io.decode_png(files[name], dtype=tf.uint8).numpy()[..., 0])
        np.testing.assert_allclose(pixels, np.repeat(expected[..., None], 3, axis=2), atol=0.01, err_msg=name)


def test_exif_orientation_is_read_past_empty_gps_and_interop_ifds(tmp_path, echo_model):
    image = corpus.picture(5, 24, 40)
    files = {}
    for name, extra in (("empty GPS IFD", {0x8825: {}}), ("empty GPS and interop IFDs", {0x8825: {}, 0xA005: {}})):
        tags = exif(6)
        for tag, value in extra.items():
            tags[tag] = value
        files[f"{name}.jpg"] = encode(image, "JPEG", quality=95, exif=tags)
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{name}.jpg").write_bytes(files[f"{name}.jpg"])
    rows = score(tmp_path / "in", tmp_path / "out", echo_model)
    for name, data in files.items():
        np.testing.assert_allclose(rows[name][0], reference(data), atol=12.0, err_msg=name)  # two JPEG decoders
        assert not np.allclose(rows[name][0], reference(encode(image, "JPEG", quality=95)), atol=12.0)
