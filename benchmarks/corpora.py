"""Seeded benchmark corpora and models, made once under benchmarks/corpora/ (git-ignored).

- photos: 600 JPEGs of about 500x375 (web photos), split into a/ and b/ halves;
- camera: 160 JPEGs of 4000x3000, about 3 MB each (phone photos), halves a/ and b/;
- small: 20,000 PNGs of 64x64 (the many-small-files case), halves a/ and b/;
- small-jpeg: 20,000 JPEGs of 64x64, for a model that takes 64x64 (no resize at all);
- mobilenet_v2: a MobileNetV2-architecture SavedModel (random weights; speed does not depend on
  them), scaling to [-1, 1] inside the model as Keras applications expect;
- small_64: a small convolutional SavedModel that takes 64x64, for small-jpeg.
The halves let a benchmark time N and 2N files and cancel out start-up; `repeated` makes a corpus
several times over, so that the timed work outweighs start-up's jitter.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, "benchmarks", "corpora")
CORPORA = {  # name: (count, height, width, format, grain, JPEG quality)
    "photos": (600, 375, 500, "jpg", 18, 92),
    "camera": (160, 3000, 4000, "jpg", 5, 88),
    "small": (20000, 64, 64, "png", 18, None),
    "small-jpeg": (20000, 64, 64, "jpg", 18, 90),
}


def _pixels(rng: np.random.Generator, height: int, width: int, grain: float, tf) -> np.ndarray:
    """Smooth shapes plus grain: JPEG sizes like real photos, not like flat colour or pure noise."""
    coarse = rng.uniform(0, 255, (max(height // 32, 2), max(width // 32, 2), 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (height, width), method="bicubic").numpy()
    noise = rng.normal(0, grain, (height, width, 3)).astype(np.float32)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def make_corpus(name: str, tf) -> str:
    count, height, width, extension, grain, quality = CORPORA[name]
    folder = os.path.join(ROOT, name)
    done_marker = os.path.join(folder, ".complete")
    if os.path.exists(done_marker):
        return folder
    rng = np.random.default_rng(list(CORPORA).index(name))
    base = _pixels(rng, height, width, grain, tf)
    for i in range(count):
        half = "a" if i < count // 2 else "b"
        os.makedirs(os.path.join(folder, half), exist_ok=True)
        # Shift a base image and add fresh grain, so files differ without generating each anew.
        pixels = np.roll(base, (int(rng.integers(height)), int(rng.integers(width))), axis=(0, 1))
        pixels = np.clip(pixels.astype(np.int16) + rng.integers(-6, 7, (1, 1, 3)), 0, 255).astype(np.uint8)
        encoded = tf.io.encode_png(pixels) if extension == "png" else tf.io.encode_jpeg(pixels, quality=quality)
        with open(os.path.join(folder, half, f"{i:05d}.{extension}"), "wb") as handle:
            handle.write(encoded.numpy())
    open(done_marker, "w").close()
    return folder


def timed_run(model: str, folder: str, extra: list[str], batch: int = 32,
              output: str | None = None) -> tuple[float, dict, list[int]]:
    """(seconds, summary line, sizes of the parts written) of one `batch-infer run` into
    `output`, by default a temporary OUT, which is removed afterwards."""
    kept = output
    output = kept or os.path.join(tempfile.mkdtemp(prefix="bench-run-"), "out")
    try:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "batch_infer", "run", "--model", model,
                               "--input", folder, "--output", output, "--quiet",
                               "--batch-size", str(batch), *extra],
                              check=True, cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=900)
        seconds = time.perf_counter() - started
        parts = [os.path.getsize(path) for path in glob.glob(os.path.join(output, "part-*.parquet"))]
        return seconds, json.loads(done.stdout.strip().splitlines()[-1]), parts
    finally:
        if kept is None:
            shutil.rmtree(os.path.dirname(output))


def repeated(folder: str, copies: int) -> str:
    """The corpus `copies` times over, as hard links (no extra disk), keeping its a/ and b/ halves."""
    target = f"{folder}-x{copies}"
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        for half in ("a", "b"):
            os.makedirs(os.path.join(target, half), exist_ok=True)
            for name in sorted(os.listdir(os.path.join(folder, half))):
                for copy in range(copies):
                    link = os.path.join(target, half, f"{copy}-{name}")
                    if not os.path.exists(link):
                        os.link(os.path.join(folder, half, name), link)
        open(marker, "w").close()
    return target


def make_mobilenet() -> str:
    path = os.path.join(ROOT, "mobilenet_v2")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        import keras

        keras.utils.set_random_seed(0)
        inputs = keras.Input((224, 224, 3))
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
        outputs = keras.applications.MobileNetV2(weights=None, input_tensor=scaled, classes=1000)(scaled)
        keras.Model(inputs, outputs).export(path, verbose=False)
    return path


def make_small_64() -> str:
    """The digits network's shape for 64x64 inputs (halved first, so it costs about what the
    digits model does): a model for small files that need no resize."""
    path = os.path.join(ROOT, "small_64")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        import keras

        keras.utils.set_random_seed(0)
        keras.Sequential([
            keras.Input((64, 64, 3), name="image"), keras.layers.Rescaling(1 / 255),
            keras.layers.AveragePooling2D(2), keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax")]).export(path, verbose=False)
    return path


def make_mobilenet_features() -> str:
    """MobileNetV2 (random weights) exported with two outputs, `probs` [batch, 1000] and the
    pooled `features` [batch, 1280] they come from, as a classifier reused for embeddings is."""
    path = os.path.join(ROOT, "mobilenet_v2_features")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        import keras

        keras.utils.set_random_seed(0)
        base = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
        pooled = next(layer for layer in base.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))
        both = keras.Model(base.inputs, {"probs": base.outputs[0], "features": pooled.output})  # by type: the
        # name takes a suffix when other models were built in this process first
        inputs = keras.Input((224, 224, 3))
        outputs = both(keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs))
        keras.Model(inputs, outputs).export(path, verbose=False)
    return path


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from batch_infer.tf_import import tf

    for name in CORPORA:
        print(f"corpus {name}: {make_corpus(name, tf)}", flush=True)
    print(f"model: {make_mobilenet()}")


if __name__ == "__main__":
    main()
