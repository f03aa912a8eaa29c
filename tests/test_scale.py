"""Scale-out: the Ray engine and object storage give the rows the local engine gives on disk.

One local Ray (2 CPUs, no dashboard) and one moto S3 server on 127.0.0.1 (fixtures in conftest.py)
serve the whole session, and the local engine scores the reference rows once per module. Every
test runs under a timeout, so a hang fails the test instead of stalling CI. Without ray, moto or
s3fs the tests that need them are skipped, except in CI, where they must run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pandas as pd
import pytest

from support import images
from conftest import SAMPLE_MODEL, invoke, missing, read_metadata, read_output, run_cli
from batch_infer.cli import main
from batch_infer import api
from batch_infer.config import ConfigError, build_config
from batch_infer.listing import ListedFile
from batch_infer.ray_engine import check_resources

CORRUPT = {"broken/truncated.jpg", "broken/empty.png", "broken/text.jpg"}
pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def s3(fake_s3):
    """An empty bucket on the fake S3: its s3:// URL."""
    if fake_s3 is None:
        missing("moto[server] and s3fs are")
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = f"test-{os.urandom(4).hex()}"
    fs.mkdir(bucket)
    return f"s3://{bucket}"


@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory):
    """50 files: 47 PNGs and JPEGs of several sizes in nested folders, and 3 that cannot decode."""
    root = tmp_path_factory.mktemp("fifty")
    for i in range(47):
        name = f"{['', 'a/', 'a/b/', 'c d/'][i % 4]}img{i:02d}.{'png' if i % 3 else 'jpg'}"
        images.write_image(root / name, images.random_pixels(i, 24 + i % 5 * 8, 32 + i % 3 * 8))
    (root / "broken").mkdir()
    images.write_truncated_jpeg(root / "broken" / "truncated.jpg")
    (root / "broken" / "empty.png").write_bytes(b"")
    (root / "broken" / "text.jpg").write_text("<html>not an image</html>")
    return str(root)


@pytest.fixture(scope="module")
def baseline(corrupt_dir, tmp_path_factory) -> pd.DataFrame:
    """The local engine's rows for corrupt_dir on disk, scored once: what the Ray engine, the API
    and object storage must all give."""
    output = str(tmp_path_factory.mktemp("baseline") / "out")
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        code = main(["run", "--model", SAMPLE_MODEL, "--input", corrupt_dir, "--output", output, "--quiet"])
    summary = json.loads(stdout.getvalue().strip().splitlines()[-1])
    assert code == 0 and (summary["files"], summary["errors"]) == (50, 3), summary
    return read_output(output)


def _plain(value):
    """A cell as Python compares it: lists for arrays, None for every kind of null."""
    if isinstance(value, (list, np.ndarray)):
        return list(value)
    return None if pd.isna(value) else value


def assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Row for row: paths, statuses, errors, labels and fingerprints exactly; scores to 1e-5."""
    assert actual.path.tolist() == expected.path.tolist()
    for got, want in zip(actual.to_dict("records"), expected.to_dict("records")):
        for column in ("status", "error", "label", "top_k_labels", "top_k_indices", "content_hash", "phash"):
            assert _plain(got[column]) == _plain(want[column]), (got["path"], column)
        if want["status"] == "ok":
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            np.testing.assert_allclose(got["top_k_scores"], want["top_k_scores"], atol=1e-5)


def s3_filesystem():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


# --- no cluster needed ---------------------------------------------------------------------------


def test_resource_check_names_what_the_cluster_lacks():
    check_resources({"CPU": 4.0, "GPU": 2.0}, concurrency=2, num_gpus=1)
    with pytest.raises(ConfigError, match="needs 9 CPUs .* has 2"):
        check_resources({"CPU": 2.0}, concurrency=8, num_gpus=0)
    with pytest.raises(ConfigError, match="needs 2 CPUs"):  # every CPU held by an actor hangs
        check_resources({"CPU": 1.0}, concurrency=1, num_gpus=0)
    with pytest.raises(ConfigError, match="needs 1 GPUs .* has 0"):
        check_resources({"CPU": 8.0}, concurrency=2, num_gpus=0.5)


@pytest.mark.parametrize("flags, message", [
    (["--concurrency", "2"], "--concurrency only applies to --engine ray"),
    (["--engine", "ray", "--num-gpus", "-1"], "--num-gpus must be"),
    (["--engine", "spark"], "--engine must be one of local, ray"),
    (["--engine", "ray", "--device", "gpu"], "--device gpu with --engine ray needs --num-gpus"),
])
def test_engine_options_are_checked_up_front(flags, message, corrupt_dir, tmp_path, capsys):
    output = str(tmp_path / "out")
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", corrupt_dir,
                                 "--output", output, *flags)
    assert code == 2 and message in err and summary is None
    assert not os.path.exists(output)


# --- Ray -----------------------------------------------------------------------------------------


def test_ray_engine_gives_the_local_table_row_for_row(ray_cluster, corrupt_dir, baseline, tmp_path, capsys):
    output = str(tmp_path / "ray")
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", corrupt_dir,
                                 "--output", output, "--engine", "ray", "--batch-size", "8", "--quiet")
    assert code == 0, err
    assert {key: summary[key] for key in ("files", "ok", "errors", "skipped")} == \
        {"files": 50, "ok": 47, "errors": 3, "skipped": 0}
    rows = read_output(output)
    assert_same_rows(rows, baseline)
    assert set(rows.path[rows.status == "error"]) == CORRUPT
    assert all(name.startswith("part-") or name.startswith(".") for name in os.listdir(output))
    metadata = read_metadata(output)
    assert metadata["engine"] == "ray" and metadata["signature"] == "serving_default"

    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", corrupt_dir,
                                 "--output", output, "--engine", "ray", "--quiet")
    assert code == 0 and summary["skipped"] == 50 and summary["ok"] == 0, err


def test_ray_engine_on_onnx_runtime_gives_the_local_table(ray_cluster, corrupt_dir, baseline, tmp_path, capsys):
    """The driver gates; the actors take its conversion from the cache and score on ONNX Runtime."""
    output = str(tmp_path / "ray-onnx")
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", corrupt_dir, "--output", output,
                                 "--engine", "ray", "--runtime", "onnx")
    assert code == 0 and "--runtime onnx:" not in err, err
    assert_same_rows(read_output(output), baseline)
    assert read_metadata(output)["runtime"] == "onnx" and "agreed with TensorFlow" in err


def test_more_actors_than_cpus_is_refused_before_any_work(ray_cluster, corrupt_dir, tmp_path, capsys):
    output = str(tmp_path / "out")
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", corrupt_dir,
                                 "--output", output, "--engine", "ray", "--concurrency", "8")
    assert code == 2 and summary is None
    assert "--concurrency 8 needs 9 CPUs on the Ray cluster" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(output)


def test_api_score_and_score_dataset(ray_cluster, corrupt_dir, baseline, tmp_path):
    summary = api.score(SAMPLE_MODEL, corrupt_dir, str(tmp_path / "api"), batch_size=8, quiet=True)
    assert (summary["files"], summary["ok"], summary["errors"]) == (50, 47, 3)
    assert_same_rows(read_output(str(tmp_path / "api")), baseline)
    with pytest.raises(api.RunFailed) as failed:
        api.score(SAMPLE_MODEL, corrupt_dir, str(tmp_path / "strict"), max_error_rate=0.01, quiet=True)
    assert failed.value.exit_code == 3 and failed.value.summary["errors"] == 3
    with pytest.raises(ConfigError, match="topk"):
        api.score(SAMPLE_MODEL, corrupt_dir, str(tmp_path / "typo"), topk=3)

    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(corrupt_dir) for name in names)
    files = ray_cluster.data.read_binary_files(paths, include_paths=True)
    rows = api.score_dataset(files, SAMPLE_MODEL, batch_size=16).take_all()
    for row in rows:
        row["path"] = os.path.relpath(row["path"], corrupt_dir)
    assert_same_rows(pd.DataFrame(sorted(rows, key=lambda row: row["path"])), baseline)
    with pytest.raises(ConfigError, match="does not take output"):
        api.score_dataset(files, SAMPLE_MODEL, output="elsewhere")


# --- object storage ------------------------------------------------------------------------------


def test_s3_input_and_output_on_both_engines(s3, ray_cluster, corrupt_dir, baseline, capsys):
    fs = s3_filesystem()
    fs.put(corrupt_dir + "/", f"{s3}/photos/", recursive=True)

    # Local engine, bucket to bucket; a second run finds everything done.
    output = f"{s3}/scores-local"
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", f"{s3}/photos",
                                 "--output", output, "--quiet")
    assert code == 0, err
    assert (summary["files"], summary["errors"], summary["output"]) == (50, 3, output)
    assert_same_rows(read_output(output), baseline)
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", f"{s3}/photos",
                                 "--output", output, "--quiet")
    assert code == 0 and (summary["skipped"], summary["ok"]) == (50, 0), err

    # Ray engine for one shard, the local engine for the other, into one output.
    output = f"{s3}/scores-ray/"
    common = ["--model", SAMPLE_MODEL, "--input", f"{s3}/photos/", "--output", output, "--quiet"]
    code, first, err = run_cli(capsys, *common, "--engine", "ray", "--shard", "0/2")
    assert code == 0, err
    code, second, err = run_cli(capsys, *common, "--shard", "1/2")
    assert code == 0, err
    assert first["files"] + second["files"] == 50 and first["ok"] > 0 and second["ok"] > 0
    assert_same_rows(read_output(output), baseline)
    names = [key.rsplit("/", 1)[-1] for key in fs.find(output)]
    assert names and all(name.startswith("part-") and name.endswith(".parquet") for name in names), \
        "an object store output holds committed parts only: no temporaries, no locks"


def test_report_and_csv_export_read_an_s3_output(s3, corrupt_dir, tmp_path, capsys):
    output = f"{s3}/scores"
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", corrupt_dir,
                                 "--output", output, "--quiet")
    assert code == 0 and (summary["files"], summary["errors"]) == (50, 3), err
    rows = read_output(output)
    ok = rows[rows.status == "ok"]

    page = tmp_path / "report.html"
    code, summary, err = invoke(capsys, "report", output, "--html", str(page))
    assert code == 0, err
    assert summary == {"report": str(page), "rows": len(rows), "errors": 3, "thumbnails": 0}
    assert page.stat().st_size > 0

    dest = tmp_path / "scores.csv"
    code, summary, err = invoke(capsys, "export", output, "--format", "csv", "--dest", str(dest))
    assert code == 0, err
    assert summary == {"format": "csv", "dest": str(dest), "exported": len(ok), "below_min_score": 0,
                       "errors_skipped": 3}
    csv = pd.read_csv(dest, dtype={"path": str, "label": str})
    assert csv.path.tolist() == ok.path.tolist() and csv.label.tolist() == ok.label.tolist()


def test_urls_in_a_job_file_stay_urls_and_missing_places_are_refused(s3, tmp_path, capsys):
    s3_filesystem().pipe_file(f"{s3}/photos/one.png", b"")
    job = tmp_path / "job.toml"
    job.write_text(f'model = "{SAMPLE_MODEL}"\ninput = "{s3}/photos"\noutput = "{s3}/scores"\n')
    config = build_config({"job": str(job)})
    assert (config.input, config.output) == (f"{s3}/photos", f"{s3}/scores")
    code, summary, err = run_cli(capsys, "--job", str(job), "--input", f"{s3}/nothing-here")
    assert code == 2 and f"Input {s3}/nothing-here does not exist or holds no objects" in err
    code, summary, err = run_cli(capsys, "--job", str(job), "--output", "s3://no-such-bucket/scores")
    assert code == 2 and "The bucket of --output s3://no-such-bucket/scores does not exist" in err


def test_unreadable_object_becomes_a_read_error_row(s3):
    from batch_infer.decode.diagnose import diagnose
    from batch_infer.decode.options import DecodeOptions
    from batch_infer.model import InputSpec
    from batch_infer.decode.pipeline import batches
    from batch_infer.tf_import import tf

    fs = s3_filesystem()
    fs.pipe_file(f"{s3}/in/good.png", tf.io.encode_png(images.random_pixels(1, 16, 16)).numpy())
    files = [ListedFile("good.png", f"{s3}/in/good.png".encode(), size=100),
             ListedFile("gone.png", f"{s3}/in/gone.png".encode(), size=100)]
    spec = InputSpec(False, (16, 16), 3, tf.float32, "raw")
    options = DecodeOptions(10**8, 512, exif_transpose=True, scaled_decode=True)
    arrived = [int(i) for indices, _, _ in batches(files, spec, 4, options) for i in indices]
    assert arrived == [0]
    assert diagnose(files[1], spec, options).startswith("read: ")
