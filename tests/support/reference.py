"""Model inputs computed independently of batch-infer, in numpy and Pillow, from the definitions
the README gives: the EXIF turn by Pillow's own transposes, the centred box and the padding in
plain integer arithmetic, and each filter as a separable weight matrix written out from its
formula (half-pixel centres; when shrinking with antialias, the kernel widened by the scale;
weights falling outside the image dropped and the rest renormalised).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68])


def _triangle(x):
    return np.maximum(0.0, 1.0 - np.abs(x))


def _keys_cubic(x):  # a = -0.5
    x = np.abs(x)
    return np.where(x < 1, (1.5 * x - 2.5) * x * x + 1,
                    np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0.0))


def _lanczos3(x):
    return np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)


KERNELS = {"bilinear": (_triangle, 1.0), "bicubic": (_keys_cubic, 2.0), "lanczos3": (_lanczos3, 3.0)}


def weights(size_in: int, size_out: int, interpolation: str, antialias: bool) -> np.ndarray:
    """[size_out, size_in]: output pixel i as a weighted sum of input pixels."""
    matrix = np.zeros((size_out, size_in))
    scale = size_in / size_out  # input pixels per output pixel
    if interpolation == "nearest":
        for i in range(size_out):
            matrix[i, min(int(math.floor((i + 0.5) * scale)), size_in - 1)] = 1.0
        return matrix
    if interpolation == "area":  # the exact share of each input pixel in the output pixel's span
        for i in range(size_out):
            start, end = i * scale, (i + 1) * scale
            for j in range(int(math.floor(start)), min(int(math.ceil(end)), size_in)):
                matrix[i, j] = min(end, j + 1) - max(start, j)
        return matrix / matrix.sum(axis=1, keepdims=True)
    if interpolation == "bicubic" and not antialias:
        # TensorFlow's ResizeBicubic reads Keys' cubic from a table of 1024 steps per pixel.
        for i in range(size_out):
            position = (i + 0.5) * scale - 0.5
            base = int(math.floor(position))
            step = round((position - base) * 1024) / 1024
            taps = np.arange(base - 1, base + 3)
            row = _keys_cubic(np.array([1 + step, step, 1 - step, 2 - step]))
            inside = (taps >= 0) & (taps < size_in)
            matrix[i, taps[inside]] = row[inside] / row[inside].sum()
        return matrix
    kernel, radius = KERNELS[interpolation]
    widen = max(scale, 1.0) if antialias else 1.0
    for i in range(size_out):
        centre = (i + 0.5) * scale  # in input coordinates, pixel j covers [j, j + 1)
        taps = np.arange(size_in)
        row = kernel((taps + 0.5 - centre) / widen)
        row[np.abs(taps + 0.5 - centre) >= radius * widen] = 0.0
        matrix[i] = row / row.sum()
    return matrix


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str, antialias: bool) -> np.ndarray:
    """[h, w, c] to float64 [size[0], size[1], c]."""
    rows = weights(image.shape[0], size[0], interpolation, antialias)
    cols = weights(image.shape[1], size[1], interpolation, antialias)
    return np.einsum("ij,jkc,lk->ilc", rows, image.astype(np.float64), cols)


def model_input(image: np.ndarray, size: tuple[int, int], mode: str = "stretch", fraction: float = 1.0,
                interpolation: str = "bilinear", antialias: bool = True) -> np.ndarray:
    """Upright uint8 pixels to the resized float image, for each --resize mode."""
    height, width = image.shape[:2]
    target_height, target_width = size
    if mode == "pad":
        ratio = max(width / target_width, height / target_height)
        inner = (int(height / ratio), int(width / ratio))
        top = int((target_height - height / ratio) // 2)
        left = int((target_width - width / ratio) // 2)
        out = np.zeros((target_height, target_width, image.shape[2]))
        out[top:top + inner[0], left:left + inner[1]] = (
            image if inner == (height, width) else resize(image, inner, interpolation, antialias))
        return out
    box_height, box_width = height, width
    if mode == "crop":  # the largest centred box of the target's aspect ratio
        box_height = max(min(height, width * target_height // target_width), 1)
        box_width = max(min(width, height * target_width // target_height), 1)
    box_height = max(int(math.floor(fraction * box_height)), 1)
    box_width = max(int(math.floor(fraction * box_width)), 1)
    top, left = (height - box_height) // 2, (width - box_width) // 2
    box = image[top:top + box_height, left:left + box_width]
    if box.shape[:2] == tuple(size):
        return box.astype(np.float64)
    return resize(box, size, interpolation, antialias)


def scale(pixels: np.ndarray, preprocess: str) -> np.ndarray:
    if preprocess == "raw":
        return pixels
    if preprocess == "unit":
        return pixels / 255.0
    if preprocess == "symmetric":
        return pixels / 127.5 - 1.0
    if preprocess == "caffe":
        return pixels[..., ::-1] - CAFFE_BGR_MEAN
    if preprocess == "torch":
        return (pixels / 255.0 - TORCH_MEAN) / TORCH_STD
    raise ValueError(preprocess)


# Pillow's ImageOps.exif_transpose table, by orientation.
_TRANSPOSES = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
               4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
               6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
               8: [Image.Transpose.ROTATE_90]}


def upright(stored: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels turned as Pillow's exif_transpose turns them."""
    image = Image.fromarray(stored)
    for step in _TRANSPOSES.get(orientation, []):
        image = image.transpose(step)
    return np.asarray(image)


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    """A JPEG (quality 95) carrying an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()
