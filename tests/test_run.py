"""End to end: every supported signature shape, scores checked against direct signature calls."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from support import images
from conftest import SAMPLE_IMAGES, SAMPLE_MODEL, read_metadata, read_output, run_cli

CAFFE_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


def read_rows(output: str) -> dict[str, dict]:
    """{path: row}, after checking that no path appears twice."""
    rows = read_output(output)
    assert rows.path.is_unique, "a path appears twice"
    return {row["path"]: row for row in rows.to_dict("records")}


def image_files(root: str) -> set[str]:
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith((".jpg", ".jpeg", ".png")):
                found.add(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return found


def direct_scores(model: str, signature: str, image_path: str, size, channels: int, dtype,
                  preprocess: str, activation: str) -> np.ndarray:
    """What a user gets by hand: decode, resize (bilinear, antialiased), scale, call, activate."""
    function = tf.saved_model.load(model).signatures[signature]
    data = tf.io.read_file(image_path)
    if dtype == tf.string:
        batch = tf.stack([data])
    else:
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        if dtype == tf.uint8:
            pixels = image if tuple(image.shape[:2]) == size else tf.cast(tf.round(tf.clip_by_value(
                tf.image.resize(image, size, antialias=True), 0, 255)), tf.uint8)
        else:
            pixels = tf.image.resize(image, size, antialias=True)
            pixels = {"raw": pixels, "unit": pixels / 255.0, "symmetric": pixels / 127.5 - 1.0,
                      "caffe": pixels[..., ::-1] - CAFFE_MEAN}[preprocess]
        batch = tf.cast(pixels, dtype)[tf.newaxis]
    (input_name,) = function.structured_input_signature[1]
    outputs = function(**{input_name: batch})
    output = tf.cast(outputs.get("probabilities", next(iter(outputs.values()))), tf.float32)
    if activation == "softmax":
        output = tf.nn.softmax(output)
    return output.numpy()[0]


CASES = {
    # kind: (extra flags, signature, size, channels, dtype, preprocess, expected activation)
    "float": ([], "serving_default", (16, 16), 3, tf.float32, "raw", "none"),
    "float_caffe": (["--preprocess", "caffe"], "serving_default", (16, 16), 3, tf.float32, "caffe", "none"),
    "uint8_logits": (["--signature", "classify"], "classify", (16, 16), 3, tf.uint8, "raw", "softmax"),
    "encoded": ([], "serving_default", None, None, tf.string, "raw", "none"),
    "several": ([], "serving_default", (16, 16), 3, tf.float32, "raw", "none"),
    "dynamic": (["--image-size", "20x24"], "serving_default", (20, 24), 3, tf.float32, "raw", "none"),
    "grayscale": (["--preprocess", "unit"], "serving_default", (16, 16), 1, tf.float32, "unit", "none"),
    "keras": ([], "serving_default", (16, 16), 3, tf.float32, "raw", "none"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scores_equal_direct_signature_calls(case, model_dir, image_dir, tmp_path, capsys):
    flags, signature, size, channels, dtype, preprocess, activation = CASES[case]
    model = model_dir[case.split("_caffe")[0]]
    output = str(tmp_path / "out")
    code, summary, err = run_cli(capsys, "--model", model, "--input", image_dir, "--output", output,
                                 "--batch-size", "5", *flags)
    assert code == 0, err
    expected_paths = image_files(image_dir)
    rows = read_rows(output)
    assert set(rows) == expected_paths
    assert summary["files"] == len(expected_paths) and summary["errors"] == 1
    assert summary["ok"] == len(expected_paths) - 1 and summary["skipped"] == 0
    broken = rows.pop("cats/broken.jpg")
    assert broken["status"] == "error" and broken["error"].startswith(("decode: ", "model: "))
    assert pd.isna(broken["label"]) and pd.isna(broken["score"])

    metadata = read_metadata(output)
    assert metadata["activation"] == activation
    assert metadata["signature"] == signature
    for path, row in rows.items():
        expected = direct_scores(model, signature, os.path.join(image_dir, path), size, channels,
                                 dtype, preprocess, activation)
        order = np.argsort(-expected, kind="stable")[: len(row["top_k_indices"])]
        assert row["status"] == "ok" and pd.isna(row["error"])
        np.testing.assert_allclose(row["top_k_scores"], expected[order], atol=1e-5)
        assert list(row["top_k_indices"]) == order.tolist()
        assert row["label"] == str(order[0]) and row["score"] == pytest.approx(expected[order[0]], abs=1e-5)
        assert list(row["top_k_labels"]) == [str(i) for i in order]


def test_a_file_the_model_refuses_late_in_a_read_batch_is_the_only_error_row(model_dir, tmp_path, capsys):
    """Several model batches of small files are read and scored as one job: when the model
    refuses one input (an encoded-bytes model and a truncated JPEG), only that file's row is an
    error, in whichever model batch of the job it falls, and the others keep their own scores."""
    root = tmp_path / "in"
    for i in range(9):
        images.write_image(root / f"{i}.png", images.random_pixels(i, 18, 20))
    images.write_truncated_jpeg(root / "7b.jpg")  # the 9th of 10 files, in the 5th model batch of 2
    output = str(tmp_path / "out")
    code, summary, err = run_cli(capsys, "--model", model_dir["encoded"], "--input", str(root),
                                 "--output", output, "--batch-size", "2")
    assert code == 0, err
    assert (summary["ok"], summary["errors"]) == (9, 1)
    rows = read_rows(output)
    assert [path for path, row in rows.items() if row["status"] == "error"] == ["7b.jpg"]
    assert rows["7b.jpg"]["error"].startswith("model: ")
    for i in range(9):
        expected = direct_scores(model_dir["encoded"], "serving_default", str(root / f"{i}.png"), None, None,
                                 tf.string, "raw", "none")
        np.testing.assert_allclose(rows[f"{i}.png"]["top_k_scores"], np.sort(expected)[::-1][:5], atol=1e-6)


def test_sample_model_with_labels_read_back_with_duckdb(tmp_path, capsys):
    output = str(tmp_path / "demo")
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", SAMPLE_IMAGES,
                                 "--output", output, "--top-k", "50")
    assert code == 0, err
    assert summary["ok"] >= 100 and summary["errors"] == 1
    con = duckdb.connect()
    total, ok, correct, k = con.execute(f"""
        select count(*), count(*) filter (status = 'ok'),
               count(*) filter (status = 'ok' and label = split_part(path, '/', 1)),
               max(len(top_k_labels))
        from read_parquet('{output}/*.parquet')""").fetchone()
    assert total == len(image_files(SAMPLE_IMAGES)) and ok == total - 1
    assert correct / ok > 0.9, "the sample classifier should recognise its held-out digits"
    assert k == 10, "--top-k is capped at the number of classes"
    labels_source = con.execute(f"""select value from parquet_kv_metadata('{output}/*.parquet')
                                    where key = 'batch_infer.labels_source' limit 1""").fetchone()[0]
    assert labels_source.decode().endswith("labels.txt")


def test_job_file_paths_are_relative_to_it_and_flags_win(tmp_path, capsys):
    job = tmp_path / "jobs" / "score.toml"
    job.parent.mkdir()
    os.symlink(SAMPLE_MODEL, tmp_path / "model")
    job.write_text('model = "../model"\ninput = "%s"\noutput = "../out"\ntop_k = 2\n' % SAMPLE_IMAGES)
    code, summary, err = run_cli(capsys, "--job", str(job), "--top-k", "3", "--quiet")
    assert code == 0, err
    rows = read_rows(str(tmp_path / "out"))
    assert {len(row["top_k_labels"]) for row in rows.values() if row["status"] == "ok"} == {3}
    assert summary["output"] == str(tmp_path / "out")


def test_binary_sigmoid_output_becomes_two_classes(tmp_path, capsys, image_dir):
    module = tf.Module()
    module.w = tf.Variable(tf.ones([3, 1]) * 0.01)
    spec = tf.TensorSpec([None, 8, 8, 3], tf.float32)
    function = tf.function(lambda x: {"logit": tf.reduce_mean(x, axis=(1, 2)) @ module.w - 1.0},
                           input_signature=[spec])
    tf.saved_model.save(module, str(tmp_path / "binary"), signatures={"serving_default": function})
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    code, summary, err = run_cli(capsys, "--model", str(tmp_path / "binary"), "--input", image_dir,
                                 "--output", str(tmp_path / "out"), "--labels", str(tmp_path / "labels.txt"))
    assert code == 0, err
    rows = [row for row in read_rows(str(tmp_path / "out")).values() if row["status"] == "ok"]
    assert all(set(row["top_k_labels"]) == {"cat", "dog"} for row in rows)
    assert all(abs(sum(row["top_k_scores"]) - 1.0) < 1e-5 for row in rows)


@pytest.mark.parametrize("scaled", [True, False])
def test_large_jpegs_decode_at_reduced_scale_unless_turned_off(scaled, model_dir, tmp_path, capsys):
    """A 1200x900 JPEG for a 16x16 model decodes at 1/8 scale (150x113, still above 16) in the
    JPEG decoder; --no-scaled-decode gives exactly the plain full decode."""
    source = tmp_path / "in"
    path = images.write_image(source / "big.jpg", images.random_pixels(5, 900, 1200))
    flag = "--scaled-decode" if scaled else "--no-scaled-decode"
    code, _, err = run_cli(capsys, "--model", model_dir["float"], "--input", str(source),
                           "--output", str(tmp_path / "out"), flag)
    assert code == 0, err
    (row,) = read_rows(str(tmp_path / "out")).values()
    decoded = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, ratio=8 if scaled else 1)
    assert decoded.shape[:2] == ((113, 150) if scaled else (900, 1200))
    batch = tf.image.resize(decoded, (16, 16), antialias=True)[tf.newaxis]
    expected = tf.saved_model.load(model_dir["float"]).signatures["serving_default"](images=batch)
    np.testing.assert_allclose(row["top_k_scores"], np.sort(expected["probabilities"].numpy()[0])[::-1],
                               atol=1e-5)
    assert read_metadata(str(tmp_path / "out"))["scaled_decode"] == ("true" if scaled else "false")
