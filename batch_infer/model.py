"""The only module that touches tf.saved_model and Keras: loading a model once, reading its
signatures (or a Keras model's input and outputs), and calling it.

Most SavedModel mistakes are about what the signature expects, so everything about feeding it
(input, size, channels, dtype) is decided here once, explained by `inspect`, and recorded in the
output metadata. What its outputs mean is the business of `heads`: a `Model` only returns them,
raw and by name. It runs over 400 lines because SavedModels and Keras files load side by side
here, so that nothing else touches either API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .config import KERAS_SUFFIXES, ConfigError
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


def is_keras_file(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(KERAS_SUFFIXES)


def check_model_path(path: str) -> None:
    """Cheap checks without TensorFlow, with the fix for the usual wrong things to pass."""
    if not os.path.exists(path):
        raise ConfigError(f"Model {path} does not exist; pass a SavedModel directory or a Keras "
                          ".keras or .h5 file with --model.")
    if os.path.isfile(path):
        if is_keras_file(path):
            return
        raise ConfigError(f"Model {path} is a file but not a Keras .keras or .h5 file; --model must "
                          "be one of those or a SavedModel directory (one holding saved_model.pb).")
    names = os.listdir(path)
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        return
    if "checkpoint" in names or any(name.endswith(".index") for name in names):
        raise ConfigError(f"Model {path} holds a TensorFlow checkpoint, not a SavedModel; save one "
                          "with tf.saved_model.save(model, DIR) or Keras model.export(DIR).")
    raise ConfigError(f"Model {path} has no saved_model.pb, so it is not a SavedModel; export one "
                      "with Keras model.export(DIR) or tf.saved_model.save(model, DIR).")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300].rstrip(".")


def load_saved_model(path: str):
    check_model_path(path)
    try:
        return tf.saved_model.load(path)
    except Exception as error:  # TF raises many unrelated types for a damaged model
        raise ConfigError(f"Could not load the SavedModel at {path} ({_first_line(error)}); re-export it "
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

    @property
    def where(self) -> str:
        """What is called, as in a sentence: "signature 'serving_default'" or "Keras model x.keras"."""
        if self.signature is None:
            return f"Keras model {os.path.basename(self.path)}"
        return f"signature {self.signature!r}"

    def predict(self, batch) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in self.function(**{self.input_key: batch}).items()}

    def metadata(self) -> dict[str, str]:
        where = {"signature": self.signature} if self.signature is not None else {}
        return {"model": self.path, "model_format": self.format, **where, "input_key": self.input_key,
                "input": self.spec.describe(), "preprocess": self.spec.preprocess}


def load_model(path: str, signature: str = "serving_default", input_key: str | None = None,
               image_size: tuple[int, int] | None = None, preprocess: str = "raw") -> Model:
    """Loads a SavedModel and settles how to feed it, before any file is read; ConfigError otherwise."""
    return model_for(load_saved_model(path), path, signature, input_key, image_size, preprocess)


def model_for(loaded, path: str, signature: str, input_key: str | None,
              image_size: tuple[int, int] | None, preprocess: str) -> Model:
    function = get_signature(loaded, path, signature)
    chosen = choose_input(signature_inputs(function), input_key, f"signature {signature!r}")
    spec = input_spec(chosen, image_size, preprocess)
    model = Model(path, signature, function, chosen.name, spec, signature_outputs(function), {}, loaded)
    return _probed(model)


def _probed(model: Model) -> Model:
    try:
        model.probe = model.predict(probe_batch(model.spec))
    except Exception as error:
        raise ConfigError(f"{model.where[0].upper()}{model.where[1:]} failed on a test batch of "
                          f"{model.spec.image_size or 'encoded'} images ({short_error(error)[:300]}); "
                          "check --image-size and --preprocess against what the model was trained "
                          "on.") from None
    return model


# --- Keras files ---------------------------------------------------------------------------------

PENULTIMATE = "penultimate"


def read_keras_file(path: str):
    """The Keras model in a .keras or .h5 file, loaded by Keras itself; ConfigError otherwise.

    compile=False: inference needs no optimizer or loss, and custom losses would not load.
    Keras's safe mode stays on, so a file with Lambda layers (arbitrary code) is refused.
    """
    check_model_path(path)
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises ValueError, OSError, TypeError... for bad files
        raise ConfigError(f"Could not load the Keras file {path} ({_first_line(error)}); save it again "
                          "with model.save('model.keras') in the Keras version that trained it, or "
                          "export a SavedModel with model.export(DIR) and pass DIR.") from None
    if not getattr(model, "inputs", None):
        raise ConfigError(f"Keras model {path} has no defined inputs (a subclassed model, or one never "
                          "built); build it on keras.Input(...) and save it again, or export a "
                          "SavedModel with model.export(DIR).")
    return model


def _keras_info(name: str, tensor) -> TensorInfo:
    dtype = tensor.dtype if isinstance(tensor.dtype, str) else tf.as_dtype(tensor.dtype).name
    return TensorInfo(name, dtype, tuple(tensor.shape))


def keras_outputs(model) -> dict[str, object]:
    """{name: symbolic output}: a dict model's own keys, else each output layer's name."""
    try:
        structure = model.output
    except AttributeError:  # a loaded Sequential has `outputs` only
        structure = None
    if isinstance(structure, dict):
        return dict(structure)
    names = getattr(model, "output_names", None) or [model.layers[-1].name]
    return dict(zip(names, model.outputs))


def keras_inputs(model) -> list[TensorInfo]:
    return [_keras_info(tensor.name, tensor) for tensor in model.inputs]


def final_dense(model):
    """The last Dense layer: the classification layer whose input `penultimate` means."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ConfigError(f"Keras model has no Dense layer, so --embedding-layer {PENULTIMATE} has "
                          "nothing to stand before; name a layer with --embedding-layer NAME "
                          "(batch-infer inspect MODEL lists them).")
    return dense[-1]


def _producer(model, tensor) -> str | None:
    """The name of the layer of `model` whose output is `tensor`, if one is."""
    import keras

    if isinstance(model, keras.Sequential):  # its layers follow one another
        index = next((i for i, layer in enumerate(model.layers) if layer.input is tensor), 0)
        return model.layers[index - 1].name if index > 0 else None
    for layer in model.layers:
        try:
            if layer.output is tensor:
                return layer.name
        except (AttributeError, ValueError):  # a shared layer has several outputs
            continue
    return None


def embedding_layer_output(model, name: str) -> tuple[str, object, str]:
    """(output name, symbolic tensor, source in words) for --embedding-layer NAME|penultimate."""
    if name == PENULTIMATE:
        dense = final_dense(model)
        producer = _producer(model, dense.input)
        return (producer or PENULTIMATE, dense.input,
                f"input of the final Dense layer {dense.name!r}"
                + (f" (output of layer {producer!r})" if producer else ""))
    try:
        layer = model.get_layer(name)
    except ValueError:
        usable = ", ".join(info.name for info in embedding_layers(model)) or "none"
        raise ConfigError(f"Layer {name!r} is not in the Keras model; layers that can serve as "
                          f"embeddings: {usable}.") from None
    return layer.name, layer.output, f"layer {layer.name!r}"


def embedding_layers(model) -> list[TensorInfo]:
    """Layers whose output can be an embedding: [batch, D] vectors, or feature maps and token
    sequences, pooled to [batch, D]. Layers inside a nested model are not reachable by name."""
    found = []
    image_shapes = {tuple(tensor.shape) for tensor in model.inputs}
    for layer in model.layers[:-1]:
        try:
            tensor = layer.output
        except (AttributeError, ValueError):
            continue
        if not hasattr(tensor, "shape") or len(tensor.shape) not in (2, 3, 4):
            continue
        if type(layer).__name__ == "InputLayer" or tuple(tensor.shape) in image_shapes:
            continue  # the image itself, or a preprocessing layer's rescaled copy of it
        found.append(_keras_info(layer.name, tensor))
    return found


def _pooling(info: TensorInfo) -> str | None:
    """How an output becomes [batch, D]: None when it already is."""
    rank = len(info.shape)
    if rank == 2:
        return None
    if rank == 4:
        height, width = info.shape[1:3]
        return f"global average over {height or '?'}x{width or '?'} positions"
    if rank == 3:
        return f"average over {info.shape[1] or '?'} positions"
    raise ConfigError(f"Layer output {info.describe()} is neither [batch, D] nor a feature map; "
                      "choose another --embedding-layer.")


def load_keras_model(path: str, input_key: str | None = None,
                     image_size: tuple[int, int] | None = None, preprocess: str = "raw",
                     embedding_layer: str | None = None) -> Model:
    """Loads a Keras file and settles how to feed it, as `load_model` does for a SavedModel.

    The model (or, with `embedding_layer`, a model that also ends at that layer, so classes and
    embedding come from one pass) is called through one tf.function whose input signature is the
    model's own with the batch dimension open, so the last, partial batch is not traced again.
    """
    import keras

    loaded = read_keras_file(path)
    where = f"Keras model {os.path.basename(path)}"
    chosen = choose_input(keras_inputs(loaded), input_key, where)
    spec = input_spec(chosen, image_size, preprocess)
    outputs = keras_outputs(loaded)
    embedding_output = embedding_source = None
    pooling: dict[str, str] = {}
    if embedding_layer is not None:
        embedding_output, tensor, embedding_source = embedding_layer_output(loaded, embedding_layer)
        how = _pooling(_keras_info(embedding_output, tensor))
        if how is not None:
            pooling[embedding_output] = how
        outputs.setdefault(embedding_output, tensor)
    if pooling or embedding_output is not None:
        called = keras.Model(loaded.inputs, outputs)
    else:
        called = loaded
    names = list(outputs)

    def call(batch):
        result = called(batch, training=False)
        if not isinstance(result, dict):
            result = dict(zip(names, result if isinstance(result, (list, tuple)) else [result]))
        for name in pooling:
            value = result[name]
            result[name] = tf.reduce_mean(value, axis=list(range(1, len(value.shape) - 1)))
        return result

    shape = [None, *chosen.shape[1:3], chosen.shape[3]]
    if spec.image_size is not None:
        shape[1:3] = spec.image_size
    traced = tf.function(call, input_signature=[tf.TensorSpec(shape, spec.dtype)])
    key = chosen.name

    def function(**inputs):
        return traced(inputs[key])

    function.traced = traced  # for tests: one trace serves every batch size

    infos = []
    for name, tensor in outputs.items():
        info = _keras_info(name, tensor)
        if name in pooling:
            info = TensorInfo(name, info.dtype, (info.shape[0], info.shape[-1]))
        infos.append(info)
    model = Model(path, None, function, key, spec, sorted(infos, key=lambda info: info.name), {},
                  called, format="keras", embedding_output=embedding_output,
                  embedding_source=embedding_source, pooling=pooling)
    return _probed(model)


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
