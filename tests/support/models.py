"""Small real SavedModels of every signature shape batch-infer must handle, built in seconds."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

SIZE = 16


def _weights(seed: int, *shape: int) -> tf.Variable:
    return tf.Variable(np.random.default_rng(seed).normal(0, 0.5, shape).astype(np.float32))


class PixelClassifier(tf.Module):
    """conv -> mean pool -> dense: outputs depend on where pixels are, not just their average."""

    def __init__(self, channels: int = 3, classes: int = 5, scale: float = 1 / 255):
        super().__init__()
        self.kernel = _weights(1, 3, 3, channels, 8)
        self.dense = _weights(2, 8, classes)
        self.scale = scale

    def logits(self, images):
        x = tf.cast(images, tf.float32) * self.scale
        features = tf.nn.relu(tf.nn.conv2d(x, self.kernel, 1, "SAME"))
        return tf.reduce_mean(features, axis=(1, 2)) @ self.dense * 4.0


def save_float_probabilities(path, channels: int = 3, classes: int = 5, size=(SIZE, SIZE)):
    """float32 [None,H,W,C] raw pixels in, softmax probabilities out (like a Keras classifier)."""
    module = PixelClassifier(channels, classes)
    spec = tf.TensorSpec([None, size[0], size[1], channels], tf.float32)
    fn = tf.function(lambda images: {"probabilities": tf.nn.softmax(module.logits(images))},
                     input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})
    return path


def save_uint8_logits(path, signature: str = "classify", size=(SIZE, SIZE)):
    """A custom signature name, uint8 input, logits out."""
    module = PixelClassifier()
    spec = tf.TensorSpec([None, size[0], size[1], 3], tf.uint8, name="pixels")
    fn = tf.function(lambda pixels: {"logits": module.logits(pixels)}, input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={signature: fn})
    return path


def save_encoded_bytes(path):
    """tf.string [None] in: the model decodes and resizes the files itself."""
    module = PixelClassifier(classes=3)

    def decode_one(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.image.resize(image, (SIZE, SIZE), antialias=True)

    spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    fn = tf.function(lambda image_bytes: {"scores": tf.nn.softmax(module.logits(
        tf.map_fn(decode_one, image_bytes, fn_output_signature=tf.float32)))}, input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})
    return path


def save_several_outputs(path, ambiguous: bool):
    """Outputs besides the scores: an int class id (not scores) and, when ambiguous, logits too."""
    module = PixelClassifier()
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")

    def outputs(images):
        logits = module.logits(images)
        result = {"probabilities": tf.nn.softmax(logits), "class_id": tf.argmax(logits, axis=1)}
        if ambiguous:
            result["logits"] = logits
        return result

    fn = tf.function(outputs, input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})
    return path


def save_dynamic_size(path):
    """[None, None, None, 3]: the signature does not say what size to feed."""
    module = PixelClassifier()
    spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    fn = tf.function(lambda images: {"probabilities": tf.nn.softmax(module.logits(images))},
                     input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})
    return path


def save_keras_export(path, classes: int = 4):
    """Keras 3 model.export(): float32 [None,H,W,3], scaling inside the model, softmax output."""
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes, activation="softmax"),
    ])
    model.export(str(path), verbose=False)
    return path


# Classes visible only in the brightness of the image's centre: level ranges of 0..255.
LEVEL_LABELS = ("dark", "dim", "light", "white")


def level_of(label_index: int, rng) -> float:
    return 64 * label_index + rng.uniform(10, 54)


def _train_levels(model, inputs: np.ndarray, classes: np.ndarray, path) -> str:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(inputs, classes, epochs=20, batch_size=32, verbose=0)
    model.export(str(path), verbose=False)
    with open(os.path.join(str(path), "labels.txt"), "w") as handle:
        handle.write("\n".join(LEVEL_LABELS) + "\n")
    return str(path)


def _level_batch(rng, count: int):
    classes = rng.integers(0, len(LEVEL_LABELS), count)
    levels = np.array([level_of(int(k), rng) for k in classes], np.float32)
    pixels = levels[:, None, None, None] + rng.normal(0, 4, (count, SIZE, SIZE, 3)).astype(np.float32)
    return np.clip(pixels, 0, 255), classes


def train_centre_symmetric(path) -> str:
    """Trained on the centre of each image only (--resize crop), scaled to -1..1 (symmetric), no
    scaling inside: the wrong crop or scaling shows another class."""
    import keras

    keras.utils.set_random_seed(5)
    pixels, classes = _level_batch(np.random.default_rng(5), 400)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(len(LEVEL_LABELS), activation="softmax")])
    return _train_levels(model, pixels / 127.5 - 1.0, classes, path)


def train_rescaling_raw(path) -> str:
    """A Rescaling layer inside, so raw 0..255 is right; trained on whole, uniform images, so
    stretch and crop give the same inputs and cannot be told apart."""
    import keras

    keras.utils.set_random_seed(6)
    pixels, classes = _level_batch(np.random.default_rng(6), 400)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(len(LEVEL_LABELS), activation="softmax")])
    return _train_levels(model, pixels, classes, path)


def write_level_photos(root, per_class: int, folders=LEVEL_LABELS, seed: int = 7,
                       uniform: bool = False) -> str:
    """Non-square PNGs (2:1 and 1:2): the centre square at the class's level, the sides at the
    opposite level, so only a centre crop shows the class (or, `uniform`, all at its level)."""
    from . import images

    rng = np.random.default_rng(seed)
    for index, folder in enumerate(folders):
        for number in range(per_class):
            level = level_of(index % len(LEVEL_LABELS), rng)
            side = 24 + 8 * (number % 3)
            shape = (side, 2 * side) if number % 2 else (2 * side, side)
            pixels = np.full(shape + (3,), level if uniform else 255 - level, np.float32)
            top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
            pixels[top:top + side, left:left + side] = level
            pixels += rng.normal(0, 4, pixels.shape)
            images.write_image(os.path.join(str(root), folder, f"{number:03d}.png"),
                               np.clip(pixels, 0, 255).astype(np.uint8))
    return str(root)


def _keras_classifier(kind: str, classes: int = 4):
    """A small Keras 3 image classifier, functional or sequential, built on keras.Input: scaling
    inside, conv feature map, pooled features, dense softmax."""
    import keras

    keras.utils.set_random_seed(5)
    layers = [keras.layers.Rescaling(1 / 255, name="scale"),
              keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
              keras.layers.GlobalAveragePooling2D(name="pool"),
              keras.layers.Dense(6, activation="relu", name="hidden"),
              keras.layers.Dense(classes, activation="softmax", name="probs")]
    if kind == "sequential":
        return keras.Sequential([keras.Input((SIZE, SIZE, 3), name="image"), *layers])
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def save_keras_file(path, kind: str = "functional"):
    """A Keras classifier saved as the file `path` (.keras, or legacy .h5)."""
    _keras_classifier(kind).save(str(path))
    return path


def save_keras_extractor(path):
    """A headless Keras feature extractor: pixels in, pooled ReLU features [batch, 8] out."""
    import keras

    keras.utils.set_random_seed(6)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="features")(x)).save(str(path))
    return path


def save_probs_and_features(path):
    """A SavedModel signature with two [batch, N] outputs: softmax probabilities and the
    pooled features they come from, plus a scalar regression output."""
    module = PixelClassifier()

    def outputs(images):
        x = tf.cast(images, tf.float32) * module.scale
        features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, module.kernel, 1, "SAME")), axis=(1, 2))
        logits = features @ module.dense * 4.0
        return {"probs": tf.nn.softmax(logits), "features": features,
                "brightness": tf.reduce_mean(x, axis=(1, 2, 3))}

    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")
    tf.saved_model.save(module, str(path), signatures={"serving_default": tf.function(outputs, input_signature=[spec])})
    return path


def save_headless_extractor(path, dim: int = 32):
    """A SavedModel feature extractor with no classification head: [batch, dim] ReLU features,
    what a user gets from a backbone export (a 1,280-d MobileNetV2 is the same shape)."""
    module = tf.Module()
    module.kernel = _weights(7, 3, 3, 3, dim)
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")
    fn = tf.function(lambda images: {"output_0": tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(
        images, module.kernel, 1, "SAME")), axis=(1, 2))}, input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})
    return path


def save_with_noise(path):
    """Probabilities and a `noise` output drawn from TensorFlow's random generator: a model that
    converts to ONNX without an error but whose ONNX twin draws other numbers."""
    module = PixelClassifier()
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")

    def outputs(images):
        probabilities = tf.nn.softmax(module.logits(images))
        return {"probabilities": probabilities, "noise": tf.random.uniform(tf.shape(probabilities), seed=1)}

    tf.saved_model.save(module, str(path), signatures={"serving_default": tf.function(outputs, input_signature=[spec])})
    return path
