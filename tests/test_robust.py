"""One bad file must never stop a nightly run, hang it, eat its memory, or read outside the input.

A corpus of every messy case (tests/corpus.py) goes end to end through `batch-infer run`; the
decoded pixels of every format are checked against Pillow's; bombs are checked for memory in a
separate process; and hypothesis mutates real files to look for anything that escapes.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from support import corpus, models
from conftest import read_metadata, read_output, skip_or_fail
from batch_infer.cli import main
from batch_infer.listing import ListedFile
from batch_infer.decode import diagnose as diagnosis, headers, pillow
from batch_infer.decode.diagnose import diagnose
from batch_infer.decode.graph import decode
from batch_infer.decode.options import DecodeOptions
from batch_infer.model import InputSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMITS = ["--max-pixels", str(corpus.MAX_PIXELS), "--max-file-mb", str(corpus.MAX_FILE_MB)]
OPTIONS = DecodeOptions(corpus.MAX_PIXELS, corpus.MAX_FILE_MB, exif_transpose=True, scaled_decode=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(models.save_float_probabilities(tmp_path_factory.mktemp("robust") / "model"))


def run(*args: str) -> int:
    return main(["run", "--quiet", *args])


def pixels_spec(height: int, width: int, channels: int = 3) -> InputSpec:
    """uint8 at the image's own size: decode returns the decoded pixels untouched."""
    return InputSpec(False, (height, width), channels, tf.uint8, "raw")


def decoded(data: bytes, height: int, width: int, channels: int = 3,
            exif_transpose: bool = True) -> np.ndarray:
    options = DecodeOptions(corpus.MAX_PIXELS, corpus.MAX_FILE_MB, exif_transpose, scaled_decode=True)
    return decode(tf.constant(data), pixels_spec(height, width, channels), options).numpy()


# --- the corpus, end to end --------------------------------------------------------------------


def test_every_file_gives_one_row_with_its_reason(tmp_path, model):
    root = str(tmp_path / "input")
    expected = corpus.build(root)
    output = str(tmp_path / "out")

    assert run("--model", model, "--input", root, "--output", output, *LIMITS) == 0

    rows = read_output(output).to_dict("records")
    assert sorted(row["path"] for row in rows) == sorted(expected)
    wrong = {row["path"]: (row["status"], row["error"]) for row in rows
             if not _matches(row, expected[row["path"]])}
    assert wrong == {}
    metadata = read_metadata(output)
    assert metadata["exif_transpose"] == "true"
    assert metadata["max_pixels"] == str(corpus.MAX_PIXELS)


def _matches(row: dict, expectation: str) -> bool:
    if expectation == "ok":
        return row["status"] == "ok" and pd.isna(row["error"]) and 0.0 <= row["score"] <= 1.0
    return row["status"] == "error" and row["error"].startswith(expectation) and pd.isna(row["score"])


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _user_namespace_works() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "--user", "true"],
                                                            capture_output=True).returncode == 0


def unprivileged(argv: list[str]) -> tuple[list[str], object, bool]:
    """(argv, preexec_fn, as_nobody) that run argv as a user whom chmod 000 stops.

    Not root: as it is. Root: best in a new user namespace (`unshare --user`), where root keeps
    owner access to its own files, so the checkout and its virtualenv stay readable wherever they
    lie, but loses the override that reads any file. Else as nobody, through setpriv, runuser or a
    forked child that drops to nobody before exec."""
    if os.geteuid() != 0:
        return argv, None, False
    if _user_namespace_works():
        return ["unshare", "--user", *argv], None, False
    uid, gid = _nobody()
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv], None, True
    if shutil.which("runuser"):
        return ["runuser", "-u", pwd.getpwuid(uid).pw_name, "--", *argv], None, True

    def drop_to_nobody():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return argv, drop_to_nobody, True


@pytest.fixture
def unprivileged_dir():
    """An empty directory that the user of `unprivileged` owns. (tmp_path will not do for nobody:
    it lies in a 0700 directory of whoever runs the tests.)"""
    path = Path(tempfile.mkdtemp(prefix="batch-infer-"))
    yield path
    for folder, names, _ in os.walk(path):
        for name in names:
            os.chmod(os.path.join(folder, name), 0o755)  # so that the owner can remove what is inside
    shutil.rmtree(path)


def test_unreadable_file_is_an_error_row_and_unreadable_folder_a_warning(unprivileged_dir, model):
    work = unprivileged_dir
    shutil.copytree(model, work / "model")
    for folder, names, files in os.walk(work / "model"):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    root = work / "input"
    (root / "locked folder").mkdir(parents=True)
    (root / "locked folder" / "unseen.png").write_bytes(corpus.encode(corpus.picture(), "PNG"))
    (root / "locked.png").write_bytes(corpus.encode(corpus.picture(), "PNG"))
    os.chmod(root, 0o755)
    os.chmod(root / "locked.png", 0)
    os.chmod(root / "locked folder", 0)
    argv, preexec_fn, as_nobody = unprivileged([sys.executable, "-m", "batch_infer", "run",
                                                "--model", str(work / "model"),
                                                "--input", str(root), "--output", str(work / "out")])
    if as_nobody:
        os.chown(work, *_nobody())
        probe = subprocess.run([*argv[:argv.index(sys.executable) + 1], "-c", "import batch_infer"],
                               preexec_fn=preexec_fn, capture_output=True, cwd=work)
        if probe.returncode != 0:
            skip_or_fail(f"nobody cannot read this checkout or its virtualenv ({sys.prefix}); "
                         "run the tests from a directory everyone may enter")
    try:
        finished = subprocess.run(argv, preexec_fn=preexec_fn, cwd=work, env={**os.environ, "HOME": str(work)},
                                  capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(root / "locked folder", 0o755)
    assert finished.returncode == 0, finished.stderr
    [row] = read_output(str(work / "out")).to_dict("records")
    assert row["path"] == "locked.png" and row["error"].startswith("read: ")
    assert "cannot list" in finished.stderr


def test_bomb_is_refused_from_its_header_in_bounded_memory(tmp_path, model):
    """A 20000x20000 PNG (1.7 MB) takes 1.2 GB to decode. Refused, the run adds next to nothing
    to the memory TensorFlow itself takes. Measured in a fresh process, since ru_maxrss is a
    high-water mark: once after importing TensorFlow, once after the run."""
    root = tmp_path / "input"
    root.mkdir()
    (root / "bomb.png").write_bytes(corpus.png_bomb(20000, 20000))
    output = str(tmp_path / "out")
    script = ("import json, resource, sys; from batch_infer.tf_import import tf; "
              "from batch_infer.cli import main; "
              "mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; before = mb(); "
              "code = main(sys.argv[1:]); print(json.dumps({'code': code, 'before': before, 'peak': mb()}))")
    finished = subprocess.run([sys.executable, "-c", script, "run", "--quiet", "--device", "cpu", "--model", model,
                               "--input", str(root), "--output", output],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, finished.stderr
    [row] = read_output(output).to_dict("records")
    assert row["error"] == "too-large: 20000x20000"
    print(f"peak RSS {result['peak']:.0f} MB, of which TensorFlow's import {result['before']:.0f} MB")
    assert result["peak"] - result["before"] < 500


def test_no_exif_transpose_scores_pixels_as_stored(tmp_path, model):
    """A JPEG of each EXIF orientation next to a PNG of the same pixels turned upright:
    TensorFlow's decode of the stored pixels, turned by Pillow's exif_transpose. Both hold the
    very same pixels, so turned upright they score alike to float rounding. (A separately encoded
    upright JPEG would only score alike to about 1e-2, which a wrong turn also meets.) Left as
    stored, the JPEGs score otherwise. The picture is not square, so the turn must come before
    the resize to the model's 16x16."""
    root = tmp_path / "input"
    root.mkdir()
    for orientation in range(1, 9):
        data = corpus.with_orientation(corpus.picture(3), orientation)
        (root / f"{orientation} stored.jpg").write_bytes(data)
        stored = Image.fromarray(decoded(data, 24, 40, exif_transpose=False))
        stored.getexif()[0x0112] = orientation
        (root / f"{orientation} upright.png").write_bytes(corpus.encode(ImageOps.exif_transpose(stored), "PNG"))
    rows = {}
    for flag in ("--exif-transpose", "--no-exif-transpose"):
        output = str(tmp_path / flag)
        assert run("--model", model, "--input", str(root), "--output", output, flag) == 0
        rows[flag] = read_output(output).set_index("path")
        assert read_metadata(output)["exif_transpose"] == ("true" if flag == "--exif-transpose" else "false")
    turned, as_stored = rows["--exif-transpose"], rows["--no-exif-transpose"]
    assert (turned.status == "ok").all() and (as_stored.status == "ok").all()
    for orientation in range(1, 9):
        jpeg, reference = turned.loc[f"{orientation} stored.jpg"], turned.loc[f"{orientation} upright.png"]
        assert list(jpeg.top_k_labels) == list(reference.top_k_labels), orientation
        np.testing.assert_allclose(jpeg.top_k_scores, reference.top_k_scores, rtol=1e-4, atol=1e-5,
                                   err_msg=f"orientation {orientation}")
        kept = as_stored.loc[f"{orientation} stored.jpg"].top_k_scores
        assert np.allclose(kept, jpeg.top_k_scores, rtol=1e-4, atol=1e-5) == (orientation == 1), orientation


# --- decoded values, format by format ---------------------------------------------------------


def close_to(got: np.ndarray, expected: np.ndarray) -> bool:
    """Equal up to JPEG decoder differences: TensorFlow uses the fast integer DCT, Pillow the
    accurate one. A wrong turn, channel or palette is off by far more."""
    difference = np.abs(got.astype(int) - expected.astype(int))
    return got.shape == expected.shape and difference.max() <= 16 and difference.mean() < 3


def pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


LOSSLESS = ["formats/png named as.jpg", "formats/rgb.png", "formats/gray.png", "formats/gray alpha.png",
            "formats/palette.png", "formats/rgba.png", "formats/still.gif",
            "formats/animated.gif", "formats/lossless.webp", "formats/animated.webp",
            "formats/animated alpha.webp", "formats/24-bit.bmp", "formats/32-bit.bmp", "formats/palette.bmp",
            "formats/gray.bmp"]
LOSSY = ["formats/jpeg named as.png", "formats/baseline.jpg", "formats/progressive.jpeg", "formats/gray.jpg",
         "formats/cmyk.jpg", "formats/lossy.webp", "formats/alpha.webp"]


@pytest.fixture(scope="module")
def good_files():
    return corpus.good_files()


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_formats_decode_to_pillows_pixels(good_files, name):
    """Whatever the extension says; first frame of animations; alpha dropped; palettes applied."""
    expected = pillow_rgb(good_files[name])
    assert np.array_equal(decoded(good_files[name], *expected.shape[:2]), expected)


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_formats_decode_close_to_pillows_pixels(good_files, name):
    """TensorFlow decodes JPEG with the fast integer DCT, Pillow with the accurate one; CMYK is
    converted by both as R = C * K / 255 (Adobe inverted), so only rounding differs."""
    expected = pillow_rgb(good_files[name])
    assert close_to(decoded(good_files[name], *expected.shape[:2]), expected)


@pytest.mark.parametrize("name, mode", [("formats/16-bit.png", "RGB"), ("formats/16-bit gray.png", "L")])
def test_16_bit_png_keeps_the_high_byte(good_files, name, mode):
    """A 16-bit PNG that uses the whole range keeps its high byte, by the high-bit-depth rule
    the fallback applies (the graph leaves 16-bit PNGs to it). (Pillow's own conversion cannot
    be the reference here: it clips 16-bit gray to 255.)"""
    expected = np.asarray(corpus.picture().convert(mode))
    got = pillow.pixels(good_files[name], corpus.MAX_PIXELS, exif_transpose=True).pixels
    assert np.array_equal(got[..., 0] if mode == "L" else got, expected)


@pytest.mark.parametrize("name", LOSSLESS + LOSSY)
def test_grayscale_models_get_one_channel_from_every_format(good_files, name):
    """TensorFlow itself refuses channels=1 for BMP, GIF and CMYK JPEG; luma as Pillow's "L"."""
    with Image.open(io.BytesIO(good_files[name])) as image:
        expected = np.asarray(image.convert("RGB").convert("L")).astype(int)
    got = decoded(good_files[name], *expected.shape, channels=1)[..., 0]
    if name in LOSSLESS:
        assert np.abs(got.astype(int) - expected).max() <= 1
    else:
        assert close_to(got, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(orientation):
    """Exactly Pillow's ImageOps.exif_transpose of TensorFlow's own decode of the stored pixels,
    and close to Pillow's decode of the file, for a picture whose 8 turns all differ."""
    data = corpus.with_orientation(corpus.picture(), orientation, quality=100)
    stored = decoded(data, 24, 40, exif_transpose=False)
    image = Image.fromarray(stored)
    image.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    assert np.array_equal(decoded(data, *expected.shape[:2]), expected)
    with Image.open(io.BytesIO(data)) as original:
        by_pillow = np.asarray(ImageOps.exif_transpose(original)).astype(int)
    assert close_to(expected, by_pillow)


# --- mutated files: nothing escapes -------------------------------------------------------------

SEEDS = {
    "jpeg": corpus.encode(corpus.picture(), "JPEG"),
    "progressive": corpus.encode(corpus.picture(), "JPEG", progressive=True),
    "exif": corpus.with_orientation(corpus.picture(), 6),
    "png": corpus.encode(corpus.picture(), "PNG"),
    "gif": corpus.animation(corpus.frames(2), "GIF"),
    "bmp": corpus.encode(corpus.picture().quantize(8), "BMP"),
    "webp": corpus.encode(corpus.picture(), "WEBP"),
    "animated webp": corpus.animation(corpus.frames(2), "WEBP"),
}
ALLOWED = ("decode: ", "too-large: ")


def mutate(data: bytes, cut: float, edits: list[tuple[float, int]]) -> bytes:
    """Overwrite bytes at fractions of the length (headers live near the start, so half of the
    edits hit the first 64 bytes), then keep a fraction of the result."""
    mutable = bytearray(data)
    for where, value in edits:
        position = int(where * 64) if where < 0.5 else int(where * len(mutable))
        mutable[min(position, len(mutable) - 1)] = value
    return bytes(mutable[:max(int(cut * len(mutable)), 1) if cut < 1 else len(mutable)])


mutations = st.tuples(
    st.sampled_from(sorted(SEEDS)),
    st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
    st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), max_size=6),
)

GRAPH_DECODE = tf.function(lambda data: decode(data, pixels_spec(16, 16), OPTIONS))


@settings(max_examples=60, deadline=None)
@given(mutation=mutations)
def test_mutated_files_are_scored_or_explained(mutation):
    """In the graph, as the pipeline runs it, a file either gives an image or fails; when it
    fails, diagnose names a reason (never "not when retried alone")."""
    seed, cut, edits = mutation
    data = mutate(SEEDS[seed], cut, edits)
    with tempfile.NamedTemporaryFile(suffix=".jpg") as handle:
        handle.write(data)
        handle.flush()
        try:
            image = GRAPH_DECODE(tf.constant(data))
        except tf.errors.OpError:
            item = ListedFile("mutated.jpg", os.fsencode(handle.name), size=len(data))
            reason = diagnose(item, pixels_spec(16, 16), OPTIONS)
            assert reason.startswith(ALLOWED) and "retried alone" not in reason, reason
        else:
            assert image.shape == (16, 16, 3)


def test_a_folder_of_mutated_files_finishes_with_one_row_each(tmp_path, model):
    rng = np.random.default_rng(7)
    root = tmp_path / "input"
    root.mkdir()
    for i in range(40):
        seed = sorted(SEEDS)[i % len(SEEDS)]
        edits = [(float(rng.random()), int(rng.integers(256))) for _ in range(rng.integers(0, 5))]
        cut = 1.0 if i % 3 == 0 else float(rng.random())
        (root / f"{i:02d} {seed}.jpg").write_bytes(mutate(SEEDS[seed], cut, edits))
    output = str(tmp_path / "out")
    assert run("--model", model, "--input", str(root), "--output", output) == 0
    rows = read_output(output).to_dict("records")
    assert sorted(row["path"] for row in rows) == sorted(os.listdir(root))
    assert all(row["status"] == "ok" or row["error"].startswith(ALLOWED) for row in rows)


def test_jpeg_size_is_the_frame_headers_as_libjpeg_reads_it():
    """The header walk skips segments by their length, so the SOF of a thumbnail inside APP1
    is not taken for the image's, and steps over fill and stray bytes as libjpeg does; the
    pixel limit then checks the size libjpeg will decode."""
    photo = corpus.encode(corpus.picture(), "JPEG")
    thumbnail = corpus.encode(corpus.picture().resize((8, 6)), "JPEG")
    app1 = b"Exif\0\0" + thumbnail
    with_thumbnail = photo[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + photo[2:]
    filled = photo[:2] + b"\xff\xff" + photo[2:]
    for data in (photo, with_thumbnail, filled):
        height, width = (int(side) for side in tf.io.extract_jpeg_shape(data)[:2])
        header = headers.read_header(data)
        assert (header.width, header.height) == (width, height) != (8, 6)
        assert header.pixels == width * height
    bomb = DecodeOptions(width * height - 1, corpus.MAX_FILE_MB, exif_transpose=True, scaled_decode=True)
    item = ListedFile("thumbnail.jpg", b"", size=len(with_thumbnail))
    assert diagnosis.rescue(item, with_thumbnail, pixels_spec(16, 16), bomb)[1] == f"too-large: {width}x{height}"
