"""The only module that touches tf.saved_model: loading a model once, reading its signatures,
and calling one.

Most SavedModel mistakes are about what the signature expects, so everything about feeding it
(input, size, channels, dtype) is decided here once, explained by `inspect`, and recorded in the
output metadata. What its outputs mean is the business of `heads`: a `Model` only returns them,
raw and by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .config import ConfigError
from .preprocessing import preprocess
from .tf_import import short_error, tf


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        dims = "?" if self.shape is None else "[" + ", ".join("None" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.dtype} {dims}"

    @property
    def is_image(self) -> bool:
        if self.dtype == "string":
            return self.shape is not None and len(self.shape) == 1
        return self.shape is not None and len(self.shape) == 4 and self.shape[3] in (1, 3)

    @property
    def is_vector(self) -> bool:
        """[batch, N] floats: class scores, or a feature vector."""
        return self.dtype.startswith(("float", "bfloat")) and self.shape is not None and len(self.shape) == 2


@dataclass(frozen=True)
class InputSpec:
    """What the decoder must produce for one image."""

    encoded: bool  # the signature takes the file's bytes (tf.string) and decodes them itself
    image_size: tuple[int, int] | None
    channels: int | None
    dtype: tf.DType
    preprocess: str

    def describe(self) -> str:
        """As the `input` metadata says it: "float32 224x224x3" or "encoded bytes"."""
        if self.encoded:
            return "encoded bytes"
        return f"{self.dtype.name} {self.image_size[0]}x{self.image_size[1]}x{self.channels}"


def _infos(specs: dict) -> list[TensorInfo]:
    return [TensorInfo(name, spec.dtype.name,
                       None if spec.shape.rank is None else tuple(spec.shape.as_list()))
            for name, spec in sorted(specs.items())]


def signature_inputs(function) -> list[TensorInfo]:
    return _infos(function.structured_input_signature[1])


def signature_outputs(function) -> list[TensorInfo]:
    return _infos(function.structured_outputs)


def check_model_path(path: str) -> None:
    """Cheap checks without TensorFlow, with the fix for the usual wrong things to pass."""
    if not os.path.exists(path):
        raise ConfigError(f"Model {path} does not exist; pass a SavedModel directory with --model.")
    if os.path.isfile(path):
        if path.endswith((".keras", ".h5", ".hdf5")):
            raise ConfigError(f"Model {path} is a Keras file, not a SavedModel; export it with "
                              "keras.models.load_model(path).export('DIR') and pass DIR.")
        raise ConfigError(f"Model {path} is a file; --model must be a SavedModel directory "
                          "(one holding saved_model.pb).")
    names = os.listdir(path)
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        return
    if "checkpoint" in names or any(name.endswith(".index") for name in names):
        raise ConfigError(f"Model {path} holds a TensorFlow checkpoint, not a SavedModel; save one "
                          "with tf.saved_model.save(model, DIR) or Keras model.export(DIR).")
    raise ConfigError(f"Model {path} has no saved_model.pb, so it is not a SavedModel; export one "
                      "with Keras model.export(DIR) or tf.saved_model.save(model, DIR).")


def load_saved_model(path: str):
    check_model_path(path)
    try:
        return tf.saved_model.load(path)
    except Exception as error:  # TF raises many unrelated types for a damaged model
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ConfigError(f"Could not load the SavedModel at {path} ({first_line}); re-export it "
                          "with Keras model.export(DIR) or tf.saved_model.save(model, DIR).") from None


def get_signature(loaded, path: str, name: str):
    available = sorted(loaded.signatures.keys())
    if not available:
        raise ConfigError(f"SavedModel {path} has no signatures; save it with Keras model.export(DIR) "
                          "or tf.saved_model.save(model, DIR, signatures=...).")
    if name not in loaded.signatures:
        raise ConfigError(f"Signature {name!r} not found in {path}; available: {', '.join(available)}. "
                          "Choose one with --signature.")
    return loaded.signatures[name]


def choose_input(inputs: list[TensorInfo], key: str | None, signature: str) -> TensorInfo:
    names = ", ".join(info.describe() for info in inputs)
    if key is not None and key not in {info.name for info in inputs}:
        raise ConfigError(f"Input key {key!r} is not an input of signature {signature!r}; "
                          f"inputs are {names}.")
    if len(inputs) != 1:
        raise ConfigError(f"Signature {signature!r} takes {len(inputs)} inputs ({names}) but batch-infer "
                          "feeds exactly one image tensor; export a signature with one image input.")
    chosen = inputs[0]
    if not chosen.is_image:
        raise ConfigError(f"Signature input {chosen.describe()} is not an image batch; batch-infer feeds "
                          "[batch, height, width, 1 or 3] pixels or [batch] encoded image bytes (string).")
    return chosen


def input_spec(chosen: TensorInfo, image_size: tuple[int, int] | None, preprocess: str) -> InputSpec:
    """Resolves size, channels and dtype; the signature wins, flags fill what it leaves open."""
    if chosen.dtype == "string":
        return InputSpec(True, None, None, tf.string, preprocess)
    _, height, width, channels = chosen.shape
    if height is not None and width is not None:
        if image_size is not None and image_size != (height, width):
            raise ConfigError(f"--image-size {image_size[0]}x{image_size[1]} contradicts the signature "
                              f"input {chosen.describe()}; drop --image-size.")
        image_size = (height, width)
    elif image_size is None:
        raise ConfigError(f"Signature input {chosen.describe()} does not fix the image size; pass "
                          "--image-size HxW with the size the model was trained on, e.g. 224x224.")
    dtype = tf.as_dtype(chosen.dtype)
    if dtype == tf.uint8 and preprocess != "raw":
        raise ConfigError(f"Signature input {chosen.describe()} takes uint8 pixels, so --preprocess must "
                          f"be raw (the model scales them itself); got {preprocess}.")
    if channels == 1 and preprocess in ("caffe", "torch"):
        raise ConfigError(f"--preprocess {preprocess} uses RGB channel means but the model takes one "
                          "channel; use raw, unit or symmetric.")
    return InputSpec(False, image_size, channels, dtype, preprocess)


def probe_batch(spec: InputSpec, count: int = 4) -> tf.Tensor:
    """Seeded random images in the signature's form, used to look at the outputs before a run."""
    height, width = spec.image_size or (32, 32)
    pixels = np.random.default_rng(0).integers(0, 256, (count, height, width, spec.channels or 3), np.uint8)
    if spec.encoded:
        return tf.stack([tf.io.encode_png(image) for image in pixels])
    if spec.dtype == tf.uint8:
        return tf.constant(pixels)
    return tf.cast(preprocess(tf.constant(pixels, tf.float32), spec.preprocess), spec.dtype)


@dataclass
class Model:
    """A loaded signature and how to feed it; `predict` returns every output, raw, by name.

    `probe` holds the outputs for `probe_batch(spec)`, computed once at load, so that heads can
    settle their choices (which output, which activation) before any file is read.
    """

    path: str
    signature: str
    function: object
    input_key: str
    spec: InputSpec
    outputs: list[TensorInfo]
    probe: dict[str, np.ndarray]
    _loaded: object = None  # keeps the SavedModel's variables alive

    def predict(self, batch) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in self.function(**{self.input_key: batch}).items()}

    def metadata(self) -> dict[str, str]:
        return {"model": self.path, "signature": self.signature, "input_key": self.input_key,
                "input": self.spec.describe(), "preprocess": self.spec.preprocess}


def load_model(path: str, signature: str = "serving_default", input_key: str | None = None,
               image_size: tuple[int, int] | None = None, preprocess: str = "raw") -> Model:
    """Loads a SavedModel and settles how to feed it, before any file is read; ConfigError otherwise."""
    return model_for(load_saved_model(path), path, signature, input_key, image_size, preprocess)


def model_for(loaded, path: str, signature: str, input_key: str | None,
              image_size: tuple[int, int] | None, preprocess: str) -> Model:
    function = get_signature(loaded, path, signature)
    chosen = choose_input(signature_inputs(function), input_key, signature)
    spec = input_spec(chosen, image_size, preprocess)
    model = Model(path, signature, function, chosen.name, spec, signature_outputs(function), {}, loaded)
    try:
        model.probe = model.predict(probe_batch(spec))
    except Exception as error:
        raise ConfigError(f"Signature {signature!r} failed on a test batch of "
                          f"{spec.image_size or 'encoded'} images ({short_error(error)[:300]}); check "
                          "--image-size and --preprocess against what the model was trained on.") from None
    return model


def configure_device(device: str) -> str:
    """Memory growth on every GPU (so TF does not grab all of it) and the device the model uses.

    Must run before TensorFlow creates any tensor. Decoding stays on the CPU: tf.data runs there.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise ConfigError("--device gpu was given but TensorFlow sees no GPU; install a CUDA-enabled "
                          "TensorFlow build with a working driver, or use --device cpu.")
    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
        return "cpu"
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return "gpu" if gpus else "cpu"
