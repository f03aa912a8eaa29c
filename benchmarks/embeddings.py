"""Throughput with and without an embedding, side by side, on the same files and model:
MobileNetV2 exported with `probs` and `features` (1,280-d) outputs, scored for classes alone
(`--output-key probs`) and for classes plus `--embedding-key features`.

Each figure is the marginal rate between the corpus's `a` half and the whole corpus (start-up
cancels out), the median of `--pairs` pairs; the two settings take turns within each pair, so a
slow minute on a shared machine hits both. The sizes of the parts written are printed too.

    python benchmarks/embeddings.py [--copies 2] [--pairs 3]
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
SETTINGS = {"classes only": ["--output-key", "probs"],
            "classes + embedding": ["--embedding-key", "features"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2, help="times over the photos (default: 2)")
    parser.add_argument("--pairs", type=int, default=3, help="timed pairs per figure (default: 3)")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    from batch_infer.tf_import import tf

    folder = corpora.repeated(corpora.make_corpus("photos", tf), args.copies)
    model = corpora.make_mobilenet_features()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
          f"photos x{args.copies}, MobileNetV2 with features, batch size {BATCH}", flush=True)
    marginals = {name: [] for name in SETTINGS}
    parts = {}
    for _ in range(args.pairs):
        for name, extra in SETTINGS.items():
            half_s, half, _ = corpora.timed_run(model, os.path.join(folder, "a"), extra, BATCH)
            full_s, full, sizes = corpora.timed_run(model, folder, extra, BATCH)
            assert full["errors"] == 0 and full["ok"] == full["files"], full
            marginals[name].append((full["files"] - half["files"]) / (full_s - half_s))
            parts[name] = (full["files"], sizes)
            print(f"{name}: {marginals[name][-1]:.1f} images/s", file=sys.stderr, flush=True)
    print("\n| setting | files | images/s (marginal, median) | runs | parts | part size |\n|---|---|---|---|---|---|")
    for name, rates in marginals.items():
        files, sizes = parts[name]
        print(f"| {name} | {files} | {statistics.median(rates):.1f} | "
              f"{', '.join(f'{rate:.1f}' for rate in rates)} | {len(sizes)} | "
              f"{max(sizes) / 2**20:.1f} MiB largest |")


if __name__ == "__main__":
    main()
