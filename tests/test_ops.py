"""What schedulers do to a job: kill it, stop it, retry it, run it twice, fan it out in shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from support import images
from conftest import REPO, SAMPLE_MODEL, read_metadata, read_output, run_cli

FILES = 400  # enough that a run is still scoring when its second part lands


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    for i in range(FILES):
        images.write_image(root / f"d{i % 7}" / f"{i:04d}.png", images.random_pixels(i, 48, 48))
    return str(root)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "batch_infer", "run", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def paths_in(output: str) -> list[str]:
    return read_output(output, ["path"]).path.tolist()


def parts_in(output: str) -> list[str]:
    return [name for name in os.listdir(output) if name.startswith("part-")] if os.path.isdir(output) else []


def wait_for(condition, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def job(images_dir: str, output: str, *extra: str) -> list[str]:
    return ["--model", SAMPLE_MODEL, "--input", images_dir, "--output", output, "--batch-size", "4",
            "--commit-every", "16", *extra]


STOPS = {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}  # signal: exit code


@dataclass
class Stopped:
    output: str
    returncode: int
    out: str
    err: str
    stop_s: float  # from the signal to the process's exit


@pytest.fixture(scope="module")
def stopped_runs(many_images, tmp_path_factory) -> dict[signal.Signals, Stopped]:
    """One run per signal in STOPS, each sent its signal once it has committed two parts. They
    start together, so that their TensorFlow start-ups overlap instead of queueing."""
    root = tmp_path_factory.mktemp("stopped")
    outputs = {stop_signal: str(root / stop_signal.name) for stop_signal in STOPS}
    # One image a model call: slow enough that an idle machine is still scoring when it is signalled.
    processes = {stop_signal: start(*job(many_images, output, "--batch-size", "1"))
                 for stop_signal, output in outputs.items()}
    try:
        sent: dict[signal.Signals, float] = {}

        def signal_the_ready_ones() -> bool:
            for stop_signal, process in processes.items():
                if stop_signal in sent:
                    continue
                if process.poll() is not None:  # ended on its own: its test shows how
                    sent[stop_signal] = time.monotonic()
                elif len(parts_in(outputs[stop_signal])) >= 2:
                    process.send_signal(stop_signal)
                    sent[stop_signal] = time.monotonic()
            return len(sent) == len(processes)

        wait_for(signal_the_ready_ones, timeout_s=180)  # three start-ups share the cores

        def finish(stop_signal: signal.Signals) -> Stopped:
            process = processes[stop_signal]
            out, err = process.communicate(timeout=60)
            return Stopped(outputs[stop_signal], process.returncode, out, err,
                           time.monotonic() - sent[stop_signal])

        with ThreadPoolExecutor(len(processes)) as pool:
            return dict(zip(processes, pool.map(finish, processes)))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=60)


@pytest.mark.parametrize("stop_signal, expected_code", STOPS.items())
def test_stopped_run_resumes_with_every_file_once(stop_signal, expected_code, stopped_runs, many_images, capsys):
    stopped = stopped_runs[stop_signal]
    output = stopped.output
    assert stopped.returncode == expected_code, stopped.err
    committed = paths_in(output)
    assert len(committed) == len(set(committed)) < FILES
    if stop_signal != signal.SIGKILL:
        assert stopped.stop_s < 10, f"took {stopped.stop_s:.1f}s to stop"
        summary = json.loads(stopped.out.strip().splitlines()[-1])
        assert summary["ok"] == len(committed), "everything scored before the signal is committed"
    code, summary, err = run_cli(capsys, *job(many_images, output))
    assert code == 0, err
    assert summary["skipped"] == len(committed) and summary["ok"] == FILES - len(committed)
    final = paths_in(output)
    assert len(final) == len(set(final)) == FILES
    assert not [name for name in os.listdir(output) if name.endswith(".tmp")]


def test_second_run_on_same_output_is_refused(many_images, tmp_path, capsys):
    output = str(tmp_path / "out")
    first = start(*job(many_images, output))
    try:
        lock = os.path.join(output, ".lock-0of1")
        wait_for(lambda: os.path.exists(lock) and open(lock).read().startswith("pid"))
        first.send_signal(signal.SIGSTOP)
        code, summary, err = run_cli(capsys, *job(many_images, output))
        assert code == 2 and summary is None
        assert f"pid {first.pid}" in err and "another batch-infer run" in err
    finally:
        first.send_signal(signal.SIGCONT)
        first.kill()
        first.communicate(timeout=60)
    code, summary, err = run_cli(capsys, *job(many_images, output))
    assert code == 0, "a lock left by a killed run does not block"
    assert len(paths_in(output)) == FILES


def test_concurrent_shards_cover_every_file_once(many_images, tmp_path):
    """Two shards writing one output at the same time (a third would only queue on two cores)."""
    output = str(tmp_path / "out")
    count = 2
    shards = [start(*job(many_images, output, "--shard", f"{i}/{count}", "--quiet")) for i in range(count)]
    summaries = []
    for process in shards:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    final = paths_in(output)
    assert len(final) == len(set(final)) == FILES
    assert sum(summary["files"] for summary in summaries) == FILES
    assert all(summary["files"] > FILES / count / 2 for summary in summaries), "shards are roughly even"


def test_noop_rerun_skips_everything_without_tensorflow(tmp_path, capsys):
    """A finished output re-run returns before TensorFlow is even imported. Only that re-run
    needs a fresh process; this one has TensorFlow loaded already."""
    source = tmp_path / "in"
    for i in range(3):
        images.write_image(source / f"{i}.png", images.random_pixels(i, 8, 8))
    output = str(tmp_path / "out")
    code, summary, err = run_cli(capsys, *job(str(source), output))
    assert code == 0 and summary["ok"] == 3, err
    probe = ("import sys; from batch_infer.cli import main; code = main(sys.argv[1:]); "
             "assert 'tensorflow' not in sys.modules; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe, "run", *job(str(source), output)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["skipped"] == 3
    images.write_image(source / "new.png", images.random_pixels(9, 8, 8))
    code, summary, err = run_cli(capsys, *job(str(source), output))
    assert code == 0 and summary["ok"] == 1, "new files are scored"


def test_error_budget_exit_3_after_committing(tmp_path, capsys):
    source = tmp_path / "in"
    for i in range(9):
        images.write_image(source / f"{i}.png", images.random_pixels(i, 8, 8))
    images.write_truncated_jpeg(source / "broken.jpg")
    common = ["--model", SAMPLE_MODEL, "--input", str(source)]
    code, summary, err = run_cli(capsys, *common, "--output", str(tmp_path / "a"), "--max-error-rate", "0.05")
    assert code == 3 and summary["errors"] == 1 and "exceeds --max-error-rate" in err
    assert len(paths_in(str(tmp_path / "a"))) == 10
    code, _, _ = run_cli(capsys, *common, "--output", str(tmp_path / "b"), "--max-error-rate", "0.1")
    assert code == 0


def test_json_logs_and_metadata(tmp_path, capsys):
    source = tmp_path / "in"
    images.write_image(source / "a.png", images.random_pixels(1, 8, 8))
    code, summary, err = run_cli(capsys, "--model", SAMPLE_MODEL, "--input", str(source),
                                 "--output", str(tmp_path / "out"), "--log-format", "json")
    assert code == 0
    entries = [json.loads(line) for line in err.strip().splitlines()]
    assert entries and all({"time", "level", "message"} <= set(entry) for entry in entries)
    metadata = read_metadata(str(tmp_path / "out"))
    for key in ("run_id", "model", "signature", "input_key", "output_key", "preprocess", "activation",
                "labels_source", "batch_infer_version", "tensorflow_version"):
        assert metadata[key], key
    assert metadata["model"] == SAMPLE_MODEL
