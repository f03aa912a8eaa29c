"""The `phash` column: a 64-bit perceptual fingerprint of each image, so that `review` finds
resized, recompressed and slightly cropped copies whatever the model (a small task model's
embedding puts two members of a class as close as a copy).

It is a DCT pHash: the upright pixels as gray (ITU-R 601 luma, as everywhere else), averaged
down to a 32x32 thumbnail; the 8x8 lowest frequencies of the thumbnail's 2-D DCT; one bit per
frequency, set where it is above their median. Copies differ in a few of the 64 bits, different
images in about half.

The thumbnail is made in the decode graph from the pixels already decoded (`thumbnails`,
batched where the batch is), after a bilinear sampling down to SAMPLES along the short side, so
a photo costs a few thousand samples, not its megapixels. The DCT and the bits are
computed per image in numpy (`fingerprints`), with the coefficients rounded, so the same pixels
give the same bits whichever engine, decoder or batch they came through.
"""

from __future__ import annotations

import numpy as np

SIDE = 32  # the thumbnail's side
FREQUENCIES = 8  # the lowest 8x8 of the DCT: 64 bits
SAMPLES = 4 * SIDE  # about this many samples along the short side before averaging
LUMA = np.array([0.2989, 0.5870, 0.1140])
DESCRIPTION = ("DCT pHash of the upright pixels: 8x8 lowest frequencies of a 32x32 gray thumbnail, "
               "each bit set above their median, as 16 hex digits")


def thumbnails(images):
    """[..., height, width, 1 or 3] pixels (any dtype, 0..255) as [..., SIDE, SIDE, 1 or 3]
    float32, by area averaging (luma is taken after it, in `fingerprints`: the same sum in
    another order, and it costs a thumbnail, not an image). Two cheaper ways to the same kind
    of average:
    - an image longer than SAMPLES on its short side is first sampled down to SAMPLES there,
      bilinearly (four pixels read a sample, so a photo costs the same whatever its size; a
      strided slice cost four times as much);
    - an image from SIDE to 2 * SIDE on each side is resized bilinearly: at those factors every
      pixel counts, at exactly 2 the values are the area average's, and it costs two thirds as
      much (the common thumbnail of 64x64 is the case)."""
    from .tf_import import tf

    size = tf.shape(images)[-3:-1]
    short, long = tf.reduce_min(size), tf.reduce_max(size)
    sampled = tf.cond(
        short > SAMPLES,
        lambda: tf.image.resize(images, tf.cast(tf.round(tf.cast(size * SAMPLES, tf.float32) / tf.cast(short, tf.float32)),
                                                tf.int32), method="bilinear"),
        lambda: tf.cast(images, tf.float32))
    return tf.cond((short >= SIDE) & (long <= 2 * SIDE),
                   lambda: tf.image.resize(sampled, (SIDE, SIDE), method="bilinear"),
                   lambda: tf.image.resize(sampled, (SIDE, SIDE), method="area"))


def _dct_matrix() -> np.ndarray:
    """The first FREQUENCIES rows of the orthonormal DCT-II matrix of size SIDE, float64."""
    k, n = np.arange(FREQUENCIES)[:, None], np.arange(SIDE)[None, :]
    matrix = np.sqrt(2.0 / SIDE) * np.cos(np.pi * (2 * n + 1) * k / (2 * SIDE))
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix()


def fingerprints(thumbnails: np.ndarray) -> np.ndarray:
    """[images, SIDE, SIDE, 1 or 3] thumbnails to one uint64 each, most significant bit the
    lowest frequency. Coefficients are rounded to 1/1000 (pixel units) so that float noise in
    the last place cannot flip a bit: a flat image has all 63 higher frequencies exactly 0."""
    pixels = gray(thumbnails)
    count = len(pixels)
    # D X D^T for every image as two matrix products over the whole batch, not two per image:
    # X D^T, then (D X D^T)^T = (X D^T)^T D^T.
    rows = (pixels.reshape(count * SIDE, SIDE) @ _DCT.T).reshape(count, SIDE, FREQUENCIES)
    coefficients = (rows.transpose(0, 2, 1).reshape(count * FREQUENCIES, SIDE) @ _DCT.T).reshape(
        count, FREQUENCIES, FREQUENCIES).transpose(0, 2, 1)
    flat = np.round(coefficients, 3).reshape(count, FREQUENCIES * FREQUENCIES)
    middle = FREQUENCIES * FREQUENCIES // 2
    ordered = np.partition(flat, [middle - 1, middle], axis=1)  # np.median's value, at a sixth of its cost
    bits = flat > (ordered[:, middle - 1:middle] + ordered[:, middle:middle + 1]) / 2
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).reshape(-1)


def gray(thumbnails: np.ndarray) -> np.ndarray:
    """[images, SIDE, SIDE, 1 or 3] as [images, SIDE, SIDE] float64 luma (ITU-R 601, the weights
    of tf.image.rgb_to_grayscale), summed in float32 as TensorFlow does, by one matrix product
    (a third of the time of three scaled channels added)."""
    pixels = np.asarray(thumbnails, np.float32)
    if pixels.shape[-1] == 1:
        return pixels[..., 0].astype(np.float64)
    return (pixels.reshape(-1, 3) @ LUMA.astype(np.float32)).reshape(pixels.shape[:-1]).astype(np.float64)


def mean_colours(thumbnails: np.ndarray) -> list[str]:
    """Each thumbnail's mean colour as 6 hex digits, rrggbb (a gray image's three alike): what a
    pHash leaves out. Two flat drawings of one size at one place have the same 64 bits whatever
    their colours; a resized or recompressed copy keeps its mean colour within a level or two."""
    pixels = np.asarray(thumbnails, np.float32)
    count, channels = len(pixels), pixels.shape[-1]
    # The mean of each channel as one matrix product: numpy's mean over two axes at once took
    # 26 µs an image, more than the rest of the fingerprint.
    averaging = (np.tile(np.eye(channels), (SIDE * SIDE, 1)) / (SIDE * SIDE)).astype(np.float32)
    means = np.clip(np.round(pixels.reshape(count, SIDE * SIDE * channels) @ averaging), 0, 255).astype(np.uint8)
    text = np.repeat(means, 3 // channels, axis=1).tobytes().hex()
    return [text[start:start + 6] for start in range(0, len(text), 6)]


def colours_from_text(texts) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the texts that are mean colours, their levels as [colours, 3] int16); None
    and NaN skipped."""
    positions = [i for i, text in enumerate(texts) if isinstance(text, str)]
    levels = np.frombuffer(bytes.fromhex("".join(texts[i] for i in positions)), np.uint8)
    return np.array(positions, np.int64), levels.reshape(-1, 3).astype(np.int16)


def colour_distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The largest difference of one channel between mean colours' levels, elementwise
    (broadcasting)."""
    return np.abs(first - second).max(axis=-1)


def as_text(values: np.ndarray) -> list[str]:
    """uint64 fingerprints as 16 hex digits each, as `content_hash` is written."""
    return [f"{int(value):016x}" for value in values]


def from_text(texts) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the texts that are fingerprints, their uint64 values); None and NaN skipped."""
    positions = [i for i, text in enumerate(texts) if isinstance(text, str)]
    return (np.array(positions, np.int64),
            np.array([int(texts[i], 16) for i in positions], np.uint64).reshape(-1))


def distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bits that differ between uint64 fingerprints, elementwise (broadcasting), as uint8."""
    return np.bitwise_count(np.bitwise_xor(first, second))
