"""Upright pixels to a model input: the model's channels, its size by the resize modes, its dtype
and pixel scaling. `model_input` is the one path every decoder's pixels take."""

from __future__ import annotations

import numpy as np

from ..model import InputSpec
from ..perceptual import thumbnails
from ..preprocessing import preprocess
from ..tf_import import tf
from .options import Resize


def to_channels(image: tf.Tensor, wanted: int) -> tf.Tensor:
    """Gray, gray+alpha, RGB or RGBA as the model's 1 or 3 channels. Alpha is dropped, as
    Pillow's convert("RGB") does; colour becomes gray by the same ITU-R 601 luma for every format
    (gray pixels stay exactly as they are)."""
    # A slice and a tile, not a cond: RGB(A) keeps channels 0 to 2; gray (+ alpha) repeats channel 0.
    colour = tf.shape(image)[-1] >= 3
    kept = image[..., :tf.where(colour, 3, 1)]
    rgb = tf.tile(kept, tf.concat([tf.ones([image.shape.rank - 1], tf.int32), [tf.where(colour, 1, 3)]], 0))
    result = tf.image.rgb_to_grayscale(rgb) if wanted == 1 else rgb
    result.set_shape((None, None, wanted))
    return result


def model_input(image: tf.Tensor, spec: InputSpec, resize: Resize = Resize()) -> tf.Tensor:
    """Upright pixels as stored ([height, width, 1 to 4] uint8) to one model input: the model's
    channels, its size (`resized`), its dtype and pixel scaling (`scaled`). Every decoder's
    pixels come through here."""
    return scaled(resized(to_channels(image, spec.channels), spec.image_size, resize), spec)


def _box(height, width, target: tuple[int, int], resize: Resize):
    """(top, left, box height, box width) of the centred box that becomes the model input, in
    int32, computed in float32 as Keras computes its crop (so --preset keras matches it)."""
    target_height, target_width = target
    if resize.mode == "crop":
        box_height = tf.cast(tf.cast(width * target_height, tf.float32) / target_width, tf.int32)
        box_height = tf.maximum(tf.minimum(height, box_height), 1)
        box_width = tf.cast(tf.cast(height * target_width, tf.float32) / target_height, tf.int32)
        box_width = tf.maximum(tf.minimum(width, box_width), 1)
    else:
        box_height, box_width = height, width
    if resize.crop_fraction != 1.0:
        fraction = tf.constant(resize.crop_fraction, tf.float32)
        box_height = tf.maximum(tf.cast(tf.floor(fraction * tf.cast(box_height, tf.float32)), tf.int32), 1)
        box_width = tf.maximum(tf.cast(tf.floor(fraction * tf.cast(box_width, tf.float32)), tf.int32), 1)
    top = tf.cast(tf.cast(height - box_height, tf.float32) / 2, tf.int32)
    left = tf.cast(tf.cast(width - box_width, tf.float32) / 2, tf.int32)
    return top, left, box_height, box_width


def resized(image: tf.Tensor, size: tuple[int, int], resize: Resize = Resize()) -> tf.Tensor:
    """[height, width, channels] pixels, or a batch of images of one size, to float32 at `size`
    by `resize` (see `Resize`); values are not clipped, so bicubic and lanczos3 may overshoot
    0..255 as they do in Keras. An image (or box) that already has the size skips the resize and
    keeps its pixels, which is exactly what any of the filters would give."""
    height, width = size
    shape = tf.shape(image)
    if resize.mode == "pad":
        result = tf.cond(
            tf.reduce_all(shape[-3:-1] == (height, width)), lambda: tf.cast(image, tf.float32),
            lambda: tf.cast(tf.image.resize_with_pad(image, height, width, method=resize.interpolation,
                                                     antialias=resize.antialias), tf.float32))
    else:
        if resize.mode == "crop" or resize.crop_fraction != 1.0:
            top, left, box_height, box_width = _box(shape[-3], shape[-2], size, resize)
            image = image[..., top:top + box_height, left:left + box_width, :]
        result = tf.cond(
            tf.reduce_all(tf.shape(image)[-3:-1] == (height, width)), lambda: tf.cast(image, tf.float32),
            lambda: tf.cast(tf.image.resize(image, (height, width), method=resize.interpolation,
                                            antialias=resize.antialias), tf.float32))
    result.set_shape(image.shape[:-3].concatenate((height, width, image.shape[-1])))
    return result


def scaled(pixels: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    """Resized float pixels 0..255 in the signature's dtype and pixel scaling: uint8 models get
    them rounded and clipped, float models scaled by --preprocess."""
    if spec.dtype == tf.uint8 and spec.preprocess == "raw":
        return tf.cast(tf.round(tf.clip_by_value(pixels, 0.0, 255.0)), tf.uint8)
    return tf.cast(preprocess(pixels, spec.preprocess), spec.dtype)


class ModelInputs:
    """`model_input` for pixels from the fallback, and their `perceptual.thumbnails` from the
    same channels the graph makes them from, traced once for any size and channel count."""

    def __init__(self, spec: InputSpec, resize: Resize = Resize()):
        def inputs(image):
            return model_input(image, spec, resize), thumbnails(to_channels(image, spec.channels))

        self.function = tf.function(inputs, autograph=False,
                                    input_signature=[tf.TensorSpec([None, None, None], tf.uint8)])

    def __call__(self, images: list[np.ndarray]) -> tuple[tf.Tensor, np.ndarray]:
        """(the model inputs as one batch, the thumbnails [images, SIDE, SIDE, channels])."""
        inputs, thumbs = zip(*(self.function(image) for image in images))
        return tf.stack(inputs), np.stack([thumb.numpy() for thumb in thumbs])
