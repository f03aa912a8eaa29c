"""The Airflow 3 DAG in jobs/airflow, run for real with `airflow dags test`.

Airflow lives in its own virtualenv (.venv-airflow, made by jobs/airflow/install.sh)
because its pins clash with TensorFlow's; the DAG drives .venv/bin/batch-infer as a
subprocess, once per shard. Without .venv-airflow this test skips, except under
CI=true, where a skip would hide that the DAG was never run: there it fails.

`dags test` runs every task in-process and one after another (no scheduler, no
api-server, no DAG processor; it parses the file itself) against a throwaway sqlite
database, so the shards run sequentially here.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

from conftest import read_output, skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = ROOT / ".venv-airflow" / "bin" / "airflow"
BATCH_INFER = ROOT / ".venv" / "bin" / "batch-infer"
DAGS = ROOT / "jobs" / "airflow"
MODEL = ROOT / "sample_data" / "digits_model"
IMAGES = ROOT / "sample_data" / "images"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}
SHARDS = 3


def _airflow_or_skip() -> None:
    if not AIRFLOW.exists():
        skip_or_fail(f"Airflow is not installed ({AIRFLOW} missing): run `bash jobs/airflow/install.sh`")


def _airflow(args: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([str(AIRFLOW), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _tail(result: subprocess.CompletedProcess, lines: int = 80) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


def test_dag_scores_every_image_once_across_shards(tmp_path):
    _airflow_or_skip()
    assert BATCH_INFER.exists(), f"{BATCH_INFER} missing: install the project into .venv"
    expected = sorted(p.relative_to(IMAGES).as_posix() for p in IMAGES.rglob("*")
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    assert expected, f"no images under {IMAGES}"

    output = tmp_path / "predictions"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BATCH_INFER_"))}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow_home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "BATCH_INFER_BIN": str(BATCH_INFER),
        "BATCH_INFER_MODEL": str(MODEL),
        "BATCH_INFER_INPUT": str(IMAGES),
        "BATCH_INFER_OUTPUT": str(output),
        "BATCH_INFER_SHARDS": str(SHARDS),
        "BATCH_INFER_RETRIES": "0",  # `dags test` would sit out the 2-minute retry delay
    })

    migrated = _airflow(["db", "migrate"], env, timeout=180)
    assert migrated.returncode == 0, _tail(migrated)

    run = _airflow(["dags", "test", "batch_infer_sharded"], env, timeout=420)
    assert run.returncode == 0, _tail(run)

    # The aggregate task prints its XCom value as `total: {...}`.
    totals = [line[len("total:"):] for line in run.stdout.splitlines() if line.startswith("total:")]
    assert totals, "aggregate task printed no total:\n" + _tail(run)
    total = json.loads(totals[-1])
    assert total["shards"] == SHARDS
    assert total["files"] == len(expected), total
    assert total["ok"] + total["errors"] == total["files"], total

    paths = read_output(str(output), ["path"]).path.tolist()
    duplicates = sorted(p for p, n in Counter(paths).items() if n > 1)
    assert not duplicates, f"scored more than once: {duplicates[:10]}"
    assert sorted(paths) == expected
