"""Preprocessing figures for the README: `python benchmarks/fidelity.py`.

- For each --resize mode (bilinear, antialiased; and the imagenet preset): `batch-infer run`
  images/s on the photos corpus (500x375 JPEGs, 4 times over) with MobileNetV2, measured as
  engines.py measures the local engine (marginal files of the median of three pairs).
- For each mode on the camera corpus (12 MP JPEGs): scaled JPEG decode against a full decode,
  as bench.py does for stretch: mean PSNR of the model inputs and top-1 agreement.
- The wall time of `batch-infer inspect MODEL --against DIR --sample 200` on 200 photos in 10
  class folders (named as MobileNetV2's class indices).
Prints Markdown tables. `--only throughput,fidelity,against` picks parts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import corpora  # noqa: E402
import engines  # noqa: E402

MODES = {"stretch": [], "crop": ["--resize", "crop"], "pad": ["--resize", "pad"],
         "crop 0.875": ["--resize", "crop", "--crop-fraction", "0.875"],
         "preset imagenet": ["--preset", "imagenet"]}


def throughput(tf) -> list[tuple[str, float]]:
    folder = corpora.repeated(corpora.make_corpus("photos", tf), 4)
    model = corpora.make_mobilenet()
    return [(name, engines.measure(model, folder, False, flags)["marginal"]) for name, flags in MODES.items()]


def fidelity(tf) -> list[tuple[str, float, float]]:
    from batch_infer.decoding import DecodeOptions, Resize
    from batch_infer.heads import Classification
    from batch_infer.listing import list_images
    from batch_infer.model import load_model
    from batch_infer.pipeline import batches

    folder = corpora.make_corpus("camera", tf)
    model = load_model(corpora.make_mobilenet())
    head = Classification.for_model(model)
    files = list_images(folder, ("jpg",))
    rows = []
    for name, resize in (("stretch", Resize()), ("crop", Resize("crop")), ("pad", Resize("pad")),
                         ("crop 0.875, bicubic", Resize("crop", 0.875, "bicubic"))):
        scaled_options = DecodeOptions(10**8, 512, True, True, resize)
        full_options = DecodeOptions(10**8, 512, True, False, resize)
        psnrs, agree = [], 0
        for (_, a), (_, b) in zip(batches(files, model.spec, 32, scaled_options),
                                  batches(files, model.spec, 32, full_options)):
            x, y = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
            mse = np.maximum(((x - y) ** 2).mean(axis=(1, 2, 3)), 1e-12)
            psnrs.extend(10 * np.log10(255.0**2 / mse))
            agree += int((head.scores(model.predict(a)).argmax(1) == head.scores(model.predict(b)).argmax(1)).sum())
        rows.append((name, float(np.mean(psnrs)), agree / len(files)))
    return rows


def against(tf) -> float:
    photos = corpora.make_corpus("photos", tf)
    labelled = os.path.join(corpora.ROOT, "labelled")
    if not os.path.isdir(labelled):
        names = sorted(os.listdir(os.path.join(photos, "a")))
        for index, name in enumerate(names[:200]):
            os.makedirs(os.path.join(labelled, str(index % 10)), exist_ok=True)
            os.link(os.path.join(photos, "a", name), os.path.join(labelled, str(index % 10), name))
    model = corpora.make_mobilenet()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "batch_infer", "inspect", model, "--against", labelled,
                    "--sample", "200"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="throughput,fidelity,against")
    args = parser.parse_args()
    from batch_infer.tf_import import tf

    parts = args.only.split(",")
    print(f"{os.cpu_count()} cores, TensorFlow {tf.__version__}", flush=True)
    if "against" in parts:
        print(f"inspect --against, 200 files, MobileNetV2: {against(tf):.1f} s wall", flush=True)
    if "throughput" in parts:
        print("| resize | images/s |\n|---|---|")
        for name, rate in throughput(tf):
            print(f"| {name} | {rate:.1f} |", flush=True)
    if "fidelity" in parts:
        print("| resize | PSNR, dB | top-1 agreement |\n|---|---|---|")
        for name, psnr, agreement in fidelity(tf):
            print(f"| {name} | {psnr:.1f} | {100 * agreement:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
