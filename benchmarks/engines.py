"""Throughput of the engines side by side, in one run, on the same files and model:

- local: `batch-infer run` on a directory (tf.io.read_file inside tf.data);
- local, fsspec bytes: the same files as a file:// URL, so they take the object-store path
  (Python threads read the bytes into tf.data), without a network in the way;
- ray: `--engine ray` with a local Ray started by the run, one model actor (all a 2-core machine
  can hold, see ray_engine.check_resources).

Each figure is the marginal rate (t(2N) - t(N)) over the corpus's halves, median of three, so
start-up (TensorFlow import, model load, starting Ray and its actors: 30 to 50 s on 2 cores)
cancels out; the end-to-end time of the whole corpus is shown next to it. The corpus is the
photos corpus hard-linked `--copies` times over, so that scoring outweighs start-up's jitter.

    python benchmarks/engines.py [--corpus photos] [--copies 4] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import corpora  # noqa: E402

BATCH = 32
PAIRS = 3  # timed pairs per figure, see `measure`


def measure(model: str, folder: str, as_url: bool, extra: list[str]) -> dict:
    """Marginal images/s between the `a` half and the whole corpus, and the whole run's time.

    Each pair times the half and then the whole corpus back to back, so that both see the same
    load on a shared machine; the median of the pairs' marginal rates drops one bad pair.
    """
    def location(path: str) -> str:
        return "file://" + path if as_url else path

    marginals, whole_s = [], []
    for _ in range(PAIRS):
        half_s, half, _ = corpora.timed_run(model, location(os.path.join(folder, "a")), extra, BATCH)
        full_s, full, _ = corpora.timed_run(model, location(folder), extra, BATCH)
        assert full["errors"] == 0 and full["ok"] == full["files"], full
        marginals.append((full["files"] - half["files"]) / (full_s - half_s))
        whole_s.append(full_s)
    return {"files": full["files"], "marginal": statistics.median(marginals),
            "end_to_end_s": statistics.median(whole_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="photos", choices=sorted(corpora.CORPORA))
    parser.add_argument("--copies", type=int, default=4, help="times over the corpus (default: 4)")
    parser.add_argument("--concurrency", default="1", help="Ray model actors (default: 1)")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    from batch_infer.tf_import import tf

    folder = corpora.repeated(corpora.make_corpus(args.corpus, tf), args.copies)
    model = corpora.make_mobilenet()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
          f"corpus {args.corpus} x{args.copies}, model {os.path.basename(model)}, batch size {BATCH}", flush=True)
    engines = {
        "local": (False, []),
        "local, fsspec bytes (file://)": (True, []),
        f"ray, {args.concurrency} actor(s)": (False, ["--engine", "ray", "--concurrency", args.concurrency]),
    }
    rows = []
    for name, (as_url, extra) in engines.items():
        result = measure(model, folder, as_url, extra)
        rows.append((name, result["files"], f"{result['marginal']:.1f}", f"{result['end_to_end_s']:.1f}"))
        print(f"measured {name}", file=sys.stderr, flush=True)
    print("\n| engine | files | images/s (marginal) | whole run, s |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


if __name__ == "__main__":
    main()
