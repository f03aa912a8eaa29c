"""Regenerate the sample data used by the batch-infer demo and tests.

Builds a small, real handwritten-digit classifier from scikit-learn's bundled
``load_digits`` dataset (no download) and writes, next to this script:

* ``digits_model/``            Keras 3 ``model.export`` SavedModel with a
                               ``serving_default`` signature: float32
                               ``[None, 32, 32, 3]`` raw pixels 0..255 in
                               (scaling is done inside the model), softmax
                               over 10 classes out.
* ``digits_model/labels.txt``  class name of class i on line i.
* ``digits.keras``             the same trained model as a Keras 3 file
                               (``model.save``), with ``digits.labels.txt``.
* ``images/<class>/NNNN.ext``  150 held-out test digits (never trained on),
                               about 2/3 PNG and 1/3 JPEG; the folder is the
                               true class, NNNN the index in ``load_digits``.
* ``images/seven/truncated.jpg`` a JPEG cut to half its bytes, so that a run
                               shows an error row.

Every image (train and served) goes through the same transform: 8x8 values
0..16 -> uint8 0..255 -> 32x32 PIL bilinear -> 3 channels. Everything is
seeded, so rerunning gives the same files. Finally the script prints the
accuracy of the exported SavedModel on the decoded image files.

Usage, from the repository root:  python sample_data/make_sample_data.py
"""

import io
import os
import shutil
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "digits_model"
KERAS_FILE = HERE / "digits.keras"
IMAGES_DIR = HERE / "images"
CLASS_NAMES = ["zero", "one", "two", "three", "four",
               "five", "six", "seven", "eight", "nine"]
N_IMAGES = 150


def to_image(digit_8x8: np.ndarray) -> Image.Image:
    """8x8 array of 0..16 -> 32x32 grayscale PIL image of 0..255."""
    pixels = np.round(digit_8x8 * (255.0 / 16.0)).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((32, 32), Image.BILINEAR)


def to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> float32 [32, 32, 3], as tf.io.decode_image(channels=3) gives."""
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def build_model() -> keras.Model:
    return keras.Sequential([
        keras.Input(shape=(32, 32, 3), dtype="float32", name="image"),
        keras.layers.Rescaling(1.0 / 255),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(len(CLASS_NAMES), activation="softmax"),
    ])


def main() -> None:
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    for d in (MODEL_DIR, IMAGES_DIR):
        shutil.rmtree(d, ignore_errors=True)

    digits = load_digits()
    idx_train, idx_test = train_test_split(
        np.arange(len(digits.target)), test_size=0.25,
        random_state=0, stratify=digits.target)

    # Train on the same 32x32 RGB 0..255 pixels that the served files decode to.
    x_train = np.stack([to_array(to_image(digits.images[i])) for i in idx_train])
    y_train = digits.target[idx_train]
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=30, batch_size=32, verbose=0)
    model.export(str(MODEL_DIR), verbose=False)
    (MODEL_DIR / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    model.save(str(KERAS_FILE))
    KERAS_FILE.with_suffix(".labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")

    # Held-out images: every third one a JPEG, the rest PNG.
    for k, i in enumerate(idx_test[:N_IMAGES]):
        ext = "jpg" if k % 3 == 2 else "png"
        path = IMAGES_DIR / CLASS_NAMES[digits.target[i]] / f"{i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if ext == "jpg":
            to_image(digits.images[i]).save(path, quality=95)
        else:
            to_image(digits.images[i]).save(path)

    # A deliberately broken file: a held-out seven, JPEG-encoded, cut in half.
    seven = next(i for i in idx_test[N_IMAGES:] if digits.target[i] == 7)
    buf = io.BytesIO()
    to_image(digits.images[seven]).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    (IMAGES_DIR / "seven" / "truncated.jpg").write_bytes(data[: len(data) // 2])

    # Check the exported model the way batch-infer serves it.
    serve = tf.saved_model.load(str(MODEL_DIR)).signatures["serving_default"]
    (input_name,) = serve.structured_input_signature[1]
    paths = sorted(p for p in IMAGES_DIR.glob("*/*") if p.name != "truncated.jpg")
    batch = tf.stack([
        tf.cast(tf.io.decode_image(tf.io.read_file(str(p)), channels=3), tf.float32)
        for p in paths])
    (probs,) = serve(**{input_name: batch}).values()
    predicted = np.argmax(probs.numpy(), axis=1)
    truth = np.array([CLASS_NAMES.index(p.parent.name) for p in paths])
    print(f"wrote {MODEL_DIR} and {len(paths)} images (+1 truncated) to {IMAGES_DIR}")
    print(f"test accuracy of exported model: {np.mean(predicted == truth):.4f} "
          f"({np.sum(predicted == truth)}/{len(paths)})")


if __name__ == "__main__":
    main()
