"""--runtime onnx: the same rows as TensorFlow's within 1e-4 and the same top-k, on models
converted with tf2onnx; the conversion cached; each model the converter cannot take, or whose
ONNX twin disagrees on the first batch, scored by TensorFlow after one warning sentence."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import batch_infer
from support import models
from conftest import read_metadata, read_output, run_cli
from test_run import direct_scores
from batch_infer.onnx_runtime import CACHE_ENV, TOLERANCE

WARNING = "batch-infer: --runtime onnx: "


@pytest.fixture(scope="module")
def runtime_models(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime_models")
    return {**model_dir, "keras_file": str(models.save_keras_file(root / "functional.keras")),
            "noise": str(models.save_with_noise(root / "noise"))}


def score_both(capsys, model: str, image_dir: str, root, *flags: str):
    """(TensorFlow's rows, ONNX's rows, ONNX's metadata, ONNX's summary, ONNX's stderr)."""
    outputs = {}
    for runtime in ("tensorflow", "onnx"):
        output = str(root / runtime)
        code, summary, err = run_cli(capsys, "--model", model, "--input", image_dir, "--output", output,
                                     "--batch-size", "5", "--runtime", runtime, *flags)
        assert code == 0, err
        outputs[runtime] = read_output(output), summary, err
    assert read_metadata(str(root / "tensorflow"))["runtime"] == "tensorflow"
    (expected, _, _), (got, summary, err) = outputs["tensorflow"], outputs["onnx"]
    return expected, got, read_metadata(str(root / "onnx")), summary, err


def assert_same_rows(expected, got) -> None:
    """Same files, statuses and top-k; scores within the gate's tolerance."""
    assert got.path.tolist() == expected.path.tolist()
    assert got.status.tolist() == expected.status.tolist()
    for want, row in zip(expected.to_dict("records"), got.to_dict("records")):
        if want["status"] != "ok":
            continue
        assert list(row["top_k_indices"]) == list(want["top_k_indices"]), row["path"]
        np.testing.assert_allclose(row["top_k_scores"], want["top_k_scores"], atol=TOLERANCE)


@pytest.mark.parametrize("kind", ["float", "keras", "keras_file"])
def test_onnx_scores_equal_tensorflow_and_direct_calls(kind, runtime_models, image_dir, tmp_path, capsys):
    """A small CNN SavedModel, a Keras export and a .keras file run on ONNX Runtime, gate passed."""
    expected, got, meta, summary, err = score_both(capsys, runtime_models[kind], image_dir, tmp_path)
    assert_same_rows(expected, got)
    assert meta["runtime"] == "onnx" and meta["runtime_requested"] == "onnx"
    assert meta["onnxruntime_version"] == __import__("onnxruntime").__version__
    assert float(meta["runtime_max_difference"]) <= TOLERANCE
    assert "runtime onnx (onnxruntime " in err and "agreed with TensorFlow on the first " in err, err
    assert WARNING not in err and summary["warnings"] == 0, err
    if kind == "float":
        for row in got[got.status == "ok"].to_dict("records"):
            direct = direct_scores(runtime_models[kind], "serving_default", os.path.join(image_dir, row["path"]),
                                   (16, 16), 3, tf.float32, "raw", "none")
            np.testing.assert_allclose(row["top_k_scores"], np.sort(direct)[::-1][:5], atol=TOLERANCE)


# kind: flags, whether ONNX Runtime scores (else TensorFlow, after one sentence), what it says
WILD = {
    "encoded": ([], False, "takes encoded image bytes"),
    "uint8_logits": (["--signature", "classify"], True, None),  # uint8 input, another signature
    "several": ([], True, None),  # a dict of outputs, one of them int64
    "noise": (["--output-key", "probabilities"], False, "disagreed with TensorFlow on the first "),
}


@pytest.mark.parametrize("kind", sorted(WILD))
def test_models_from_the_wild_run_on_onnx_or_fall_back_with_one_sentence(kind, runtime_models, image_dir,
                                                                          tmp_path, capsys):
    flags, on_onnx, said = WILD[kind]
    expected, got, meta, summary, err = score_both(capsys, runtime_models[kind], image_dir, tmp_path, *flags)
    assert_same_rows(expected, got)
    warnings = [line for line in err.splitlines() if line.startswith(WARNING)]
    if on_onnx:
        assert meta["runtime"] == "onnx" and not warnings, err
    else:
        assert meta["runtime"] == "tensorflow" and meta["runtime_requested"] == "onnx"
        assert len(warnings) == 1 and said in warnings[0], err
        assert warnings[0].endswith("; scoring with TensorFlow instead.") and summary["warnings"] >= 1
        np.testing.assert_array_equal(np.stack(got.top_k_scores[got.status == "ok"]),
                                      np.stack(expected.top_k_scores[expected.status == "ok"]))
    if kind == "noise":
        assert float(meta["runtime_max_difference"]) > TOLERANCE


def test_conversion_is_cached_across_runs(runtime_models, image_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    said = []
    for run in ("first", "second"):
        code, _, err = run_cli(capsys, "--model", runtime_models["float"], "--input", image_dir,
                               "--output", str(tmp_path / run), "--runtime", "onnx")
        assert code == 0, err
        said.append(err)
        (converted,) = os.listdir(tmp_path / "cache" / "onnx")
        if run == "first":
            written = os.stat(tmp_path / "cache" / "onnx" / converted).st_mtime_ns
    assert "model converted in " in said[0] and "model converted from the cache" in said[1], said
    assert os.stat(tmp_path / "cache" / "onnx" / converted).st_mtime_ns == written


def test_out_scored_on_one_runtime_refuses_the_other(runtime_models, image_dir, tmp_path, capsys):
    output = str(tmp_path / "out")
    assert batch_infer.score(runtime_models["float"], image_dir, output, runtime="onnx", quiet=True)["ok"] == 12
    code, summary, err = run_cli(capsys, "--model", runtime_models["float"], "--input", image_dir,
                                 "--output", output)
    assert code == 2 and summary is None
    assert "was scored with --runtime onnx; this run asks for tensorflow" in err, err


def test_onnx_without_the_extra_is_one_sentence_before_any_work(runtime_models, image_dir, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as when the package is not installed
    output = str(tmp_path / "out")
    code, summary, err = run_cli(capsys, "--model", runtime_models["float"], "--input", image_dir,
                                 "--output", output, "--runtime", "onnx")
    assert code == 2 and summary is None and not os.path.exists(output)
    assert err.strip().count("\n") == 0 and "pip install 'batch-infer[onnx]'" in err, err
