"""Keras files and SavedModels beyond one classification output: embeddings (a signature output,
a Keras layer, the penultimate layer), kept raw outputs, headless extractors, and the readers
that turn the `embedding` column into a matrix. Every vector is checked against a direct call
of the model on the same prepared image."""

from __future__ import annotations

import json
import os

import duckdb
import keras
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import tensorflow as tf

from support import models
from conftest import read_metadata, run_cli
from test_errors import assert_refused
from batch_infer import api
from batch_infer.config import build_config
from batch_infer.scorer import Scorer

SIZE = (models.SIZE, models.SIZE)
BROKEN = "cats/broken.jpg"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras")
    return {
        "functional.keras": str(models.save_keras_file(root / "functional.keras", "functional")),
        "functional.h5": str(models.save_keras_file(root / "functional.h5", "functional")),
        "sequential.keras": str(models.save_keras_file(root / "sequential.keras", "sequential")),
        "sequential.h5": str(models.save_keras_file(root / "sequential.h5", "sequential")),
        "extractor.keras": str(models.save_keras_extractor(root / "extractor.keras")),
        "probs_features": str(models.save_probs_and_features(root / "probs_features")),
        "headless": str(models.save_headless_extractor(root / "headless")),
    }

# Columns every run writes whatever its heads: the listing's and the decoder's.
FILE_COLUMNS = {"file_size", "file_mtime", "width", "height", "content_hash", "phash", "mean_colour", "decoder"}


def head_columns(result) -> list[str]:
    return [name for name in result.schema.names if name not in FILE_COLUMNS]


def prepared(image_path: str) -> tf.Tensor:
    """The model input a user makes by hand: decode, resize (bilinear, antialiased), batch of one."""
    image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
    return tf.image.resize(image, SIZE, antialias=True)[tf.newaxis]


def table(output: str) -> pa.Table:
    return ds.dataset(output, format="parquet").to_table()


def rows_by_path(output: str) -> dict[str, dict]:
    return {row["path"]: row for row in table(output).to_pylist()}


def pooled(value: np.ndarray) -> np.ndarray:
    return value.mean(axis=tuple(range(1, value.ndim - 1))) if value.ndim > 2 else value


# file, --embedding-layer, the layer whose output is the embedding, pooled from a feature map
KERAS_CASES = [
    ("functional.keras", "penultimate", "hidden", False),
    ("sequential.h5", "conv", "conv", True),
    ("functional.h5", "pool", "pool", False),
    ("sequential.keras", "hidden", "hidden", False),
]


@pytest.mark.parametrize("name, layer, source, is_map", KERAS_CASES)
def test_keras_files_give_classes_and_layer_embeddings_of_direct_calls(
        name, layer, source, is_map, model_files, image_dir, tmp_path, capsys):
    path, output = model_files[name], str(tmp_path / "out")
    flags = ["--normalize-embeddings"] if name == "sequential.keras" else []
    code, summary, err = run_cli(capsys, "--model", path, "--input", image_dir, "--output", output,
                                 "--batch-size", "5", "--embedding-layer", layer, *flags)
    assert code == 0, err
    assert (summary["ok"], summary["errors"]) == (12, 1)
    result = table(output)
    assert result.schema.field("embedding").type == pa.list_(pa.float32(), 8 if source in ("conv", "pool") else 6)
    rows = {row["path"]: row for row in result.to_pylist()}
    broken = rows.pop(BROKEN)
    assert broken["embedding"] is None and broken["label"] is None

    keras_model = keras.saving.load_model(path, compile=False)
    sub_model = keras.Model(keras_model.inputs, [keras_model.outputs[0], keras_model.get_layer(source).output])
    for relative, row in rows.items():
        probs, features = (np.asarray(value) for value in sub_model(prepared(os.path.join(image_dir, relative))))
        expected = pooled(features)[0]
        if flags:
            expected = expected / np.linalg.norm(expected)
        np.testing.assert_allclose(row["embedding"], expected, atol=1e-5)
        order = np.argsort(-probs[0], kind="stable")
        assert row["top_k_indices"] == order.tolist()
        np.testing.assert_allclose(row["top_k_scores"], probs[0][order], atol=1e-5)

    meta = read_metadata(output)
    assert meta["model_format"] == "keras" and "signature" not in meta
    assert meta["embedding_dim"] == str(len(expected)) and meta["output_key"] == "probs"
    assert meta["embedding_pooling"] == ("global average over 14x14 positions" if is_map else "none")
    assert meta["embedding_normalized"] == ("l2" if flags else "none")
    assert ("Dense layer 'probs'" in meta["embedding_source"]) == (layer == "penultimate")


def test_keras_file_scores_like_its_export_and_traces_once(model_files, image_dir, tmp_path, capsys):
    """The .keras file and its model.export() SavedModel give the same table; the last, partial
    batch goes through the one traced function."""
    path = model_files["functional.keras"]
    exported = str(tmp_path / "exported")
    keras.saving.load_model(path, compile=False).export(exported, verbose=False)
    for model, output in ((path, "from_file"), (exported, "from_export")):
        code, _, err = run_cli(capsys, "--model", model, "--input", image_dir,
                               "--output", str(tmp_path / output), "--batch-size", "5", "--quiet")
        assert code == 0, err
    from_file, from_export = rows_by_path(str(tmp_path / "from_file")), rows_by_path(str(tmp_path / "from_export"))
    assert set(from_file) == set(from_export)
    for key, row in from_file.items():
        assert row["top_k_indices"] == from_export[key]["top_k_indices"] and row["status"] == from_export[key]["status"]
        if row["status"] == "ok":
            np.testing.assert_allclose(row["top_k_scores"], from_export[key]["top_k_scores"], atol=1e-5)

    scorer = Scorer.load(build_config({"model": path, "input": image_dir, "output": str(tmp_path / "x")}))
    for rows in (5, 2, 1):
        scorer.model.predict(tf.zeros((rows, *SIZE, 3)))
    assert scorer.model.function.traced.experimental_get_tracing_count() == 1


@pytest.fixture(scope="module")
def probs_features_output(model_files, image_dir, tmp_path_factory):
    """The probs + features SavedModel scored once with --embedding-key features, the scalar
    output kept, and the probabilities both kept raw and classified (--output-key, since
    keeping the only class scores alone writes them raw instead): (output dir, model path)."""
    from batch_infer.cli import main

    output = str(tmp_path_factory.mktemp("pf") / "out")
    assert main(["run", "--model", model_files["probs_features"], "--input", image_dir, "--output",
                 output, "--embedding-key", "features", "--keep-output", "brightness",
                 "--keep-output", "probs", "--output-key", "probs", "--batch-size", "5", "--quiet"]) == 0
    return output, model_files["probs_features"]


def test_signature_features_next_to_classes_equal_direct_calls(probs_features_output, image_dir):
    output, model = probs_features_output
    result = table(output)
    assert head_columns(result) == ["path", "status", "error", "label", "score", "top_k_labels",
                                   "top_k_indices", "top_k_scores", "embedding", "output_brightness",
                                   "output_probs"]
    assert result.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    assert result.schema.field("output_brightness").type == pa.float32()
    assert result.schema.field("output_probs").type == pa.list_(pa.float32(), 5)
    rows = {row["path"]: row for row in result.to_pylist()}
    broken = rows.pop(BROKEN)
    assert all(broken[column] is None for column in ("embedding", "output_brightness", "output_probs",
                                                     "label", "score"))
    signature = tf.saved_model.load(model).signatures["serving_default"]
    for relative, row in rows.items():
        direct = {key: value.numpy()[0] for key, value in signature(images=prepared(os.path.join(image_dir, relative))).items()}
        np.testing.assert_allclose(row["embedding"], direct["features"], atol=1e-5)
        np.testing.assert_allclose(row["output_probs"], direct["probs"], atol=1e-5)
        assert row["output_brightness"] == pytest.approx(float(direct["brightness"]), abs=1e-5)
        assert row["top_k_indices"][0] == int(np.argmax(direct["probs"]))
    meta = read_metadata(output)
    assert (meta["embedding_key"], meta["embedding_dim"], meta["output_key"]) == ("features", "8", "probs")
    assert meta["embedding_source"] == "output 'features' of signature 'serving_default'"
    assert meta["task"] == "classify" and meta["model_format"] == "saved_model"


def test_readers_duckdb_pandas_polars_and_load_embeddings(probs_features_output):
    output, _ = probs_features_output
    paths, matrix = api.load_embeddings(output)
    assert matrix.dtype == np.float32 and matrix.shape == (12, 8) and matrix.flags["C_CONTIGUOUS"]
    assert BROKEN not in paths and len(paths) == len(set(paths)) == 12
    by_path = {row["path"]: row["embedding"] for row in table(output).to_pylist()}
    np.testing.assert_array_equal(matrix, np.array([by_path[path] for path in paths], np.float32))

    # DuckDB reads the column back as a list: cast it to a fixed-size array for the array functions.
    query = f"""
        with e as (select path, embedding::FLOAT[8] as v from read_parquet('{output}/*.parquet')
                   where status = 'ok')
        select b.path, array_cosine_similarity(a.v, b.v) as similarity
        from e a, e b where a.path = '{paths[0]}' order by similarity desc limit 3"""
    nearest = duckdb.sql(query).fetchall()
    assert nearest[0][0] == paths[0] and nearest[0][1] == pytest.approx(1.0, abs=1e-6)
    cosine = matrix @ matrix[0] / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(matrix[0]))
    assert [path for path, _ in nearest] == [paths[i] for i in np.argsort(-cosine, kind="stable")[:3]]

    # pandas / pyarrow: one contiguous matrix from the Arrow buffer, no loop over rows.
    ok = ds.dataset(output, format="parquet").to_table(filter=ds.field("status") == "ok")
    column = ok.column("embedding").combine_chunks()
    vectors = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    frame = ok.select(["path"]).to_pandas()
    np.testing.assert_array_equal(vectors, matrix[[paths.index(path) for path in frame["path"]]])

    import polars as pl

    frame = pl.read_parquet(f"{output}/*.parquet").filter(pl.col("status") == "ok")
    assert frame.schema["embedding"] == pl.Array(pl.Float32, 8)
    polars_matrix = frame["embedding"].to_numpy()
    assert polars_matrix.shape == (12, 8)
    np.testing.assert_array_equal(polars_matrix, matrix[[paths.index(path) for path in frame["path"]]])


def test_headless_extractors_write_vectors_not_classes(model_files, image_dir, tmp_path, capsys):
    output = str(tmp_path / "refused")
    assert_refused(capsys, output, "--model", model_files["headless"], "--input", image_dir,
                   "--output", output, mentions=("looks like features", "--task embed"))

    for name, dim in (("headless", 32), ("extractor.keras", 8)):
        output = str(tmp_path / name)
        code, summary, err = run_cli(capsys, "--model", model_files[name], "--input", image_dir,
                                     "--output", output, "--task", "embed", "--quiet")
        assert code == 0, err
        result = table(output)
        assert head_columns(result) == ["path", "status", "error", "embedding"]
        assert result.schema.field("embedding").type == pa.list_(pa.float32(), dim)
        assert read_metadata(output)["task"] == "embed"
    rows = rows_by_path(output)
    assert rows.pop(BROKEN)["embedding"] is None
    extractor = keras.saving.load_model(model_files["extractor.keras"], compile=False)
    for relative, row in rows.items():
        np.testing.assert_allclose(row["embedding"], np.asarray(extractor(prepared(
            os.path.join(image_dir, relative))))[0], atol=1e-5)


def test_keep_output_alone_on_a_model_without_classes(model_files, image_dir, tmp_path, capsys):
    """--keep-output of the only [batch, D] output leaves no class scores: no class columns."""
    output = str(tmp_path / "out")
    code, _, err = run_cli(capsys, "--model", model_files["headless"], "--input", image_dir,
                           "--output", output, "--keep-output", "output_0", "--quiet")
    assert code == 0, err
    assert head_columns(table(output)) == ["path", "status", "error", "output_output_0"]


def test_model_choices_that_cannot_work_are_refused(model_files, image_dir, tmp_path, capsys):
    output = str(tmp_path / "out")
    common = ["--input", image_dir, "--output", output]
    keras_file = model_files["functional.keras"]
    assert_refused(capsys, output, "--model", keras_file, "--embedding-layer", "nope", *common,
                   mentions=("Layer 'nope' is not in the Keras model", "conv, pool, hidden"))
    assert_refused(capsys, output, "--model", model_files["extractor.keras"], "--embedding-layer",
                   "penultimate", *common, mentions=("no Dense layer", "--embedding-layer NAME"))
    assert_refused(capsys, output, "--model", model_files["probs_features"], *common,
                   mentions=("features, probs", "--output-key"))
    assert_refused(capsys, output, "--model", model_files["probs_features"], "--task", "embed", *common,
                   mentions=("features, probs", "--embedding-key"))
    assert_refused(capsys, output, "--model", model_files["probs_features"], "--embedding-key",
                   "brightness", *common, mentions=("not a [batch, D] float vector",))
    assert_refused(capsys, output, "--model", model_files["probs_features"], "--embedding-layer",
                   "pool", *common, mentions=("--embedding-layer needs a Keras", "--embedding-key"))


def inspect(capsys, *argv: str) -> str:
    from batch_infer.cli import main

    code = main(["inspect", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_inspect_shows_layers_and_embedding_outputs(model_files, capsys):
    text = inspect(capsys, model_files["sequential.h5"])
    assert text.startswith("Keras model ") and "input  image: float32 [None, 16, 16, 3]" in text
    assert "output probs: float32 [None, 4]" in text
    assert "conv: float32 [None, 14, 14, 8] (averaged to [batch, 8])" in text
    assert "hidden: float32 [None, 6]" in text and "scale:" not in text
    assert "penultimate: the input of the final Dense layer 'probs'" in text
    assert "output key  probs (4 classes)" in text

    text = inspect(capsys, model_files["probs_features"], "--output-key", "probs")
    assert "embedding outputs (--embedding-key KEY, or --task embed):\n  features: float32 [None, 8]" in text
    text = inspect(capsys, model_files["headless"])
    assert "run would stop: Output output_0" in text and "output_0: float32 [None, 32]" in text

    from conftest import SAMPLE_MODEL

    text = inspect(capsys, SAMPLE_MODEL)
    assert "a SavedModel keeps no usable layers" in text and "--embedding-key features" in text
    info = json.loads(inspect(capsys, model_files["functional.keras"], "--json"))
    assert info["format"] == "keras" and info["penultimate"] == "probs"
    assert [layer["name"] for layer in info["embedding_layers"]] == ["conv", "pool", "hidden"]


def test_ray_engine_gives_the_local_table_with_embeddings(ray_cluster, model_files, image_dir, tmp_path, capsys):
    flags = ["--model", model_files["functional.keras"], "--input", image_dir, "--embedding-layer",
             "conv", "--keep-output", "probs", "--output-key", "probs", "--batch-size", "4", "--quiet"]
    for engine in ("local", "ray"):
        code, summary, err = run_cli(capsys, *flags, "--output", str(tmp_path / engine), "--engine", engine)
        assert code == 0 and (summary["ok"], summary["errors"]) == (12, 1), err
    local, ray = table(str(tmp_path / "local")), table(str(tmp_path / "ray"))
    assert ray.schema == local.schema
    local_rows = sorted(local.to_pylist(), key=lambda row: row["path"])
    ray_rows = sorted(ray.to_pylist(), key=lambda row: row["path"])
    assert [row["path"] for row in ray_rows] == [row["path"] for row in local_rows]
    for got, want in zip(ray_rows, local_rows):
        assert (got["status"], got["error"], got["top_k_indices"]) == (want["status"], want["error"], want["top_k_indices"])
        for column in ("embedding", "output_probs", "top_k_scores"):
            if want[column] is None:
                assert got[column] is None
            else:
                np.testing.assert_allclose(got[column], want[column], atol=1e-5)


def test_parts_are_bounded_in_bytes_as_well_as_rows(tmp_path):
    """1,280-d embeddings: 100 rows of 5 KiB each commit at a 128 KiB bound before 2000 rows."""
    from batch_infer.heads import Embedding
    from batch_infer.scorer import Rows
    from batch_infer.sink import PartWriter

    head = Embedding("features", 1280, "test", None, normalize=False)
    rows = Rows([head])
    writer = PartWriter(str(tmp_path), "test", rows.schema, {}, max_rows=2000, max_bytes=128 * 2**10,
                        clock=lambda: 0.0)
    for batch in range(10):
        vectors = np.random.default_rng(batch).normal(size=(10, 1280)).astype(np.float32)
        writer.add(rows.ok([f"{batch}-{i}" for i in range(10)], {"features": vectors}))
    writer.commit()
    parts = ds.dataset(str(tmp_path), format="parquet")
    sizes = [fragment.count_rows() for fragment in parts.get_fragments()]
    assert sum(sizes) == 100 and max(sizes) <= 30 and len(sizes) >= 4
