"""A loaded model and how to feed it: its signatures (or a Keras model's input and outputs),
the input it takes, the pixel scaling, and the call. Reading the files is `model_loading`'s
(with `model_files` telling what a path holds); Keras models become a `Model` in `keras_model`.

Most SavedModel mistakes are about what the signature expects, so everything about feeding it
(input, size, channels, dtype, scaling) is decided here once, explained by `inspect`, and
recorded in the output metadata. What its outputs mean is the business of `heads`: a `Model`
only returns them, raw and by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from . import scaling
from .config import ConfigError
from .model_files import ModelFile, locate
from .model_loading import keras_metadata_layers, read_model
from .preprocessing import preprocess
from .tf_import import short_error, tf

# How a signature takes an image batch: [N, H, W, C]; [N, H, W] (grayscale without a channel
# axis, as Flatten(input_shape=(28, 28)) models have); [N, H*W*C] flattened in row-major order.
IMAGE, GRAY, FLAT = "image", "gray", "flat"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        dims = "?" if self.shape is None else "[" + ", ".join("None" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.dtype} {dims}"

    @property
    def layout(self) -> str | None:
        """IMAGE, GRAY or FLAT for numeric image inputs, "encoded" for bytes, else None."""
        if self.shape is None:
            return None
        if self.dtype == "string":
            return "encoded" if len(self.shape) == 1 else None
        if len(self.shape) == 4:
            return IMAGE if self.shape[3] in (1, 3) else None
        return {3: GRAY, 2: FLAT}.get(len(self.shape))

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
    layout: str = IMAGE  # what the decoded [N, H, W, C] batch is reshaped to (see `fed`)

    def describe(self) -> str:
        """As the `input` metadata says it: "float32 224x224x3" or "encoded bytes"."""
        if self.encoded:
            return "encoded bytes"
        shape = f"{self.dtype.name} {self.image_size[0]}x{self.image_size[1]}x{self.channels}"
        return shape + {IMAGE: "", GRAY: " (fed as [N, H, W])", FLAT: " (fed flattened, as [N, H*W*C])"}[self.layout]

    def fed(self, batch):
        """The decoded [N, H, W, C] batch in the shape the signature takes."""
        if self.layout == GRAY:
            return batch[..., 0]
        if self.layout == FLAT:
            return tf.reshape(batch, [tf.shape(batch)[0], -1])
        return batch


def _infos(specs: dict) -> list[TensorInfo]:
    return [TensorInfo(name, spec.dtype.name,
                       None if spec.shape.rank is None else tuple(spec.shape.as_list()))
            for name, spec in sorted(specs.items())]


def signature_inputs(function) -> list[TensorInfo]:
    return _infos(function.structured_input_signature[1])


def signature_outputs(function) -> list[TensorInfo]:
    return _infos(function.structured_outputs)


def get_signature(loaded, path: str, name: str):
    available = sorted(loaded.signatures.keys())
    if not available:
        raise ConfigError(f"SavedModel {path} has no signatures; save it with Keras model.export(DIR) "
                          "or tf.saved_model.save(model, DIR, signatures=...).")
    if name not in loaded.signatures:
        raise ConfigError(f"Signature {name!r} not found in {path}; available: {', '.join(available)}. "
                          "Choose one with --signature.")
    return loaded.signatures[name]


def choose_input(inputs: list[TensorInfo], key: str | None, where: str) -> TensorInfo:
    """`where` names what is called, as in a sentence: "signature 'serving_default'"."""
    names = ", ".join(info.describe() for info in inputs)
    if key is not None and key not in {info.name for info in inputs}:
        raise ConfigError(f"Input key {key!r} is not an input of {where}; inputs are {names}.")
    if len(inputs) != 1:
        raise ConfigError(f"{where[0].upper()}{where[1:]} takes {len(inputs)} inputs ({names}) but "
                          "batch-infer feeds exactly one image tensor; export a model with one image "
                          "input.")
    chosen = inputs[0]
    if chosen.layout is None:
        raise ConfigError(f"Signature input {chosen.describe()} is not an image batch; batch-infer feeds "
                          "[batch, height, width, 1 or 3] or [batch, height, width] pixels, flattened "
                          "pixels [batch, H*W*C], or [batch] encoded image bytes (string).")
    return chosen


def _flat_channels(chosen: TensorInfo, image_size: tuple[int, int] | None) -> int:
    """The channels of a flattened [N, D] input: D = H*W (gray) or H*W*3 (RGB)."""
    width = chosen.shape[1]
    if image_size is None or width is None or width not in (image_size[0] * image_size[1],
                                                            image_size[0] * image_size[1] * 3):
        example = round((width or 784) ** 0.5)
        raise ConfigError(f"Signature input {chosen.describe()} takes flat vectors; if they are "
                          "flattened images, pass --image-size HxW with H*W (grayscale) or H*W*3 "
                          f"(RGB) equal to {width or 'its length'}, e.g. {example}x{example}.")
    return 1 if width == image_size[0] * image_size[1] else 3


def input_spec(chosen: TensorInfo, image_size: tuple[int, int] | None, preprocess: str) -> InputSpec:
    """Resolves size, channels and dtype; the signature wins, flags fill what it leaves open."""
    if chosen.dtype == "string":
        return InputSpec(True, None, None, tf.string, preprocess)
    if chosen.layout == FLAT:
        channels = _flat_channels(chosen, image_size)
        return _checked_spec(chosen, InputSpec(False, image_size, channels, tf.as_dtype(chosen.dtype),
                                               preprocess, FLAT))
    height, width = chosen.shape[1:3]
    channels = chosen.shape[3] if chosen.layout == IMAGE else 1
    if height is not None and width is not None:
        if image_size is not None and image_size != (height, width):
            raise ConfigError(f"--image-size {image_size[0]}x{image_size[1]} contradicts the signature "
                              f"input {chosen.describe()}; drop --image-size.")
        image_size = (height, width)
    elif image_size is None:
        raise ConfigError(f"Signature input {chosen.describe()} does not fix the image size; pass "
                          "--image-size HxW with the size the model was trained on, e.g. 224x224.")
    return _checked_spec(chosen, InputSpec(False, image_size, channels, tf.as_dtype(chosen.dtype),
                                           preprocess, chosen.layout))


def _checked_spec(chosen: TensorInfo, spec: InputSpec) -> InputSpec:
    if spec.dtype == tf.uint8 and spec.preprocess != "raw":
        raise ConfigError(f"Signature input {chosen.describe()} takes uint8 pixels, so --preprocess must "
                          f"be raw (the model scales them itself); got {spec.preprocess}.")
    if spec.channels == 1 and spec.preprocess in ("caffe", "torch"):
        raise ConfigError(f"--preprocess {spec.preprocess} uses RGB channel means but the model takes one "
                          "channel; use raw, unit or symmetric.")
    return spec


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
    """A loaded model and how to feed it; `predict` returns every output, raw, by name.

    `function` is a SavedModel signature, or for a Keras file one traced function over the
    model's own call; both take the input by its key. `probe` holds the outputs for
    `probe_batch(spec)`, computed once at load, so that heads can settle their choices (which
    output, which activation) before any file is read.
    """

    path: str
    signature: str | None  # None for a Keras file, which has one call and no signatures
    function: object
    input_key: str
    spec: InputSpec
    outputs: list[TensorInfo]
    probe: dict[str, np.ndarray]
    _loaded: object = None  # keeps the SavedModel's variables (or the Keras model) alive
    format: str = "saved_model"
    embedding_output: str | None = None  # the output --embedding-layer added, for the Embedding head
    embedding_source: str | None = None  # where that output comes from, in words
    pooling: dict[str, str] = field(default_factory=dict)  # output -> how it was pooled to [batch, D]
    scaling: scaling.Scaling = scaling.Scaling("raw", "")  # the pixel scaling and where it came from
    found_at: str | None = None  # how the loaded path was found (a TF Serving version), in words
    warnings: list[str] = field(default_factory=list)  # sentences for the run's log, counted
    library_lines: list[str] = field(default_factory=list)  # what the libraries said while loading
    onnx: object = None  # ONNX Runtime's call (`onnx_runtime`), once it passed the gate; else TensorFlow

    @property
    def where(self) -> str:
        """What is called, as in a sentence: "signature 'serving_default'" or "Keras model x.keras"."""
        if self.signature is None:
            return f"Keras model {os.path.basename(self.path)}"
        return f"signature {self.signature!r}"

    def predict(self, batch) -> dict[str, np.ndarray]:
        """Every output for a decoded [N, H, W, C] batch (or [N] encoded files)."""
        fed = self.spec.fed(batch)
        if self.onnx is not None:
            return self.onnx(fed)
        return {name: value.numpy() for name, value in self.function(**{self.input_key: fed}).items()}

    def metadata(self) -> dict[str, str]:
        where = {"signature": self.signature} if self.signature is not None else {}
        found = {"model_found_at": self.found_at} if self.found_at else {}
        return {"model": self.path, "model_format": self.format, **where, **found,
                "input_key": self.input_key, "input": self.spec.describe(),
                "preprocess": self.spec.preprocess, "preprocess_source": self.scaling.source}


def load_model(path: str, signature: str = "serving_default", input_key: str | None = None,
               image_size: tuple[int, int] | None = None, preprocess: str = scaling.AUTO,
               embedding_layer: str | None = None) -> Model:
    """Loads whatever model `path` holds (see `model_files`) and settles how to feed it, before
    any file is read; ConfigError otherwise. `preprocess` "auto" takes the scaling the model
    says (see `scaling`)."""
    from .keras_model import keras_model_for

    model_file = locate(path)
    library_lines: list[str] = []
    loaded, keras_model = read_model(model_file, library_lines)
    if keras_model is not None:
        model = keras_model_for(keras_model, model_file, input_key, image_size, preprocess, embedding_layer)
    else:
        model = model_for(loaded, model_file, signature, input_key, image_size, preprocess)
    model.library_lines = library_lines
    return model


def model_for(loaded, model_file: ModelFile, signature: str, input_key: str | None,
              image_size: tuple[int, int] | None, preprocess: str) -> Model:
    function = get_signature(loaded, model_file.path, signature)
    chosen = choose_input(signature_inputs(function), input_key, f"signature {signature!r}")
    layers = keras_metadata_layers(model_file.path) or scaling.graph_scopes(function)
    chosen_scaling, contradiction = scaling_for(chosen, preprocess, scaling.from_layers(layers, ordered=False))
    spec = input_spec(chosen, image_size, chosen_scaling.preprocess)
    model = Model(model_file.path, signature, function, chosen.name, spec, signature_outputs(function), {},
                  loaded, scaling=chosen_scaling, found_at=model_file.note,
                  warnings=[contradiction] if contradiction else [])
    return probed(model)


def scaling_for(chosen: TensorInfo, preprocess: str,
                found: scaling.Scaling | None) -> tuple[scaling.Scaling, str | None]:
    """The pixel scaling for the chosen input: uint8 and encoded inputs scale themselves."""
    if chosen.dtype in ("string", "uint8") and preprocess == scaling.AUTO:
        what = "decodes the bytes" if chosen.dtype == "string" else "takes uint8 pixels 0..255"
        return scaling.Scaling("raw", f"the model: it {what} itself"), None
    return scaling.decide(preprocess, found)


def probed(model: Model) -> Model:
    try:
        model.probe = model.predict(probe_batch(model.spec))
    except Exception as error:
        raise ConfigError(f"{model.where[0].upper()}{model.where[1:]} failed on a test batch of "
                          f"{model.spec.image_size or 'encoded'} images ({short_error(error)[:300]}); "
                          "check --image-size and --preprocess against what the model was trained "
                          "on.") from None
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
