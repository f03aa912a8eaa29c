"""What each feature costs, side by side on the photos, in one run: the default (MobileNetV2 with
`probs` and 1,280-d `features` outputs, scored for classes: `--output-key probs`) next to
`--resize crop` and `--embedding-key features`.

Each figure is the marginal rate between the corpus's `a` half and the whole corpus (start-up
cancels out), the median of `--pairs` pairs; the settings take turns within each pair, so a slow
minute on a shared machine hits all of them.

The Pillow fallback, `content_hash` and the changed-file check are always on, so the default row
already pays for them. On this corpus, which TensorFlow decodes, the fallback only looks at files
that dropped out of the graph (none here). The other two are timed directly, in this process, and
printed as a share of the default's time per photo: the fingerprint over batches of the photos'
bytes, and the check a re-run makes of each row already scored.

    python benchmarks/features.py [--copies 2] [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import corpora  # noqa: E402

BATCH = 32
DEFAULT = ["--output-key", "probs"]
SETTINGS = {"default": DEFAULT,
            "--resize crop": DEFAULT + ["--resize", "crop"],
            "--embedding-key features": ["--embedding-key", "features"]}


def changed_check_us(model: str, folder: str) -> float:
    """µs per file already scored of what a re-run adds for the changed-file check: reading the
    committed rows' paths, sizes and times, and comparing each listed file with its row, twice
    (once before the model loads, once under the lock), as `runner.run` does."""
    from batch_infer.listing import list_input
    from batch_infer.output import committed
    from batch_infer.runner import plan

    output = os.path.join(tempfile.mkdtemp(prefix="bench-resume-"), "out")
    try:
        _, scored, _ = corpora.timed_run(model, folder, DEFAULT, BATCH, output=output)
        listed = list_input(folder, ("jpg",), True).items
        started = time.perf_counter()
        for _ in range(2):
            todo, changed = plan(listed, committed(output))
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(os.path.dirname(output))
    assert not todo and not changed and scored["ok"] == len(listed)
    return seconds / scored["ok"] * 1e6


def fingerprint_us(folder: str, tf) -> float:
    """µs per photo of `tf.fingerprint` over batches of the photos' bytes, as the read stage runs it."""
    from batch_infer.listing import list_images

    paths = [item.fs_path for item in list_images(folder, ("jpg",))]
    batches = [tf.constant([open(path, "rb").read() for path in paths[start:start + BATCH]])
               for start in range(0, len(paths), BATCH)]
    tf.fingerprint(batches[0])
    started = time.perf_counter()
    for batch in batches:
        tf.fingerprint(batch)
    return (time.perf_counter() - started) / len(paths) * 1e6


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
    rates = {name: [] for name in SETTINGS}
    parts = {}
    for _ in range(args.pairs):
        for name, extra in SETTINGS.items():
            half_s, half, _ = corpora.timed_run(model, os.path.join(folder, "a"), extra, BATCH)
            full_s, full, sizes = corpora.timed_run(model, folder, extra, BATCH)
            assert full["errors"] == 0 and full["ok"] == full["files"], full
            rates[name].append((full["files"] - half["files"]) / (full_s - half_s))
            parts[name] = sizes
            print(f"{name}: {rates[name][-1]:.1f} images/s", file=sys.stderr, flush=True)
    default = statistics.median(rates["default"])
    print("\n| setting | images/s (marginal, median) | vs default | runs | parts, largest |\n|---|---|---|---|---|")
    for name, runs in rates.items():
        print(f"| {name} | {statistics.median(runs):.1f} | {statistics.median(runs) / default:.2f}x | "
              f"{', '.join(f'{rate:.1f}' for rate in runs)} | "
              f"{len(parts[name])}, {max(parts[name]) / 2**20:.1f} MiB |")
    per_photo_us = 1e6 / default
    for name, us in (("content_hash (tf.fingerprint of the bytes)", fingerprint_us(folder, tf)),
                     ("changed-file check, per file already scored", changed_check_us(model, folder))):
        print(f"\n{name}: {us:.1f} µs, {us / per_photo_us:.2%} of the default's time per photo")


if __name__ == "__main__":
    main()
