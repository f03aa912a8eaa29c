"""`batch-infer export` on a real run: every format read back and compared with the Parquet rows."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from conftest import invoke, read_metadata, read_output

@pytest.fixture(scope="module")
def scored(scored_sample):
    """The shared scored sample plus its ok rows sorted by path."""
    images, out = scored_sample
    rows = read_output(str(out))
    return images, out, rows[rows.status == "ok"].reset_index(drop=True)


def export(capsys, out: Path, *args: str) -> tuple[int, dict | None, str]:
    return invoke(capsys, "export", str(out), *args)


def test_csv_has_every_ok_row_with_top_k_as_text(scored, tmp_path, capsys):
    _, out, ok = scored
    dest = tmp_path / "scores.csv"
    code, summary, _ = export(capsys, out, "--format", "csv", "--dest", str(dest))
    assert code == 0 and summary == {"format": "csv", "dest": str(dest), "exported": 21,
                                     "below_min_score": 0, "errors_skipped": 1}
    csv = pd.read_csv(dest, dtype={"path": str, "label": str, "top_k_labels": str, "top_k_scores": str})
    assert list(csv.columns) == ["path", "label", "score", "top_k_labels", "top_k_scores"]
    assert csv.path.tolist() == ok.path.tolist() and csv.label.tolist() == ok.label.tolist()
    assert (csv.score.to_numpy(np.float32) == ok.score.to_numpy()).all()  # float32 text round-trips
    for row, expected in zip(csv.itertuples(), ok.itertuples()):
        assert row.top_k_labels.split("|") == list(expected.top_k_labels)
        assert (np.array(row.top_k_scores.split("|"), np.float32) == expected.top_k_scores).all()


@pytest.mark.parametrize("link, shared_inode", [("hardlink", True), ("copy", False)])
def test_imagefolder_holds_each_confident_image_under_its_label(scored, tmp_path, capsys, link, shared_inode):
    images, out, ok = scored
    dest, threshold = tmp_path / "by_label", 0.99
    code, summary, _ = export(capsys, out, "--format", "imagefolder", "--dest", str(dest), "--input",
                              str(images), "--min-score", str(threshold), "--link", link)
    kept = ok[ok.score >= threshold]
    assert 0 < len(kept) < len(ok)
    assert code == 0 and summary == {"format": "imagefolder", "dest": str(dest), "exported": len(kept),
                                     "below_min_score": len(ok) - len(kept), "errors_skipped": 1}
    expected = {f"{label}/{path.replace('/', '__')}": path for label, path in zip(kept.label, kept.path)}
    found = {str(file.relative_to(dest)) for file in dest.rglob("*") if file.is_file()}
    assert found == set(expected)
    for name, path in expected.items():
        assert (dest / name).read_bytes() == (images / path).read_bytes()
        assert os.path.samefile(dest / name, images / path) == shared_inode


def test_label_studio_tasks_carry_the_top_1_prediction(scored, tmp_path, capsys):
    _, out, ok = scored
    dest = tmp_path / "tasks.json"
    code, summary, _ = export(capsys, out, "--format", "label-studio", "--dest", str(dest))
    assert code == 0 and summary["exported"] == 21
    tasks = json.loads(dest.read_text())
    run_id = read_metadata(out)["run_id"]
    prefix = "/data/local-files/?d="
    assert [unquote(task["data"]["image"].removeprefix(prefix)) for task in tasks] == ok.path.tolist()
    assert f"{prefix}with%20space/%3Cb%3Eodd%20%26%20%27name%27.png" in [t["data"]["image"] for t in tasks]
    for task, label, score in zip(tasks, ok.label, ok.score):
        [prediction] = task["predictions"]
        assert prediction["model_version"] == run_id and np.float32(prediction["score"]) == score
        assert prediction["result"] == [{"from_name": "choice", "to_name": "image", "type": "choices",
                                         "value": {"choices": [label]}}]


def test_label_studio_image_root_is_a_plain_prefix(scored, tmp_path, capsys):
    _, out, ok = scored
    dest = tmp_path / "tasks.json"
    export(capsys, out, "--format", "label-studio", "--dest", str(dest), "--image-root", "https://h/x/")
    assert json.loads(dest.read_text())[0]["data"]["image"] == "https://h/x/" + ok.path[0]


@pytest.mark.parametrize("args, message", [
    (["--format", "imagefolder"], "needs --input DIR"),
    (["--format", "imagefolder", "--input", "{out}"], "are not under"),
    (["--format", "imagefolder", "--input", "{images}", "--dest", "{out}"], "is not an empty directory"),
    (["--format", "csv", "--dest", "{out}"], "is a directory"),
    (["--format", "csv", "--min-score", "1.5"], "must be a number between 0 and 1"),
    (["--format", "xml"], "invalid choice"),
])
def test_bad_arguments_are_one_sentence_and_exit_2(scored, tmp_path, capsys, args, message):
    images, out, _ = scored
    given = [arg.format(out=out, images=images) for arg in args]
    if "--dest" not in given:
        given += ["--dest", str(tmp_path / "dest")]
    code, summary, err = export(capsys, out, *given)
    assert (code, summary) == (2, None)
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "dest").exists()
