"""Peak RSS of `batch-infer run` on 1,000 vs 100,000 tiny files: memory must not grow with the
number of files (listing, resume set and writer buffers stay small next to TensorFlow itself).

    python benchmarks/memory.py    # about a minute once its corpus exists; also run by `make bench`
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


def peak_rss_mb(folder: str) -> float:
    output = tempfile.mkdtemp(prefix="bench-mem-")
    try:
        process = subprocess.Popen([sys.executable, "-m", "batch_infer", "run", "--model", SAMPLE_MODEL,
                                    "--input", folder, "--output", output, "--quiet"],
                                   cwd=REPO, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return usage.ru_maxrss / 1024
    finally:
        shutil.rmtree(output)


def main() -> None:
    make_tiny()
    small = peak_rss_mb(os.path.join(ROOT, "000"))
    large = peak_rss_mb(ROOT)
    print(f"peak RSS: 1k files {small:.0f} MB, 100k files {large:.0f} MB, ratio {large / small:.3f}")


if __name__ == "__main__":
    main()
