"""Shared fixtures: real SavedModels of every supported signature shape, and real image folders."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from support import images, models

from batch_infer.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_MODEL = os.path.join(REPO, "sample_data", "digits_model")
SAMPLE_IMAGES = os.path.join(REPO, "sample_data", "images")


CACHE_ENV = "BATCH_INFER_CACHE_DIR"  # onnx_runtime.CACHE_ENV, named here without importing TensorFlow


@pytest.fixture(scope="session", autouse=True)
def conversion_cache(tmp_path_factory):
    """One cache of --runtime onnx conversions for the session, never the user's own; set before
    any Ray worker starts, as they take the environment the session had then."""
    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("conversion_cache"))
    yield os.environ[CACHE_ENV]
    if saved is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = saved


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """Builds each model once per test session: {kind: path}."""
    root = tmp_path_factory.mktemp("models")
    return {
        "float": str(models.save_float_probabilities(root / "float")),
        "uint8_logits": str(models.save_uint8_logits(root / "uint8_logits")),
        "encoded": str(models.save_encoded_bytes(root / "encoded")),
        "several": str(models.save_several_outputs(root / "several", ambiguous=False)),
        "ambiguous": str(models.save_several_outputs(root / "ambiguous", ambiguous=True)),
        "dynamic": str(models.save_dynamic_size(root / "dynamic")),
        "grayscale": str(models.save_float_probabilities(root / "grayscale", channels=1)),
        "keras": str(models.save_keras_export(root / "keras")),
    }


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    """Nested folders, spaces in names, PNG and JPEG at sizes other than the models' 16x16,
    and one truncated JPEG."""
    root = tmp_path_factory.mktemp("images")
    for i in range(12):
        folder = ["", "cats", "dogs/puppies", "with space"][i % 4]
        name = f"{folder}/img {i:02d}.png" if i % 3 else f"{folder}/img_{i:02d}.jpg"
        images.write_image(root / name.lstrip("/"), images.random_pixels(i, 16 + 4 * (i % 3), 16 + 3 * (i % 4)))
    images.write_truncated_jpeg(root / "cats" / "broken.jpg")
    (root / "notes.txt").write_text("not an image")
    return str(root)


ODD_NAME = "with space/<b>odd & 'name'.png"  # needs escaping in HTML, quoting in URLs
BROKEN_NAME = "seven/<script>broken & 'odd'.jpg"


@pytest.fixture(scope="session")
def scored_sample(tmp_path_factory):
    """20 sample images (2 per class), an oddly named copy of one and a truncated JPEG with an
    odd name, scored once: (input dir, output dir)."""
    root = tmp_path_factory.mktemp("scored")
    images_dir, out = root / "images", root / "out"
    for folder in sorted(Path(SAMPLE_IMAGES).iterdir()):
        for source in sorted(p for p in folder.iterdir() if "truncated" not in p.name)[:2]:
            (images_dir / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, images_dir / folder.name / source.name)
    (images_dir / ODD_NAME).parent.mkdir()
    shutil.copy(source, images_dir / ODD_NAME)
    shutil.copy(Path(SAMPLE_IMAGES) / "seven" / "truncated.jpg", images_dir / BROKEN_NAME)
    assert main(["run", "--model", SAMPLE_MODEL, "--input", str(images_dir), "--output", str(out),
                 "--quiet"]) == 0
    return images_dir, out


def invoke(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """Runs `batch-infer ARGV` in-process: (exit code, parsed last stdout line, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (json.loads(lines[-1]) if lines else None), captured.err


def run_cli(capsys, *args: str) -> tuple[int, dict | None, str]:
    return invoke(capsys, "run", *args)


def read_output(out: str, columns: list[str] | None = None) -> pd.DataFrame:
    """OUT read back as a reader would, with pyarrow.dataset (which skips the `_`/`.` names of
    unfinished parts and bookkeeping): one row per row of OUT, sorted by path. An s3://... OUT is
    opened through fsspec, without its listing cache, so that parts committed since count.

    pandas shows a null as NaN (in string columns too), so float columns are checked to hold no
    NaN of their own: in the frame, pd.isna(cell) means the cell is null."""
    filesystem = None
    if "://" in out:
        import fsspec

        filesystem, out = fsspec.core.url_to_fs(out, skip_instance_cache=True)
    if columns is not None and "path" not in columns:
        columns = ["path", *columns]
    dataset = ds.dataset(out, format="parquet", filesystem=filesystem)
    if not dataset.files:  # every row dropped for rescoring, none committed again yet
        return pd.DataFrame({"path": pd.Series([], dtype=object)})
    table = dataset.to_table(columns=columns)
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_floating(column.type):
            assert not pc.any(pc.is_nan(column)).as_py(), f"{name} holds NaN values; a missing value is null"
    return table.to_pandas().sort_values("path", ignore_index=True, kind="stable")


def read_metadata(out: str) -> dict[str, str]:
    """The `batch_infer.*` key-value metadata of OUT's parts, without the prefix, as
    pyarrow.dataset gives it (from the first part)."""
    metadata = ds.dataset(out, format="parquet").schema.metadata
    return {key.decode().removeprefix("batch_infer."): value.decode() for key, value in metadata.items()
            if key.startswith(b"batch_infer.")}


def skip_or_fail(message: str) -> None:
    """Skips a test whose tool or package is missing, except under CI=true, where a skip would
    hide that the test never ran: there it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}. CI=true, so this test must run, not skip.")
    pytest.skip(message)


# --- scale-out: one moto S3 server and one local Ray for the whole session -----------------------

FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def missing(what: str) -> None:
    skip_or_fail(f"{what} not installed; pip install -e '.[dev]' to run the scale-out tests")


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


@pytest.fixture(scope="session")
def fake_s3():
    """A moto S3 endpoint on 127.0.0.1 and fake credentials in the environment, or None without
    moto. Started before Ray because Ray's workers take the environment the driver had at
    ray.init, and they read from S3 too."""
    if not installed("moto", "s3fs"):
        yield None
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fake = {**FAKE_AWS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {name: os.environ.pop(name, None) for name in [*fake, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(fake)
    yield fake["AWS_ENDPOINT_URL"]
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(fake_s3):
    if not installed("ray"):
        missing("ray[data] is")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             object_store_memory=256 * 2**20)
    yield ray
    ray.shutdown()


