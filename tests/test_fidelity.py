"""Preprocessing fidelity: every resize mode, filter and preset gives the model exactly the input
an independent reference computes (numpy and Pillow, or Keras itself for --preset keras), on
non-square photos with EXIF orientations; and `inspect --against` names the preprocessing small
models were really trained with."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pyarrow.dataset as ds
import pytest
import tensorflow as tf

from support import models, reference
from conftest import read_metadata, run_cli

from batch_infer.decode.graph import decode
from batch_infer.decode.options import DecodeOptions, Resize
from batch_infer.decode.plan import jpeg_ratio, scale_target
from batch_infer.decode.headers import read_header
from batch_infer.listing import list_images
from batch_infer.model import load_model

SIZE = (16, 12)  # height, width: a non-square model input
# name: (stored height, stored width, EXIF orientation or None for a PNG)
PHOTOS = {"tall_turned.jpg": (24, 40, 6), "wide_upside_down.jpg": (28, 50, 3),
          "odd.png": (33, 17, None), "tiny.png": (10, 13, None), "left.jpg": (30, 50, 8),
          "exact.png": (16, 12, None)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(folder, {name: upright uint8 pixels as the reference sees them, unturned pixels})."""
    from support import images

    root = tmp_path_factory.mktemp("photos")
    pixels = {}
    for index, (name, (height, width, orientation)) in enumerate(sorted(PHOTOS.items())):
        stored = images.random_pixels(index, height, width)
        if orientation is None:
            images.write_image(root / name, stored)
            decoded = stored
        else:
            data = reference.jpeg_with_orientation(stored, orientation)
            (root / name).write_bytes(data)
            decoded = tf.io.decode_jpeg(data, channels=3).numpy()
        pixels[name] = (reference.upright(decoded, orientation or 1), decoded)
    return str(root), pixels


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    return str(models.save_float_probabilities(tmp_path_factory.mktemp("m") / "float", size=SIZE))


@pytest.fixture(scope="module")
def uint8_model(tmp_path_factory):
    return str(models.save_uint8_logits(tmp_path_factory.mktemp("m") / "uint8", signature="serving_default",
                                        size=SIZE))


def _ours(folder: str, model, options: DecodeOptions) -> dict[str, np.ndarray]:
    """The model's outputs on batch-infer's inputs: `decode` run eagerly, file by file (the
    tf.data pipeline around it, which both engines share, is what the end-to-end runs below
    go through; tracing it for each of 30 options would cost a minute)."""
    files = list_images(folder, ("jpg", "png"))
    images = tf.stack([decode(tf.io.read_file(item.fs_path), model.spec, options) for item in files])
    scores = model.predict(images)
    return {item.path: {key: value[row] for key, value in scores.items()} for row, item in enumerate(files)}


def _direct(model, tensor: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value.numpy()[0] for key, value in model.function(
        **{model.input_key: tf.constant(tensor[None], model.spec.dtype)}).items()}


GRID = [Resize(mode, 1.0, interpolation, antialias) for mode in ("stretch", "crop", "pad")
        for interpolation in ("bilinear", "bicubic", "area", "nearest", "lanczos3")
        for antialias in (True, False) if not (antialias is False and interpolation in ("area", "nearest"))]
GRID += [Resize("crop", 0.875, "bicubic", True), Resize("stretch", 0.5, "bilinear", True),
         Resize("crop", 0.6, "area", False)]


@pytest.mark.parametrize("preprocess", ["raw", "symmetric", "caffe", "torch"])
def test_every_mode_and_filter_equals_the_reference(photos, float_model, preprocess):
    folder, pixels = photos
    model = load_model(float_model, preprocess=preprocess)
    grid = GRID if preprocess == "raw" else GRID[::7]  # scalings are independent of the resize
    for resize in grid:
        ours = _ours(folder, model, DecodeOptions(10**8, 512, True, True, resize))
        assert sorted(ours) == sorted(PHOTOS)
        for name, (upright, _) in pixels.items():
            expected = reference.scale(reference.model_input(
                upright, SIZE, resize.mode, resize.crop_fraction, resize.interpolation, resize.antialias),
                preprocess)
            np.testing.assert_allclose(ours[name]["probabilities"], _direct(model, expected)["probabilities"],
                                       atol=1e-5, err_msg=f"{name} {resize}")


def test_uint8_models_get_the_reference_rounded(photos, uint8_model):
    folder, pixels = photos
    model = load_model(uint8_model)
    for resize in (Resize("crop", 1.0, "bicubic", True), Resize("pad", 1.0, "lanczos3", False),
                   Resize("stretch", 0.875, "area", True)):
        ours = _ours(folder, model, DecodeOptions(10**8, 512, True, True, resize))
        for name, (upright, _) in pixels.items():
            expected = reference.model_input(upright, SIZE, resize.mode, resize.crop_fraction,
                                             resize.interpolation, resize.antialias)
            rounded = np.round(np.clip(expected, 0, 255)).astype(np.uint8)
            np.testing.assert_allclose(ours[name]["logits"], _direct(model, rounded)["logits"], atol=1e-4,
                                       err_msg=f"{name} {resize}")


def _scores(out: str) -> dict[str, np.ndarray]:
    table = ds.dataset(out).to_table().to_pylist()
    result = {}
    for row in table:
        scores = np.zeros(len(row["top_k_indices"]))
        scores[row["top_k_indices"]] = row["top_k_scores"]
        result[row["path"]] = scores
    return result


def test_preset_imagenet_end_to_end(photos, float_model, tmp_path, capsys):
    folder, pixels = photos
    code, summary, err = run_cli(capsys, "--model", float_model, "--input", folder, "--output",
                                 str(tmp_path / "out"), "--preset", "imagenet", "--quiet")
    assert code == 0, err
    model = load_model(float_model, preprocess="torch")
    scores = _scores(str(tmp_path / "out"))
    for name, (upright, _) in pixels.items():
        expected = reference.scale(reference.model_input(upright, SIZE, "crop", 0.875, "bicubic", True), "torch")
        np.testing.assert_allclose(scores[name], _direct(model, expected)["probabilities"], atol=1e-5)
    metadata = read_metadata(str(tmp_path / "out"))
    assert {key: metadata[key] for key in ("preset", "resize", "crop_fraction", "interpolation",
                                           "antialias", "preprocess", "decoder")} == {
        "preset": "imagenet", "resize": "crop", "crop_fraction": "0.875", "interpolation": "bicubic",
        "antialias": "true", "preprocess": "torch", "decoder": "batch-infer"}


@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
def test_preset_keras_equals_image_dataset_from_directory(photos, float_model, tmp_path, capsys, resize):
    """The Keras utility itself is the reference: its tensors through the signature."""
    import keras

    folder, _ = photos
    out = str(tmp_path / "out")
    flags = [] if resize == "stretch" else ["--resize", resize]
    code, _, err = run_cli(capsys, "--model", float_model, "--input", folder, "--output", out,
                           "--preset", "keras", "--quiet", *flags)
    assert code == 0, err
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, image_size=SIZE, interpolation="bilinear", shuffle=False, batch_size=4,
        crop_to_aspect_ratio=resize == "crop", pad_to_aspect_ratio=resize == "pad", verbose=False)
    model = load_model(float_model)
    expected = np.concatenate([model.function(**{model.input_key: batch})["probabilities"].numpy()
                               for batch in dataset])
    names = [os.path.relpath(path, folder) for path in dataset.file_paths]
    scores = _scores(out)
    assert sorted(names) == sorted(scores)
    for name, row in zip(names, expected):
        np.testing.assert_allclose(scores[name], row, atol=1e-5, err_msg=name)
    metadata = read_metadata(out)
    assert (metadata["preset"], metadata["decoder"], metadata["exif_transpose"], metadata["antialias"],
            metadata["resize"]) == ("keras", "keras", "false", "false", resize)


def test_preset_keras_takes_explicit_flags(photos, float_model, tmp_path, capsys):
    """Explicit flags win over the preset: here the EXIF turn and a bicubic filter."""
    folder, pixels = photos
    out = str(tmp_path / "out")
    code, _, err = run_cli(capsys, "--model", float_model, "--input", folder, "--output", out,
                           "--preset", "keras", "--exif-transpose", "--interpolation", "bicubic", "--quiet")
    assert code == 0, err
    model = load_model(float_model)
    scores = _scores(out)
    for name, (upright, _) in pixels.items():
        expected = reference.model_input(upright, SIZE, "stretch", 1.0, "bicubic", False)
        np.testing.assert_allclose(scores[name], _direct(model, expected)["probabilities"], atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--resize", "pad", "--crop-fraction", "0.9"], "--crop-fraction keeps only the centre"),
    (["--crop-fraction", "0"], "--crop-fraction must be a number above 0"),
    (["--preset", "keras", "--scaled-decode"], "--scaled-decode does not apply to --preset keras"),
    (["--resize", "fill"], "--resize must be one of stretch, crop, pad"),
])
def test_conflicting_preprocessing_is_exit_2(photos, float_model, tmp_path, capsys, argv, message):
    code, _, err = run_cli(capsys, "--model", float_model, "--input", photos[0], "--output",
                           str(tmp_path / "out"), *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_encoded_models_refuse_resize_options(model_dir, image_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--model", model_dir["encoded"], "--input", image_dir, "--output",
                           str(tmp_path / "out"), "--resize", "crop")
    assert code == 2 and "resizes them itself" in err


def test_scaled_decode_keeps_the_crop_fraction_box_above_the_model_size():
    """A 96x80 JPEG for a 16x12 model: at --crop-fraction 0.5 the short side must stay >= 32, so
    1/2 scale (40) but not 1/4 (20); at 1 it may go to 1/4 (20 >= 16)."""
    header = read_header(tf.io.encode_jpeg(np.zeros((96, 80, 3), np.uint8)).numpy())
    assert (header.width, header.height) == (80, 96)
    spec = type("Spec", (), {"image_size": SIZE})
    options = DecodeOptions(10**8, 512, True, True)
    assert jpeg_ratio(header, scale_target(spec, Resize("crop", 0.5)), options) == 2
    assert jpeg_ratio(header, scale_target(spec, Resize("crop", 1.0)), options) == 4
    assert jpeg_ratio(header, scale_target(spec, Resize("pad", 1.0)), options) == 4
    assert jpeg_ratio(header, scale_target(spec, Resize("pad", 1.0)), replace(options, scaled_decode=False)) == 1


# --- inspect --against -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two models trained here under known preprocessing, and labelled folders for each:
    (centre-crop + symmetric model, its photos; Rescaling-inside model, its uniform photos)."""
    root = tmp_path_factory.mktemp("trained")
    centre = models.train_centre_symmetric(root / "centre")
    rescaling = models.train_rescaling_raw(root / "rescaling")
    photos = models.write_level_photos(root / "photos", 8, ("dark", "Dim", "light", "white"))
    models.write_level_photos(root / "photos", 2, ("unknown",))
    uniform = models.write_level_photos(root / "uniform", 8, uniform=True)
    return centre, photos, rescaling, uniform


def test_against_names_the_centre_crop_and_symmetric_scaling(trained, capsys):
    centre, photos, _, _ = trained
    from batch_infer.cli import main

    assert main(["inspect", centre, "--against", photos, "--sample", "32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    best = result["best"]
    assert (best["resize"], best["preprocess"]) == ("crop", "symmetric")
    assert best["top1_accuracy"] > 0.9 and result["lead"] > 0.2
    assert result["unmatched_folders"] == ["unknown"]
    assert result["matched_folders"] == {"Dim": 1, "dark": 0, "light": 2, "white": 3}
    assert result["files_scored"] == 32 and len(result["candidates"]) == 30
    # Only antialias (all these images are flat) may be within noise of the best.
    assert all("--resize crop" in flags and "symmetric" in flags for flags in result["within_noise"])


def test_against_stops_scoring_clear_losers_and_keeps_the_winner(trained, tmp_path, capsys):
    """96 files: every candidate scores the first 32, the clearly wrong ones stop there, and the
    best and the figures of the rest are those of a direct evaluation of every candidate on every
    file (decode, scale, model), ranked the same way."""
    from batch_infer.against import Candidate, resizes
    from batch_infer.scaling import candidates as scalings
    from batch_infer.cli import main

    centre = trained[0]
    folder = models.write_level_photos(tmp_path / "many", 24, seed=8)
    assert main(["inspect", centre, "--against", folder, "--sample", "96", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["flags"]: row for row in result["candidates"]}
    assert result["files_scored"] == 96 and len(rows) == 30
    stopped = [row for row in rows.values() if row["scored"] < 96]
    assert stopped and all(row["scored"] in (32, 64) for row in stopped)
    assert result["stopped_early"] == len(stopped)

    files = list_images(folder, ("png",))
    truth = np.array([models.LEVEL_LABELS.index(item.path.split("/")[0]) for item in files])
    spec = load_model(centre).spec
    direct = {}
    for resize in resizes(Resize(), spec):
        for preprocess in scalings(spec):
            model = load_model(centre, preprocess=preprocess)
            images = tf.stack([decode(tf.io.read_file(item.fs_path), model.spec,
                                      DecodeOptions(10**8, 512, True, True, resize)) for item in files])
            (scores,) = model.predict(images).values()  # softmax probabilities
            flags = Candidate(resize, preprocess).flags()
            direct[flags] = ((scores.argmax(1) == truth).mean(), scores.max(1).mean(), len(flags.split()))
    best = min(direct, key=lambda flags: (-direct[flags][0], -direct[flags][1], direct[flags][2]))
    assert result["best"]["flags"] == best
    for flags, row in rows.items():
        if row["scored"] == 96:
            assert row["top1_accuracy"] == pytest.approx(direct[flags][0])
            assert row["mean_top1_score"] == pytest.approx(direct[flags][1], abs=1e-5)
        else:
            assert direct[flags][0] < direct[best][0] - 0.2


def test_against_says_within_noise_when_it_cannot_tell(trained, capsys):
    """Uniform images give stretch and crop the same pixels: raw wins, and the resize is a tie."""
    from batch_infer.cli import main

    _, _, rescaling, uniform = trained
    assert main(["inspect", rescaling, "--against", uniform, "--sample", "24"]) == 0
    text = capsys.readouterr().out
    best_line = next(line for line in text.splitlines() if line.startswith("best: "))
    assert "--preprocess raw" in best_line
    warning = text.split("within noise of the best")[1]
    assert "--preprocess raw" in warning and "--resize crop" in (best_line + warning)
    assert "no number of files like these would separate them" in warning


def test_against_without_matching_folders_ranks_by_confidence(trained, tmp_path, capsys):
    _, _, rescaling, uniform = trained
    renamed = tmp_path / "classes"
    renamed.mkdir()
    for number, folder in enumerate(sorted(os.listdir(uniform))):
        shutil.copytree(os.path.join(uniform, folder), renamed / f"class {number}")
    from batch_infer.cli import main

    assert main(["inspect", rescaling, "--against", str(renamed), "--sample", "8"]) == 0
    text = capsys.readouterr().out
    assert "no folder matches a label of the model" in text and "weak" in text


def test_inspect_shows_the_preprocessing(float_model, capsys):
    from batch_infer.cli import main

    assert main(["inspect", float_model, "--preset", "imagenet", "--interpolation", "area"]) == 0
    text = capsys.readouterr().out
    assert "resize      crop, centre 0.875, area, antialiased" in text
    assert "preprocess  torch" in text and "preset      imagenet" in text
