"""Every configuration mistake: exit 2, one sentence on stderr that names the fix, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, SAMPLE_IMAGES, SAMPLE_MODEL, run_cli


def assert_refused(capsys, output, *args, mentions: tuple[str, ...]):
    code, summary, err = run_cli(capsys, *args)
    assert code == 2, err
    assert summary is None
    message = err.strip()
    assert message.count("\n") == 0 and message.startswith("batch-infer: error: "), message
    assert "Traceback" not in message
    for text in mentions:
        assert text in message, message
    assert not os.path.exists(output), "nothing may be written on a configuration error"


@pytest.mark.parametrize("flags, mentions", [
    (["--top-k", "0"], ("--top-k", "positive")),
    (["--batch-size", "many"], ("--batch-size",)),
    (["--preprocess", "imagenet"], ("--preprocess", "caffe")),
    (["--activation", "relu"], ("--activation", "softmax")),
    (["--shard", "3/3"], ("--shard", "0 <= I < N")),
    (["--image-size", "224"], ("--image-size", "HxW")),
    (["--max-error-rate", "5"], ("--max-error-rate", "between 0 and 1")),
    (["--device", "tpu"], ("--device",)),
    (["--no-such-flag"], ("Unrecognized arguments", "--help")),
    (["--signature", "serve_me"], ("'serve_me' not found", "serve, serving_default", "--signature")),
    (["--output-key", "logits"], ("'logits' is not an output", "output_0")),
    (["--image-size", "64x64"], ("contradicts", "drop --image-size")),
    (["--preprocess", "caffe", "--input-key", "pixels"], ("'pixels' is not an input",)),
    (["--task", "cluster"], ("--task", "classify, embed")),
    (["--embedding-key", "features"], ("'features' is not an output", "output_0")),
    (["--keep-output", "logits"], ("'logits' is not an output", "output_0")),
    (["--embedding-layer", "pool"], ("--embedding-layer needs a Keras", "--embedding-key")),
    (["--embedding-key", "a", "--embedding-layer", "b"], ("give one of them",)),
    (["--normalize-embeddings"], ("needs an embedding", "--task embed")),
    (["--task", "embed", "--output-key", "output_0"], ("--output-key", "--embedding-key")),
])
def test_bad_flags(flags, mentions, tmp_path, capsys):
    output = str(tmp_path / "out")
    assert_refused(capsys, output, "--model", SAMPLE_MODEL, "--input", SAMPLE_IMAGES,
                   "--output", output, *flags, mentions=mentions)


def test_missing_paths(tmp_path, capsys):
    output = str(tmp_path / "out")
    base = ["--output", output]
    assert_refused(capsys, output, "--model", str(tmp_path / "nope"), "--input", SAMPLE_IMAGES, *base,
                   mentions=("does not exist", "--model"))
    assert_refused(capsys, output, "--model", SAMPLE_MODEL, "--input", str(tmp_path / "nope"), *base,
                   mentions=("Input directory", "--input"))
    assert_refused(capsys, output, "--input", SAMPLE_IMAGES, *base, mentions=("Missing --model",))
    assert_refused(capsys, output, "--job", str(tmp_path / "job.toml"), mentions=("Job file",))


def test_not_a_saved_model(tmp_path, capsys):
    output = str(tmp_path / "out")
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK\x03\x04")
    h5_file = tmp_path / "model.h5"
    h5_file.write_bytes(b"not HDF5 at all")
    other_file = tmp_path / "model.pt"
    other_file.write_bytes(b"torch")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "checkpoint").write_text("model_checkpoint_path: 'x'")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 10)
    common = ["--input", SAMPLE_IMAGES, "--output", output]
    assert_refused(capsys, output, "--model", str(keras_file), *common,
                   mentions=("Could not load the Keras file", "model.save('model.keras')", "export"))
    for other in (h5_file, other_file):  # told by content, not by name
        assert_refused(capsys, output, "--model", str(other), *common,
                       mentions=("neither an HDF5 (.h5) nor a zip (.keras) Keras file", "SavedModel directory"))
    assert_refused(capsys, output, "--model", str(checkpoint), *common, mentions=("checkpoint",))
    assert_refused(capsys, output, "--model", str(corrupt), *common, mentions=("Could not load",))


def test_signature_shape_problems(model_dir, image_dir, tmp_path, capsys):
    output = str(tmp_path / "out")
    common = ["--input", image_dir, "--output", output]
    assert_refused(capsys, output, "--model", model_dir["ambiguous"], *common,
                   mentions=("logits, probabilities", "--output-key"))
    assert_refused(capsys, output, "--model", model_dir["ambiguous"], "--output-key", "class_id", *common,
                   mentions=("not [batch, classes]",))
    assert_refused(capsys, output, "--model", model_dir["ambiguous"], "--output-key", "logits",
                   "--keep-output", "class_id", *common, mentions=("float outputs", "class_id"))
    assert_refused(capsys, output, "--model", model_dir["dynamic"], *common,
                   mentions=("does not fix the image size", "--image-size HxW"))
    assert_refused(capsys, output, "--model", model_dir["uint8_logits"], *common,
                   mentions=("'serving_default' not found", "available: classify"))
    assert_refused(capsys, output, "--model", model_dir["uint8_logits"], "--signature", "classify",
                   "--preprocess", "unit", *common, mentions=("uint8", "--preprocess must be raw"))
    assert_refused(capsys, output, "--model", model_dir["grayscale"], "--preprocess", "torch", *common,
                   mentions=("one channel",))


def test_labels_file_of_wrong_length(tmp_path, capsys):
    output = str(tmp_path / "out")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    assert_refused(capsys, output, "--model", SAMPLE_MODEL, "--input", SAMPLE_IMAGES, "--output", output,
                   "--labels", str(labels), mentions=("has 2 labels", "10 classes", "--labels"))


def test_console_script_gives_one_line_and_exit_2(tmp_path):
    """The installed entry point, as cron runs it: no traceback, no TensorFlow chatter."""
    result = subprocess.run(
        [sys.executable, "-m", "batch_infer", "run", "--model", SAMPLE_MODEL, "--input", SAMPLE_IMAGES,
         "--output", str(tmp_path / "out"), "--signature", "nope"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"batch-infer: error: Signature 'nope' not found in {SAMPLE_MODEL}; available: serve, "
        "serving_default. Choose one with --signature."]
