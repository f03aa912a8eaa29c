"""Where the CPU goes, per image on one core: python benchmarks/decode_cost.py (part of make bench).

On a machine where the model and the decoder share the cores, the best a job can reach is
model / (model + decode) of the model limit, so what decoding costs per image decides how close to
the model limit any pipeline can come. For each corpus this times, in one thread:
- read: the file's bytes (tf.io.read_file);
- decode alone: read + full decode, no resize (the least any pipeline decoding on these cores
  does);
- plain decode: read + full decode + antialiased resize, nothing else (the least any pipeline
  with the same model inputs does);
- batch-infer decode: `decode.graph.decode` as `run` uses it (header checks, EXIF orientation, scaled
  JPEG decode, resize);
- model: the signature on a batch of pre-decoded tensors, per image (bench.py's model limit with
  one stream);
- phash: the `phash` and `mean_colour` columns alone, from pixels decoded beforehand (camera photos at the JPEG
  scale `run` decodes them at): the thumbnails, made as `run` makes them (one batch where the
  batch is small enough, else one image at a time), the bits and the means;
and prints that best share for each kind of decode, and the phash's share of an image's work
(model + batch-infer decode).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import corpora  # noqa: E402
from bench import BATCH, DECODING, model_for, model_limit  # noqa: E402
from batch_infer.listing import list_images  # noqa: E402
from batch_infer.model import load_model  # noqa: E402
from batch_infer.decode.graph import ONE_RESIZE_PIXELS, decode  # noqa: E402
from batch_infer.decode.pipeline import batches_per_read  # noqa: E402
from batch_infer.perceptual import fingerprints, mean_colours, thumbnails  # noqa: E402
from batch_infer.tf_import import tf  # noqa: E402

FILES = {"photos": 300, "camera": 40, "small": 4000, "small-jpeg": 4000}  # enough for a steady figure
JPEG_RATIO = {"camera": 8}  # the scale `run` decodes 4000x3000 photos at for a 224x224 model


def per_image_us(paths: list[bytes], function) -> float:
    """Best of 3 passes of a one-thread tf.data map over the files, in microseconds per image."""
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(function).batch(BATCH)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    dataset = dataset.with_options(options)

    def seconds() -> float:
        started = time.perf_counter()
        for _ in dataset:
            pass
        return time.perf_counter() - started

    seconds()  # traces the map function
    return min(seconds() for _ in range(3)) / len(paths) * 1e6


def phash_us(paths: list[bytes], channels: int, ratio: int, read_size: int) -> float:
    """Best of 3 passes of the phash alone on pre-decoded batches of `read_size` images, the
    batches `run` decodes as one (the corpora's images are each one size), in microseconds per
    image."""
    def pixels(path):
        data = tf.io.read_file(path)
        if ratio > 1:
            return tf.io.decode_jpeg(data, channels, ratio)
        return tf.io.decode_image(data, channels=channels, expand_animations=False)

    images = [pixels(path) for path in paths]
    one_resize = read_size * images[0].shape[0] * images[0].shape[1] <= ONE_RESIZE_PIXELS
    # As `run` hands them over: a batch resized as one is float32 already (for the model), a
    # file at a time is its decoded uint8.
    dtype = tf.float32 if one_resize else tf.uint8
    batches = [tf.cast(tf.stack(images[i:i + read_size]), dtype) for i in range(0, len(images), read_size)]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, channels], dtype)])
    def thumbs(batch):
        return thumbnails(batch) if one_resize else tf.map_fn(thumbnails, batch, fn_output_signature=tf.float32)

    def seconds() -> float:
        started = time.perf_counter()
        for batch in batches:
            small = thumbs(batch).numpy()
            fingerprints(small), mean_colours(small)
        return time.perf_counter() - started

    seconds()  # traces
    return min(seconds() for _ in range(3)) / len(paths) * 1e6


def costs(name: str) -> dict[str, float]:
    folder = corpora.make_corpus(name, tf)
    files = list_images(folder, ("jpg", "png"))[:FILES[name]]
    paths = [item.fs_path for item in files]
    runner = load_model(model_for(name))
    spec = runner.spec

    def pixels(path):
        return tf.io.decode_image(tf.io.read_file(path), channels=spec.channels, expand_animations=False)

    return {
        "read": per_image_us(paths, lambda path: tf.strings.length(tf.io.read_file(path))),
        "decode alone": per_image_us(paths, lambda path: tf.shape(pixels(path))),
        "plain decode": per_image_us(paths, lambda path: tf.image.resize(pixels(path), spec.image_size,
                                                                         antialias=True)),
        "batch-infer decode": per_image_us(paths, lambda path: decode(tf.io.read_file(path), spec, DECODING)),
        "model": 1e6 / model_limit(runner, len(paths), streams=1),
        "phash": phash_us(paths, spec.channels, JPEG_RATIO.get(name, 1), BATCH * batches_per_read(files, spec, BATCH)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=",".join(corpora.CORPORA))
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    columns = ("read", "decode alone", "plain decode", "batch-infer decode", "model", "phash")
    decodes = ("decode alone", "plain decode", "batch-infer decode")
    print("µs per image on one core, and the best share of the model limit each decode leaves:\n")
    print("| corpus | " + " | ".join(columns) + " | " + " | ".join(f"best, {key}" for key in decodes)
          + " | phash share |")
    print("|" + "---|" * (len(columns) + len(decodes) + 2))
    for name in args.corpora.split(","):
        cost = costs(name)
        best = [cost["model"] / (cost["model"] + cost[key]) for key in decodes]
        print(f"| {name} | " + " | ".join(f"{cost[key]:.0f}" for key in columns)
              + " | " + " | ".join(f"{share:.2f}x" for share in best)
              + f" | {cost['phash'] / (cost['model'] + cost['batch-infer decode']):.1%} |", flush=True)


if __name__ == "__main__":
    main()
