"""Models as people have them: HDF5 files under other names, TF Serving bases, Keras 2 files,
inputs without a channel axis, and pixel scaling read from the model or checked on the images.
Every model is built here for real; scores are compared with a direct call of the model."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from batch_infer.cli import main
from conftest import installed, read_metadata, read_output, run_cli, skip_or_fail
from support.models import LEVEL_LABELS, _level_batch, _train_levels, train_rescaling_raw, write_level_photos

SIZE = 28


@pytest.fixture(scope="module")
def gray_images(tmp_path_factory):
    """Grayscale PNGs at the models' 28x28, so the decoded pixels are the stored ones."""
    root = tmp_path_factory.mktemp("gray")
    rng = np.random.default_rng(3)
    for index in range(10):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), np.uint8), "L").save(root / f"{index}.png")
    return str(root)


def pixels_of(folder: str, mode: str = "L") -> tuple[list[str], np.ndarray]:
    names = sorted(os.listdir(folder))
    return names, np.stack([np.asarray(Image.open(os.path.join(folder, name)).convert(mode), np.float32)
                            for name in names])


def scores(out: str) -> np.ndarray:
    frame = read_output(out, ["top_k_indices", "top_k_scores"])
    return np.stack([np.asarray(scores)[np.argsort(indices)]
                     for indices, scores in zip(frame["top_k_indices"], frame["top_k_scores"])])


def inspect_json(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["inspect", *args, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else {}), captured.err


def flat_digits_model(path, classes: int = 3):
    """A Keras 3 `Flatten(input_shape=(28, 28))` MNIST-style model: input [None, 28, 28]."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((SIZE, SIZE)), keras.layers.Flatten(),
                              keras.layers.Dense(classes, activation="softmax")])
    model.save(str(path))
    return model


def test_hdf5_under_any_name_and_the_highest_tf_serving_version(gray_images, tmp_path, capsys):
    model = flat_digits_model(tmp_path / "digits.h5")
    for name in ("mask_detector.model", "digits.hdf5"):
        shutil.copy(tmp_path / "digits.h5", tmp_path / name)
        code, summary, err = run_cli(capsys, "--model", str(tmp_path / name), "--input", gray_images,
                                     "--output", str(tmp_path / f"out-{name}"))
        assert code == 0 and summary["ok"] == 10, err
        _, pixels = pixels_of(gray_images)
        np.testing.assert_allclose(scores(str(tmp_path / f"out-{name}")), model.predict(pixels, verbose=0),
                                   atol=1e-5)

    import keras

    base = tmp_path / "serving"
    for version, seed in ((1, 1), (2, 2)):
        keras.utils.set_random_seed(seed)
        keras.Sequential([keras.Input((SIZE, SIZE)), keras.layers.Flatten(),
                          keras.layers.Dense(3, activation="softmax")]).export(str(base / str(version)), verbose=False)
    code, summary, err = run_cli(capsys, "--model", str(base), "--input", gray_images,
                                 "--output", str(tmp_path / "served"))
    assert code == 0, err
    assert "version 2 of the TF Serving model base" in err
    assert run_cli(capsys, "--model", str(base / "2"), "--input", gray_images,
                   "--output", str(tmp_path / "direct"))[0] == 0
    np.testing.assert_array_equal(scores(str(tmp_path / "served")), scores(str(tmp_path / "direct")))
    assert "version 2" in read_metadata(str(tmp_path / "served"))["model_found_at"]


def test_flat_inputs_take_the_image_size_that_fills_them(gray_images, tmp_path, capsys):
    import tensorflow as tf

    rng = np.random.default_rng(4)
    weights = tf.Variable(rng.normal(0, 0.01, (SIZE * SIZE, 4)).astype(np.float32))

    class Flat(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE * SIZE], tf.float32)])
        def serve(self, x):
            return {"probs": tf.nn.softmax(tf.matmul(x, weights))}

    module = Flat()
    module.weights_ = weights
    path = str(tmp_path / "flat")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    code, _, err = run_cli(capsys, "--model", path, "--input", gray_images, "--output", str(tmp_path / "a"))
    assert code == 2 and "--image-size" in err and "28x28" in err, err
    assert not os.path.exists(tmp_path / "a")
    code, summary, err = run_cli(capsys, "--model", path, "--input", gray_images, "--output",
                                 str(tmp_path / "b"), "--image-size", "28x28")
    assert code == 0 and summary["ok"] == 10, err
    _, pixels = pixels_of(gray_images)
    expected = module.serve(tf.constant(pixels.reshape(len(pixels), -1)))["probs"].numpy()
    np.testing.assert_allclose(scores(str(tmp_path / "b")), expected, atol=1e-5)
    assert "fed flattened" in read_metadata(str(tmp_path / "b"))["input"]


def train_unit(path) -> str:
    """Trained on x/255 outside the model, as most tutorials do: raw pixels saturate it."""
    import keras

    keras.utils.set_random_seed(8)
    pixels, classes = _level_batch(np.random.default_rng(8), 400)
    model = keras.Sequential([keras.Input(pixels.shape[1:]), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(len(LEVEL_LABELS), activation="softmax")])
    return _train_levels(model, pixels / 255.0, classes, path)


def test_a_model_trained_on_unit_pixels_is_warned_about_and_named(tmp_path, capsys):
    model = train_unit(tmp_path / "unit")
    photos = write_level_photos(tmp_path / "photos", per_class=6, uniform=True)
    code, summary, err = run_cli(capsys, "--model", model, "--input", photos, "--output", str(tmp_path / "raw"))
    assert code == 0, err
    warned = [line for line in err.splitlines() if "looks wrong" in line]
    assert len(warned) == 1 and "--preprocess unit" in warned[0], err
    assert summary["warnings"] >= 1
    recorded = read_metadata(str(tmp_path / "raw"))
    assert recorded["preprocess"] == "raw" and "does not say" in recorded["preprocess_source"]
    assert json.loads(recorded["preprocess_check"])["raw"]["pinned"] >= 0.7
    code, summary, err = run_cli(capsys, "--model", model, "--input", photos, "--output", str(tmp_path / "unit-out"),
                                 "--preprocess", "unit")
    assert code == 0 and "looks wrong" not in err and summary["warnings"] == 0, err
    code, info, err = inspect_json(capsys, model, "--sample", photos)
    assert code == 0, err
    checked = info["scaling_check"]
    assert checked["images"] == 24 and checked["pinned"]["raw"] >= 0.7 and checked["pinned"]["unit"] <= 0.25
    assert "--preprocess unit" in checked["warning"]


def test_scaling_read_from_a_rescaling_layer_and_a_backbone(tmp_path, capsys):
    import keras

    keras.utils.set_random_seed(2)
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg")
    model = keras.Sequential([keras.Input((32, 32, 3)), backbone, keras.layers.Dense(3, activation="softmax")])
    model.save(str(tmp_path / "mobile.keras"))
    model.export(str(tmp_path / "mobile"), verbose=False)
    for path in (tmp_path / "mobile.keras", tmp_path / "mobile"):
        code, info, err = inspect_json(capsys, str(path))
        assert code == 0, err
        assert info["run"]["preprocess"] == "symmetric", info["run"]
        assert "MobileNetV2" in info["run"]["preprocess_source"]
    photos = write_level_photos(tmp_path / "photos", per_class=3, uniform=True)
    code, _, err = run_cli(capsys, "--model", str(tmp_path / "mobile"), "--input", photos,
                           "--output", str(tmp_path / "out"))
    assert code == 0, err
    recorded = read_metadata(str(tmp_path / "out"))
    assert recorded["preprocess"] == "symmetric" and "MobileNetV2" in recorded["preprocess_source"]
    code, summary, err = run_cli(capsys, "--model", str(tmp_path / "mobile.keras"), "--input", photos,
                                 "--output", str(tmp_path / "asked"), "--preprocess", "raw")
    assert code == 0 and "--preprocess raw was asked for" in err and summary["warnings"] >= 1, err


def test_rescaling_layer_says_raw(tmp_path, capsys):
    code, info, err = inspect_json(capsys, train_rescaling_raw(tmp_path / "rescaling"))
    assert code == 0, err
    assert info["run"]["preprocess"] == "raw" and "Rescaling" in info["run"]["preprocess_source"]


def test_keras_2_files_load_through_tf_keras_and_say_nothing_on_stderr(gray_images, tmp_path, capsys):
    if not installed("tf_keras"):
        skip_or_fail("tf_keras not installed; pip install -e '.[dev]' (it brings the legacy extra)")
    import tf_keras

    tf_keras.utils.set_random_seed(3)
    model = tf_keras.Sequential([tf_keras.layers.Reshape((SIZE, SIZE, 1), input_shape=(SIZE, SIZE)),
                                 tf_keras.layers.Conv2D(4, 3, activation="relu"),
                                 tf_keras.layers.GlobalAveragePooling2D(),
                                 tf_keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.random.default_rng(0).random((8, SIZE, SIZE)), np.arange(8) % 3, verbose=0)
    model.save(str(tmp_path / "keras2.h5"))
    model.save(str(tmp_path / "keras2_savedmodel"))  # Keras 2's SavedModel, with keras_metadata.pb
    _, pixels = pixels_of(gray_images)
    expected = model.predict(pixels, verbose=0)
    for path in ("keras2.h5", "keras2_savedmodel"):
        out = str(tmp_path / f"out-{path}")
        code, summary, err = run_cli(capsys, "--model", str(tmp_path / path), "--input", gray_images,
                                     "--output", out, "--quiet")
        assert code == 0 and summary["ok"] == 10, err
        assert "Warning" not in err and "WARNING" not in err, err
        np.testing.assert_allclose(scores(out), expected, atol=1e-5)


def test_files_no_keras_reads_are_refused_in_one_sentence(gray_images, tmp_path, capsys):
    import h5py

    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as handle:
        handle.attrs["keras_version"] = b"1.2.2"
        handle.attrs["model_config"] = b'{"class_name": "Sequential", "config": []}'
    weights = tmp_path / "weights.h5"
    flat_digits_model(tmp_path / "digits.keras").save_weights(str(tmp_path / "digits.weights.h5"))
    shutil.copy(tmp_path / "digits.weights.h5", weights)
    frozen = tmp_path / "frozen_inference_graph.pb"
    frozen.write_bytes(b"\n\x0c\n\x05input")
    for path, says in ((old, "Keras 1.2.2"), (weights, "only weights"), (frozen, "frozen TensorFlow graph")):
        code, _, err = run_cli(capsys, "--model", str(path), "--input", gray_images, "--output", str(tmp_path / "out"))
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(tmp_path / "out")


def test_penultimate_reaches_a_dense_layer_in_a_nested_sequential(gray_images, tmp_path, capsys):
    import keras

    keras.utils.set_random_seed(4)
    features = keras.Sequential([keras.Input((SIZE, SIZE)), keras.layers.Reshape((SIZE, SIZE, 1)),
                                 keras.layers.Conv2D(4, 3, activation="relu"),
                                 keras.layers.GlobalAveragePooling2D()])
    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"),
                             keras.layers.Dense(1, activation="sigmoid", name="one"),
                             keras.layers.Dense(3, activation="softmax")])
    model = keras.Sequential([keras.Input((SIZE, SIZE)), features, head])
    model.save(str(tmp_path / "nested.keras"))
    out = str(tmp_path / "out")
    code, summary, err = run_cli(capsys, "--model", str(tmp_path / "nested.keras"), "--input", gray_images,
                                 "--output", out, "--embedding-layer", "penultimate")
    assert code == 0, err
    _, pixels = pixels_of(gray_images)
    embedded = np.stack(read_output(out, ["embedding"])["embedding"].to_numpy())
    expected = head.layers[1](head.layers[0](features(pixels)))  # the input of the last Dense
    np.testing.assert_allclose(embedded, np.asarray(expected), atol=1e-5)
    np.testing.assert_allclose(scores(out), model.predict(pixels, verbose=0), atol=1e-5)


def test_inspect_takes_a_labels_file(tmp_path, capsys):
    flat_digits_model(tmp_path / "digits.keras")
    labels = tmp_path / "names.txt"
    labels.write_text("zero\none\ntwo\n")
    code, info, err = inspect_json(capsys, str(tmp_path / "digits.keras"), "--labels", str(labels))
    assert code == 0, err
    assert info["labels"] == {"file": str(labels), "count": 3}
