"""Re-runs never hand back rows that do not belong to the run asked for: fingerprints, changed
files, manifests, and engines that fail fast."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from support import images
from conftest import REPO, SAMPLE_IMAGES, SAMPLE_MODEL, read_output, run_cli


@pytest.fixture
def photos(tmp_path):
    """30 sample digits in their class folders, a copy the tests may change."""
    root = tmp_path / "in"
    for folder in sorted(os.listdir(SAMPLE_IMAGES)):
        names = sorted(name for name in os.listdir(os.path.join(SAMPLE_IMAGES, folder)) if "truncated" not in name)
        os.makedirs(root / folder)
        for name in names[:3]:
            shutil.copy(os.path.join(SAMPLE_IMAGES, folder, name), root / folder / name)
    return str(root)


def score(capsys, photos: str, output: str, *flags: str):
    return run_cli(capsys, "--model", SAMPLE_MODEL, "--input", photos, "--output", output, "--quiet", *flags)


def test_value_changing_options_refuse_a_resume_and_others_do_not(photos, tmp_path, capsys):
    output = str(tmp_path / "out")
    assert score(capsys, photos, output)[0] == 0
    code, _, err = score(capsys, photos, output, "--preprocess", "unit")
    assert code == 2
    assert f"{output} was scored with --preprocess auto; this run asks for unit" in err
    assert "new --output" in err and len(err.strip().splitlines()) == 1
    code, _, err = score(capsys, photos, output, "--top-k", "3")
    assert code == 2 and "--top-k 5; this run asks for 3" in err
    for flags in (["--batch-size", "7"], ["--device", "cpu"], ["--commit-every", "3"], ["--log-format", "json"]):
        code, summary, err = score(capsys, photos, output, *flags)
        assert code == 0 and summary["skipped"] == 30, (flags, err)


def test_another_model_at_the_same_path_is_refused(photos, tmp_path, capsys, model_dir):
    model, output = str(tmp_path / "model"), str(tmp_path / "out")
    shutil.copytree(SAMPLE_MODEL, model)
    assert run_cli(capsys, "--model", model, "--input", photos, "--output", output, "--quiet")[0] == 0
    shutil.rmtree(model)
    shutil.copytree(SAMPLE_MODEL, model)  # the same model copied again is the same model
    assert run_cli(capsys, "--model", model, "--input", photos, "--output", output, "--quiet")[0] == 0
    (tmp_path / "labels.txt").write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    code, _, err = run_cli(capsys, "--model", model, "--input", photos, "--output", output,
                           "--labels", str(tmp_path / "labels.txt"))
    assert code == 2 and "was scored with labels sha256:" in err
    shutil.rmtree(model)
    shutil.copytree(model_dir["float"], model)  # retrained: another model at the same path
    code, _, err = run_cli(capsys, "--model", model, "--input", photos, "--output", output, "--image-size", "32x32")
    assert code == 2 and "was scored with another model" in err


def test_output_without_fingerprint_is_resumed_with_a_warning(photos, tmp_path, capsys):
    output = str(tmp_path / "out")
    assert score(capsys, photos, output)[0] == 0
    [part] = [os.path.join(output, name) for name in os.listdir(output) if name.startswith("part-")]
    table = pq.read_table(part)
    metadata = {key: value for key, value in table.schema.metadata.items() if key != b"batch_infer.fingerprint"}
    pq.write_table(table.replace_schema_metadata(metadata).slice(0, 20), part)
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", photos, "--output", output)
    assert code == 0 and summary["skipped"] == 20 and summary["ok"] == 10
    assert "without a fingerprint" in err


def edit(path: str, seed: int) -> None:
    """Rewrites an image in place with other pixels (and so another size, or at least mtime)."""
    images.write_image(path, images.random_pixels(seed, 24, 20 + seed % 7))
    stamp = time.time() + seed  # distinct even on coarse file system clocks
    os.utime(path, (stamp, stamp))


def test_changed_files_are_rescored_with_one_row_each(photos, tmp_path, capsys):
    output, fresh = str(tmp_path / "out"), str(tmp_path / "fresh")
    assert score(capsys, photos, output, "--commit-every", "7")[0] == 0
    before = read_output(output)
    changed = sorted(before.path)[::3][:10]
    for seed, path in enumerate(changed):
        edit(os.path.join(photos, path), seed)
    code, summary, err = score(capsys, photos, output)
    assert code == 0, err
    assert (summary["rescored"], summary["ok"], summary["skipped"]) == (10, 10, 20)
    after = read_output(output)
    assert after.path.tolist() == before.path.tolist()  # exactly one row per path
    assert score(capsys, photos, fresh)[0] == 0
    expected = read_output(fresh)
    for column in ("label", "file_size", "file_mtime"):
        assert after[column].tolist() == expected[column].tolist(), column
    np.testing.assert_allclose(np.stack(after.top_k_scores), np.stack(expected.top_k_scores), atol=1e-6)
    assert score(capsys, photos, output)[1]["rescored"] == 0


def test_each_part_but_the_last_holds_commit_every_rows(photos, tmp_path, capsys):
    """Small files are scored several model batches to a table; a part still holds exactly
    --commit-every rows, which bounds what a killed run loses."""
    output = str(tmp_path / "out")
    assert score(capsys, photos, output, "--commit-every", "7", "--batch-size", "4")[0] == 0
    parts = sorted(name for name in os.listdir(output) if name.startswith("part-"))
    assert [pq.read_metadata(os.path.join(output, name)).num_rows for name in parts] == [7, 7, 7, 7, 2]


def test_kill_9_while_rescoring_leaves_each_path_once(photos, tmp_path, capsys):
    output = str(tmp_path / "out")
    assert score(capsys, photos, output, "--commit-every", "4")[0] == 0
    paths = read_output(output).path.tolist()
    for seed, path in enumerate(paths):
        edit(os.path.join(photos, path), seed)
    rng = np.random.default_rng(0)
    for delay_s in rng.uniform(0.3, 6.0, size=3):
        process = subprocess.Popen(
            [sys.executable, "-m", "batch_infer", "run", "--model", SAMPLE_MODEL, "--input", photos,
             "--output", output, "--batch-size", "2", "--commit-every", "2", "--quiet"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay_s)
        process.kill()
        process.wait()
        committed = read_output(output).path.tolist()
        assert len(committed) == len(set(committed)), f"a path twice after kill -9 at {delay_s:.1f} s"
    code, summary, err = score(capsys, photos, output)
    assert code == 0, err
    final = read_output(output)
    assert final.path.tolist() == paths
    listed = {path: os.stat(os.path.join(photos, path)) for path in paths}
    assert final.file_size.tolist() == [listed[path].st_size for path in final.path]


def manifest_files(photos: str, tmp_path) -> dict[str, str]:
    """The same files in each manifest format, relative paths, with a class, a number and a flag."""
    paths = sorted(os.path.relpath(os.path.join(folder, name), photos)
                   for folder, _, names in os.walk(photos) for name in names)
    table = pa.table({"file": paths, "truth": [path.split("/")[0] for path in paths],
                      "index": list(range(len(paths))), "holdout": [i % 4 == 0 for i in range(len(paths))]})
    root = tmp_path / "manifests"
    root.mkdir()
    written = {}
    for suffix in ("csv", "tsv", "parquet", "jsonl"):
        target = os.path.join(photos, f"list.{suffix}")  # relative paths resolve from here
        frame = table.to_pandas()
        if suffix == "csv":
            frame.to_csv(target, index=False)
        elif suffix == "tsv":
            frame.to_csv(target, index=False, sep="\t")
        elif suffix == "parquet":
            pq.write_table(table, target)
        else:
            frame.to_json(target, orient="records", lines=True)
        written[suffix] = target
    text = os.path.join(photos, "list.txt")
    with open(text, "w") as handle:
        handle.write("\n".join(paths) + "\n")
    written["txt"] = text
    return written


def test_manifests_in_every_format_give_the_directory_walks_rows(photos, tmp_path, capsys):
    walked = str(tmp_path / "walked")
    assert score(capsys, photos, walked)[0] == 0
    expected = read_output(walked)
    for suffix, manifest in manifest_files(photos, tmp_path).items():
        output = str(tmp_path / f"from-{suffix}")
        flags = [] if suffix == "txt" else ["--path-column", "file", "--keep-columns", "truth,index,holdout"]
        code, summary, err = score(capsys, manifest, output, *flags)
        assert code == 0 and summary["files"] == 30, (suffix, err)
        rows = read_output(output)
        for column in ("path", "status", "label", "top_k_indices", "file_size", "file_mtime"):
            assert [np.asarray(value).tolist() for value in rows[column]] == \
                [np.asarray(value).tolist() for value in expected[column]], (suffix, column)
        if suffix != "txt":
            schema = ds.dataset(output, format="parquet").schema
            assert schema.field("truth").type == pa.string() and pa.types.is_integer(schema.field("index").type)
            assert schema.field("holdout").type == pa.bool_()
            assert rows.truth.tolist() == [path.split("/")[0] for path in rows.path]


def test_manifest_problems(photos, tmp_path, capsys):
    manifest = tmp_path / "list.csv"
    first = sorted(os.listdir(os.path.join(photos, "one")))[0]
    manifest.write_text(f"path,truth\none/{first},one\none/{first},one\nmissing.png,two\n"
                        f"{os.path.join(photos, 'two', sorted(os.listdir(os.path.join(photos, 'two')))[0])},two\n")
    shutil.copytree(os.path.join(photos, "one"), tmp_path / "one")
    output = str(tmp_path / "out")
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", str(manifest), "--output", output,
                                 "--keep-columns", "truth")
    assert code == 0 and (summary["files"], summary["ok"], summary["errors"]) == (3, 2, 1), err
    assert "listed more than once" in err
    rows = read_output(output).set_index("path")
    assert rows.loc["missing.png", "error"].startswith("read: ") and rows.loc["missing.png", "truth"] == "two"
    for flags, message in ((["--path-column", "file"], "has no column file"),
                           (["--keep-columns", "nope"], "has no column nope")):
        code, _, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", str(manifest),
                               "--output", str(tmp_path / "other"), *flags)
        assert code == 2 and message in err, err
    code, _, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", photos, "--output", output,
                           "--keep-columns", "truth")
    assert code == 2 and "only applies to a manifest" in err


def test_unreachable_ray_address_fails_at_once(photos, tmp_path, capsys):
    pytest.importorskip("ray")
    started = time.monotonic()  # in a process of its own: this one may have joined a Ray already
    result = subprocess.run([sys.executable, "-m", "batch_infer", "run", "--model", SAMPLE_MODEL, "--input", photos,
                             "--output", str(tmp_path / "out"), "--engine", "ray", "--ray-address", "127.0.0.1:9"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Could not connect to Ray at 127.0.0.1:9" in result.stderr
    assert time.monotonic() - started < 15


def test_sigterm_under_load_exits_within_3_s(tmp_path):
    root = tmp_path / "many"
    for i in range(400):
        images.write_image(root / f"{i:04d}.png", images.random_pixels(i, 64, 64))
    for i in range(400, 8000):  # enough that the run is still scoring when the signal comes
        os.link(root / f"{i % 400:04d}.png", root / f"{i:04d}.png")
    output = str(tmp_path / "out")
    process = subprocess.Popen([sys.executable, "-m", "batch_infer", "run", "--model", SAMPLE_MODEL,
                                "--input", str(root), "--output", output, "--commit-every", "32"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (os.path.isdir(output) and any(name.startswith("part-") for name in os.listdir(output))):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 143, err
    assert time.monotonic() - sent < 3, f"{time.monotonic() - sent:.1f} s from SIGTERM to exit"
    assert json.loads(out.strip().splitlines()[-1])["ok"] == len(read_output(output))


def test_width_height_and_content_hash_come_from_the_file(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "in"
    images.write_image(root / "wide.png", images.random_pixels(1, 20, 44))
    images.write_image(root / "tall.jpg", images.random_pixels(2, 50, 18))
    shutil.copy(root / "wide.png", root / "copy of wide.png")
    images.write_truncated_jpeg(root / "broken.jpg")
    output = str(tmp_path / "out")
    assert score(capsys, str(root), output)[0] == 0
    rows = read_output(output).set_index("path")
    for name in ("wide.png", "tall.jpg"):
        with Image.open(root / name) as image:
            assert (rows.loc[name, "width"], rows.loc[name, "height"]) == image.size
    assert rows.loc["wide.png", "content_hash"] == rows.loc["copy of wide.png", "content_hash"]
    assert rows.loc["wide.png", "content_hash"] != rows.loc["tall.jpg", "content_hash"]
    assert len(rows.loc["tall.jpg", "content_hash"]) == 16
    assert rows.loc["broken.jpg", ["width", "height", "content_hash"]].isna().all()
    schema = ds.dataset(output, format="parquet").schema
    assert schema.field("width").type == pa.int32() and schema.field("content_hash").type == pa.string()
