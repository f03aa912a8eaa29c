"""Peak RSS of `batch-infer run` on 1,000 vs 100,000 tiny files: memory must not grow with the
number of files (listing, resume set and writer buffers stay small next to TensorFlow itself).

    python benchmarks/memory.py    # about a minute once its corpus exists; also run by `make bench`
    python benchmarks/memory.py --embeddings   # the same with a 1,152-d embedding per file

With --embeddings the digits Keras file writes its `flatten` layer (1,152 floats, 4.5 KiB a row,
460 MB of vectors for 100,000 files) next to the classes, so the writer's pending rows are as
wide as a MobileNetV2 embedding's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from batch_infer.tf_import import tf  # noqa: E402

ROOT = os.path.join(HERE, "corpora", "tiny")
SAMPLE_MODEL = os.path.join(REPO, "sample_data", "digits_model")
SAMPLE_KERAS = os.path.join(REPO, "sample_data", "digits.keras")
EMBEDDING_FLAGS = ["--embedding-layer", "flatten"]


def make_tiny(count: int = 100_000) -> None:
    """100 folders of 1,000 8x8 PNGs; folder 000 alone is the 1k corpus."""
    marker = os.path.join(ROOT, ".complete")
    if os.path.exists(marker):
        return
    encoded = [tf.io.encode_png(tf.fill((8, 8, 3), tf.constant(i, tf.uint8))).numpy() for i in range(256)]
    for i in range(count):
        folder = os.path.join(ROOT, f"{i // 1000:03d}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:06d}.png"), "wb") as handle:
            handle.write(encoded[i % 256])
    open(marker, "w").close()


def peak_rss_mb(folder: str, embeddings: bool) -> tuple[float, int, float]:
    """(peak RSS in MB, parts written, largest part in MB)."""
    output = tempfile.mkdtemp(prefix="bench-mem-")
    model, extra = (SAMPLE_KERAS, EMBEDDING_FLAGS) if embeddings else (SAMPLE_MODEL, [])
    try:
        process = subprocess.Popen([sys.executable, "-m", "batch_infer", "run", "--model", model,
                                    "--input", folder, "--output", output, "--quiet", *extra],
                                   cwd=REPO, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        sizes = [entry.stat().st_size for entry in os.scandir(output) if entry.name.startswith("part-")]
        return usage.ru_maxrss / 1024, len(sizes), max(sizes) / 2**20
    finally:
        shutil.rmtree(output)


def main() -> None:
    embeddings = "--embeddings" in sys.argv[1:]
    make_tiny()
    small, _, _ = peak_rss_mb(os.path.join(ROOT, "000"), embeddings)
    large, parts, largest = peak_rss_mb(ROOT, embeddings)
    what = "with 1,152-d embeddings" if embeddings else "classes only"
    print(f"peak RSS ({what}): 1k files {small:.0f} MB, 100k files {large:.0f} MB, ratio "
          f"{large / small:.3f}; 100k files in {parts} parts, the largest {largest:.1f} MB")


if __name__ == "__main__":
    main()
