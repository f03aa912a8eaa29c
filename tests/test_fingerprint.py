"""The `phash` column and near copies by fingerprint: real photos (scikit-learn's two samples)
scored end to end, copies resized and recompressed with Pillow, a TIFF that only the Pillow
fallback decodes, and `review` with no embedding in OUT."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

from support import images
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

from batch_infer import hamming, perceptual
from batch_infer.cli import main
from conftest import SAMPLE_IMAGES, SAMPLE_MODEL, invoke, read_output, run_cli


def bits(first: str, second: str) -> int:
    return int(perceptual.distances(np.uint64(int(first, 16)), np.uint64(int(second, 16))))


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fingerprinted(tmp_path_factory):
    """Rows of a photo, its copies (half size as JPEG q70, double size, the same pixels as a
    TIFF), another photo, flat gray and black images and a truncated JPEG."""
    root = tmp_path_factory.mktemp("fingerprint")
    china, flower = (Image.fromarray(photo) for photo in load_sample_images().images)
    photo = china.crop((100, 100, 340, 260))
    photo.save(root / "photo.png")
    (root / "photo-half.jpg").write_bytes(jpeg(photo.resize((120, 80), Image.BICUBIC), 70))
    photo.resize((480, 320), Image.BICUBIC).save(root / "photo-double.png")
    photo.save(root / "photo.tif")
    flower.crop((100, 100, 340, 260)).save(root / "other.png")
    images.write_image(root / "gray.png", np.full((40, 50, 3), 128, np.uint8))
    images.write_image(root / "black.png", np.zeros((40, 50, 3), np.uint8))
    images.write_truncated_jpeg(root / "broken.jpg")
    output = str(root / "out")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", "--model", SAMPLE_MODEL, "--input", str(root), "--output", output,
                     "--extensions", "png,jpg,tif", "--quiet"]) == 0
    return read_output(output).set_index("path"), output


def test_phash_is_16_hex_digits_null_on_error_and_described(fingerprinted):
    rows, output = fingerprinted
    ok = rows[rows.status == "ok"]
    assert len(ok) == 7 and ok.phash.str.fullmatch("[0-9a-f]{16}").all()
    assert pd.isna(rows.loc["broken.jpg", "phash"])
    schema = ds.dataset(output, format="parquet").schema
    assert str(schema.field("phash").type) == "string"
    assert b"DCT pHash" in schema.metadata[b"batch_infer.phash"]


def test_copies_are_within_the_threshold_and_other_photos_far(fingerprinted):
    phash = fingerprinted[0].phash
    assert bits(phash["photo.png"], phash["photo-half.jpg"]) <= 4
    assert bits(phash["photo.png"], phash["photo-double.png"]) <= 4
    assert bits(phash["photo.png"], phash["other.png"]) >= 16


def test_pillow_and_the_graph_give_the_same_bits_for_the_same_pixels(fingerprinted):
    rows = fingerprinted[0]
    assert rows.loc["photo.tif", "decoder"] == "pillow" and rows.loc["photo.png", "decoder"] == "tensorflow"
    assert rows.loc["photo.tif", "phash"] == rows.loc["photo.png", "phash"]


def test_flat_images_have_exact_bits(fingerprinted):
    """Only the mean is above the median of 64 coefficients that are otherwise exactly 0: float
    noise cannot make a blank frame's bits differ between runs."""
    phash = fingerprinted[0].phash
    assert (phash["gray.png"], phash["black.png"]) == ("8000000000000000", "0000000000000000")


def test_mean_colour_is_the_pixels_mean_as_rrggbb(fingerprinted):
    rows, output = fingerprinted
    colour = rows.mean_colour
    assert (colour["gray.png"], colour["black.png"]) == ("808080", "000000") and pd.isna(colour["broken.jpg"])
    pixels = np.asarray(Image.open(Path(output).parent / "photo.png"), np.float64)
    expected = np.round(pixels.reshape(-1, 3).mean(axis=0))
    assert np.abs(np.frombuffer(bytes.fromhex(colour["photo.png"]), np.uint8) - expected).max() <= 1
    assert colour["photo.tif"] == colour["photo.png"]
    levels = perceptual.colours_from_text([colour["photo.png"], colour["photo-half.jpg"], colour["photo-double.png"]])[1]
    assert perceptual.colour_distances(levels[0], levels[1:]).max() <= 2
    assert b"rrggbb" in ds.dataset(output, format="parquet").schema.metadata[b"batch_infer.mean_colour"]


def test_multi_index_search_finds_exactly_the_pairs_a_full_comparison_does():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2**63, 2000, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    for row in range(0, 2000, 10):  # a neighbour 0 to 6 bits away
        flips = rng.choice(64, int(rng.integers(0, 7)), replace=False)
        codes[row + 1] = codes[row] ^ np.uint64(sum(1 << int(bit) for bit in flips))
    codes[500:530] = codes[500]  # a crowd sharing every chunk
    everything = perceptual.distances(codes[:, None], codes[None, :])
    for max_bits in (0, 3, 4, 8):
        pairs = hamming.near_pairs(codes, max_bits)
        first, second = np.nonzero(np.triu(everything <= max_bits, 1))
        assert sorted(zip(pairs.first.tolist(), pairs.second.tolist())) == sorted(zip(first.tolist(), second.tolist()))
        np.testing.assert_allclose(pairs.similarity, 1 - everything[pairs.first, pairs.second] / 64)


def test_review_finds_near_copies_without_an_embedding(tmp_path, capsys):
    """A model with no embedding in OUT: the planted copies are found by phash alone, and each
    duplicate row names what found it; --phash-distance off leaves the exact copy only."""
    root, output = tmp_path / "labelled", str(tmp_path / "out")
    shutil.copytree(SAMPLE_IMAGES, root)
    source = Image.open(root / "eight" / "0148.png")
    (root / "three" / "0148-near.jpg").write_bytes(jpeg(source.resize((56, 56), Image.BICUBIC), 85))
    shutil.copy(root / "eight" / "0148.png", root / "three" / "0148-copy.png")
    assert run_cli(capsys, "--model", SAMPLE_MODEL, "--input", str(root), "--output", output, "--quiet")[0] == 0
    code, summary, _ = invoke(capsys, "review", output, "--truth", "folder", "--output", str(tmp_path / "review"),
                              "--json")
    assert code == 0 and summary["near_threshold"] is None and summary["phash_distance"] == 6
    found = pd.read_parquet(tmp_path / "review" / "duplicates.parquet").set_index("path")
    group = found.loc["eight/0148.png", "group"]
    assert set(found[found.group == group].index) == {"eight/0148.png", "three/0148-copy.png", "three/0148-near.jpg"}
    assert found.loc["three/0148-near.jpg", "kind"] == "near" and found.loc["three/0148-near.jpg", "signal"] == "phash"
    # One row per file takes part in the phash search: the exact copy is joined by its hash.
    assert found.loc["three/0148-copy.png", "signal"] == "content_hash"
    assert found.loc["eight/0148.png", "signal"] == "content_hash+phash"
    assert summary["pairs_by_signal"]["content_hash"] == 1 and summary["pairs_by_signal"]["phash"] >= 1
    code, summary, _ = invoke(capsys, "review", output, "--truth", "folder", "--phash-distance", "off", "--json")
    assert code == 0 and summary["phash_distance"] is None and summary["duplicate_files"] == 2


def test_flat_drawings_alike_but_for_colour_are_not_copies(tmp_path, capsys):
    """A bright disc at one place on backgrounds of different colours: the phash values agree
    (a pHash sees the pattern, not the colours), the mean colours do not, so only the disc's
    resized and recompressed copy is paired with it, and the other pairs are counted as
    left out."""
    root, output = tmp_path / "drawings", str(tmp_path / "out")
    (root / "eight").mkdir(parents=True)
    for n, background in enumerate([(90, 0, 0), (0, 90, 0), (0, 0, 90), (60, 60, 0)]):
        image = Image.new("RGB", (120, 100), background)
        ImageDraw.Draw(image).ellipse((30, 20, 80, 70), fill=(250, 250, 250))
        image.save(root / "eight" / f"{n}.png")
        if n == 0:
            (root / "eight" / "0-near.jpg").write_bytes(jpeg(image.resize((180, 150), Image.BICUBIC), 90))
    assert run_cli(capsys, "--model", SAMPLE_MODEL, "--input", str(root), "--output", output, "--quiet")[0] == 0
    phash = read_output(output).set_index("path").phash
    assert max(bits(phash["eight/0.png"], phash[f"eight/{n}.png"]) for n in range(1, 4)) <= 4
    code, summary, _ = invoke(capsys, "review", output, "--truth", "folder", "--output", str(tmp_path / "review"),
                              "--json")
    found = pd.read_parquet(tmp_path / "review" / "duplicates.parquet")
    assert code == 0 and set(found.path) == {"eight/0.png", "eight/0-near.jpg"}
    assert summary["pairs_unlike"]["phash"] >= 6
