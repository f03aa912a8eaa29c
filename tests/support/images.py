"""Real image files for tests, written with TensorFlow's own encoders."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf


def random_pixels(seed: int, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Smooth random images (blobs, not noise), so JPEG keeps them recognisable."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 4, 1), max(width // 4, 1), channels)).astype(np.float32)
    return tf.cast(tf.image.resize(small, (height, width)), tf.uint8).numpy()


def write_image(path, pixels: np.ndarray) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encoder = tf.io.encode_png if path.lower().endswith(".png") else tf.io.encode_jpeg
    with open(path, "wb") as handle:
        handle.write(encoder(pixels).numpy())
    return path


def write_truncated_jpeg(path, seed: int = 99) -> str:
    data = tf.io.encode_jpeg(random_pixels(seed, 40, 40)).numpy()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    return str(path)
