"""Preprocessing figures for the README's "Matching how the model was trained": one command,

    python benchmarks/fidelity.py [--only throughput,fidelity,against]

prints three Markdown tables (corpora and the MobileNetV2 from corpora.py, made on first use):

- throughput: `run` images/s per preprocessing on the photos corpus (500x375 JPEGs) twice over,
  MobileNetV2, batch size 32, the marginal rate of the second 600 files (`throughput`); the
  modes take turns within each of three rounds, so that they share the machine's load, and the
  ratio to stretch is the median of the rounds' ratios; the same for the CPU time per image.
- fidelity: for stretch, crop and pad on the camera corpus (160 JPEGs of 4000x3000), the
  scaled JPEG decode `run` uses against a full decode and the same resize: mean PSNR of the
  model inputs (0..255) and top-1 agreement of the fitted MobileNetV2 below.
- against: the wall time of `batch-infer inspect MODEL --against DIR --sample 200` and the
  model calls it made (images scored, all candidates together), on two folders of 200 photos:
  class folders whose names the random-weight model never tells apart (every candidate gives the
  same answer on every file, so none can stop early: the worst case), and the `levels` folder,
  whose classes a MobileNetV2 with a head fitted under known preprocessing (crop, symmetric)
  tells apart, as a trained model does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import corpora  # noqa: E402

MODES = {"stretch": {}, "crop": {"resize": "crop"}, "pad": {"resize": "pad"},
         "crop, --crop-fraction 0.875": {"resize": "crop", "crop_fraction": 0.875},
         "stretch, bicubic": {"interpolation": "bicubic"}, "--preset keras": {"preset": "keras"},
         "--preset imagenet": {"preset": "imagenet"}}
ROUNDS = 3
LEVELS = 10  # classes of the levels folder: the hue of an image's centre
LEVELS_PER_CLASS = 20
FITTED_ON = ("crop", "symmetric")


def _seconds(model: str, folder: str, options: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one run."""
    from batch_infer.api import score

    output = tempfile.mkdtemp(prefix="bench-fidelity-")
    try:
        started, cpu = time.perf_counter(), time.process_time()
        summary = score(model, folder, os.path.join(output, "out"), batch_size=32, **options)
        assert summary["errors"] == 0, summary
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        shutil.rmtree(output)


def throughput(tf) -> list[tuple[str, float, float, float, float]]:
    """(preprocessing, images/s, its ratio to stretch, CPU ms per image, its ratio to stretch),
    medians over the rounds. `run` as a function in this process, so TensorFlow's start-up is
    paid once; each figure is the marginal between the a/ half and the whole corpus (600 and
    1,200 files), which cancels the model load. CPU time moves less than wall time when other
    work shares the machine."""
    folder = corpora.repeated(corpora.make_corpus("photos", tf), 2)
    model = corpora.make_mobilenet()
    files = len(os.listdir(os.path.join(folder, "b")))
    _seconds(model, os.path.join(folder, "a"), {})  # warm-up: first loads, allocator
    rates: dict[str, list[float]] = {name: [] for name in MODES}
    cpu_ms: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(ROUNDS):
        for name, options in MODES.items():
            half_s, half_cpu_s = _seconds(model, os.path.join(folder, "a"), options)
            full_s, full_cpu_s = _seconds(model, folder, options)
            rates[name].append(files / (full_s - half_s))
            cpu_ms[name].append(1000 * (full_cpu_s - half_cpu_s) / files)

    def ratio(figures, name):
        return statistics.median(mine / stretch for mine, stretch in zip(figures[name], figures["stretch"]))

    return [(name, statistics.median(rates[name]), ratio(rates, name), statistics.median(cpu_ms[name]),
             ratio(cpu_ms, name)) for name in MODES]


def fidelity(tf) -> list[tuple[str, float, float]]:
    """(mode, mean PSNR in dB, top-1 agreement) of scaled against full JPEG decodes."""
    from batch_infer.decode.options import DecodeOptions, Resize
    from batch_infer.heads import Classification
    from batch_infer.listing import list_images
    from batch_infer.model import load_model
    from batch_infer.decode.pipeline import batches
    from batch_infer.preprocessing import preprocess

    folder = corpora.make_corpus("camera", tf)
    # The fitted head tells colours apart (the random-weight model gives every photo one class);
    # the inputs stay 0..255 for the PSNR and are scaled only for the model.
    model = load_model(make_fitted_mobilenet(tf))
    head = Classification.for_model(model)

    def top1(batch):
        return head.scores(model.predict(preprocess(batch, FITTED_ON[1]))).argmax(1)

    files = list_images(folder, ("jpg",))
    rows = []
    for name, resize in (("stretch", Resize()), ("crop", Resize("crop")), ("pad", Resize("pad"))):
        scaled_options = DecodeOptions(10**8, 512, True, True, resize)
        full_options = DecodeOptions(10**8, 512, True, False, resize)
        psnrs, agree = [], 0
        for (_, a, _), (_, b, _) in zip(batches(files, model.spec, 32, scaled_options),
                                        batches(files, model.spec, 32, full_options)):
            x, y = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
            mse = np.maximum(((x - y) ** 2).mean(axis=(1, 2, 3)), 1e-12)
            psnrs.extend(10 * np.log10(255.0**2 / mse))
            agree += int((top1(a) == top1(b)).sum())
        rows.append((name, float(np.mean(psnrs)), agree / len(files)))
    return rows


def _level_photo(rng, hue: int) -> np.ndarray:
    """500x375 pixels: the centre square in the class's colour, the sides in the opposite one,
    smooth grain over both, so stretch and pad see both colours and crop only the class's."""
    import colorsys

    colour = np.array(colorsys.hsv_to_rgb(hue / LEVELS, 0.8, 0.9)) * 255
    image = np.tile(255 - colour, (375, 500, 1))
    image[:, 62:437] = colour
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_levels(tf) -> str:
    """The labelled folder: LEVELS_PER_CLASS JPEGs in each of the folders 0 .. LEVELS-1."""
    folder = os.path.join(corpora.ROOT, "levels")
    if not os.path.exists(os.path.join(folder, ".complete")):
        rng = np.random.default_rng(11)
        for hue in range(LEVELS):
            os.makedirs(os.path.join(folder, str(hue)), exist_ok=True)
            for number in range(LEVELS_PER_CLASS):
                with open(os.path.join(folder, str(hue), f"{number:03d}.jpg"), "wb") as handle:
                    handle.write(tf.io.encode_jpeg(_level_photo(rng, hue), quality=90).numpy())
        open(os.path.join(folder, ".complete"), "w").close()
    return folder


def make_fitted_mobilenet(tf) -> str:
    """MobileNetV2 (random weights) with a head fitted, by least squares on its standardised
    pooled features, to tell the levels' classes apart under crop and symmetric scaling, on
    other photos than the folder's: a model that works only under its own preprocessing."""
    path = os.path.join(corpora.ROOT, "mobilenet_v2_levels")
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    import keras

    from batch_infer.decode.geometry import resized
    from batch_infer.decode.options import Resize
    from batch_infer.preprocessing import preprocess

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg",
                                              input_shape=(224, 224, 3))
    rng = np.random.default_rng(12)
    classes = np.repeat(np.arange(LEVELS), 30)
    inputs = tf.stack([preprocess(resized(tf.constant(_level_photo(rng, hue)), (224, 224), Resize(FITTED_ON[0])),
                                  FITTED_ON[1]) for hue in classes])
    features = np.concatenate([backbone(inputs[i:i + 32]).numpy() for i in range(0, len(classes), 32)])
    mean, spread = features.mean(0), features.std(0) + 1e-12
    standard = (features - mean) / spread
    weights = np.linalg.lstsq(standard, np.eye(LEVELS)[classes] * 10 - 5, rcond=None)[0]
    image = keras.Input((224, 224, 3))
    head = keras.layers.Dense(LEVELS, activation="softmax")
    model = keras.Model(image, head(backbone(image)))
    head.set_weights([weights / spread[:, None], -(mean / spread) @ weights])
    model.export(path, verbose=False)
    return path


def random_labels(tf) -> str:
    """200 photos in 10 folders named as class indices of the random-weight MobileNetV2."""
    photos = corpora.make_corpus("photos", tf)
    labelled = os.path.join(corpora.ROOT, "labelled")
    if not os.path.isdir(labelled):
        names = sorted(os.listdir(os.path.join(photos, "a")))
        for index, name in enumerate(names[:200]):
            os.makedirs(os.path.join(labelled, str(index % 10)), exist_ok=True)
            os.link(os.path.join(photos, "a", name), os.path.join(labelled, str(index % 10), name))
    return labelled


def against(tf) -> list[tuple[str, float, int, str]]:
    """(folder, wall seconds, model calls in images, best candidate) for each labelled folder."""
    rows = []
    for name, model, folder in (("photos, random-weight model", corpora.make_mobilenet(), random_labels(tf)),
                                (f"levels, head fitted under {' + '.join(FITTED_ON)}", make_fitted_mobilenet(tf),
                                 make_levels(tf))):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "batch_infer", "inspect", model, "--against", folder,
                               "--sample", "200", "--json"], check=True, cwd=REPO, stdout=subprocess.PIPE)
        seconds = time.perf_counter() - started
        result = json.loads(done.stdout)
        rows.append((name, seconds, sum(row["scored"] for row in result["candidates"]), result["best"]["flags"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="throughput,fidelity,against")
    args = parser.parse_args()
    from batch_infer.tf_import import tf

    parts = args.only.split(",")
    print(f"{os.cpu_count()} cores, TensorFlow {tf.__version__}", flush=True)
    if "throughput" in parts:
        print("\n| preprocessing | images/s | vs stretch | CPU ms per image | vs stretch |\n|---|---|---|---|---|")
        for name, rate, ratio, cpu_ms, cpu_ratio in throughput(tf):
            print(f"| {name} | {rate:.1f} | {ratio:.2f}x | {cpu_ms:.1f} | {cpu_ratio:.2f}x |", flush=True)
    if "fidelity" in parts:
        print("\n| resize | PSNR, dB | top-1 agreement |\n|---|---|---|")
        for name, psnr, agreement in fidelity(tf):
            print(f"| {name} | {psnr:.1f} | {100 * agreement:.1f} % |", flush=True)
    if "against" in parts:
        print("\n| `inspect --against`, 200 files | wall, s | images scored | best |\n|---|---|---|---|")
        for name, seconds, scored, best in against(tf):
            print(f"| {name} | {seconds:.1f} | {scored} | `{best}` |", flush=True)


if __name__ == "__main__":
    main()
