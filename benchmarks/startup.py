"""A small job: `batch-infer run` over one file against TensorFlow's own start-up, the least any
TensorFlow program pays (python -c "import tensorflow as tf; tf.saved_model.load(MODEL)"), on the
same model, the two taking turns for several rounds so that both see the same load (part of
`make bench`).

    python benchmarks/startup.py [--model sample_data/digits_model] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.path.join(REPO, "sample_data", "images", "one", "0099.png")


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(REPO, "sample_data", "digits_model"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-startup-")
    try:
        os.makedirs(os.path.join(work, "input"))
        shutil.copy(IMAGE, os.path.join(work, "input"))
        bare = [sys.executable, "-c", f"import tensorflow as tf; tf.saved_model.load({args.model!r})"]
        times: dict[str, list[float]] = {"tensorflow import + load": [], "batch-infer run, 1 file": []}
        for round_ in range(args.rounds):
            times["tensorflow import + load"].append(seconds(bare))
            output = os.path.join(work, f"out-{round_}")
            times["batch-infer run, 1 file"].append(seconds(
                [sys.executable, "-m", "batch_infer", "run", "--model", args.model, "--input",
                 os.path.join(work, "input"), "--output", output, "--quiet"]))
        load_average = " ".join(f"{value:.2f}" for value in os.getloadavg())
    finally:
        shutil.rmtree(work)
    base, ours = (statistics.median(values) for values in times.values())
    print(f"\nsmall job, {args.rounds} rounds taking turns (median s; load average {load_average}):\n")
    print("| tensorflow import + load | batch-infer run, 1 file | ratio |\n|---|---|---|")
    print(f"| {base:.2f} | {ours:.2f} | {ours / base:.2f}x |")


if __name__ == "__main__":
    main()
