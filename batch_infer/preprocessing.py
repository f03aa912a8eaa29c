"""Pixel scalings: what float pixels 0..255 become before the model, by the usual conventions."""

from __future__ import annotations

from .tf_import import tf

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def preprocess(pixels: tf.Tensor, mode: str) -> tf.Tensor:
    """Float pixels 0..255 (RGB) to what the model was trained on."""
    if mode == "raw":
        return pixels
    if mode == "unit":
        return pixels / 255.0
    if mode == "symmetric":
        return pixels / 127.5 - 1.0
    if mode == "caffe":
        return pixels[..., ::-1] - tf.constant(CAFFE_BGR_MEAN)
    if mode == "torch":
        return (pixels / 255.0 - tf.constant(TORCH_MEAN)) / tf.constant(TORCH_STD)
    raise ValueError(f"unknown preprocess mode {mode!r}")
