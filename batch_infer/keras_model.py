"""A Keras model (from a .keras or HDF5 file, or a Keras 2 SavedModel that only tf_keras reads)
as a `Model`: its input and outputs, the layers that can serve as embeddings, and one traced
call. The same code serves Keras 3 and tf_keras models: the layer classes come from the
package the model was built with.
"""

from __future__ import annotations

import importlib
import os

from . import scaling
from .config import ConfigError
from .model import Model, TensorInfo, choose_input, input_spec, probed, scaling_for
from .model_files import ModelFile
from .tf_import import tf

PENULTIMATE = "penultimate"


def keras_package(model):
    """`keras` or `tf_keras`: whichever built `model`, for its Dense and Model classes."""
    return importlib.import_module(type(model).__module__.split(".")[0])


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


def dense_path(model) -> list:
    """The layers leading to the last Dense layer, through nested models: [Dense] when it is
    the model's own, [nested model, ..., Dense] when it sits in a nested model (a Sequential
    head, as Teachable Machine exports have). Empty when there is none."""
    dense = keras_package(model).layers.Dense
    for layer in reversed(model.layers):
        if isinstance(layer, dense):
            return [layer]
        if hasattr(layer, "layers"):
            inner = dense_path(layer)
            if inner:
                return [layer, *inner]
    return []


def final_dense(model):
    """The last Dense layer: the classification layer whose input `penultimate` means."""
    return final_dense_path(model)[-1]


def final_dense_path(model) -> list:
    """`dense_path`, refused in one sentence when the model has no Dense layer."""
    path = dense_path(model)
    if not path:
        raise ConfigError(f"Keras model has no Dense layer, so --embedding-layer {PENULTIMATE} has "
                          "nothing to stand before; name a layer with --embedding-layer NAME "
                          "(batch-infer inspect MODEL lists them).")
    return path


def _producer(model, tensor) -> str | None:
    """The name of the layer of `model` whose output is `tensor`, if one is."""
    if isinstance(model, keras_package(model).Sequential):  # its layers follow one another
        index = next((i for i, layer in enumerate(model.layers) if layer.input is tensor), 0)
        return model.layers[index - 1].name if index > 0 else None
    for layer in model.layers:
        try:
            if layer.output is tensor:
                return layer.name
        except (AttributeError, ValueError):  # a shared layer has several outputs
            continue
    return None


def _chain_call(model, path: list, batch):
    """(the model's output, the input of the last layer of `path`) in one pass over `batch`,
    for a Dense layer inside nested Sequential models, whose tensors the outer graph cannot
    name: each Sequential is called layer by layer, recording the Dense layer's input."""
    recorded = None
    value = batch
    for layer in model.layers:
        if path and layer is path[0]:
            if len(path) == 1:
                recorded = value
                value = layer(value, training=False)
            else:
                value, recorded = _chain_call(layer, path[1:], value)
        else:
            value = layer(value, training=False)
    return value, recorded


def _is_chain(model, path: list) -> bool:
    package = keras_package(model)
    return all(isinstance(layer, package.Sequential) for layer in [model, *path[:-1]])


def embedding_layer_output(model, name: str) -> tuple[str, object, str]:
    """(output name, symbolic tensor or None, source in words) for --embedding-layer NAME or
    penultimate; None when the Dense layer sits in a nested Sequential (see `_chain_call`)."""
    if name == PENULTIMATE:
        path = final_dense_path(model)
        dense = path[-1]
        if len(path) > 1:
            if not _is_chain(model, path):
                raise ConfigError(f"The final Dense layer {dense.name!r} sits in the nested model "
                                  f"{path[0].name!r}, whose inner tensors the outer model cannot "
                                  "reach; name an outer layer with --embedding-layer NAME "
                                  "(batch-infer inspect MODEL lists them).")
            return PENULTIMATE, None, f"input of the final Dense layer {dense.name!r} (in {path[0].name!r})"
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
    """Layers whose output can be an embedding: [batch, D] vectors with D > 1, or feature maps
    and token sequences, pooled to [batch, D]. Layers inside a nested model are not reachable
    by name."""
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
        if len(tensor.shape) == 2 and (tensor.shape[-1] or 0) <= 1:
            continue  # one number per image is a score, not an embedding
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


def keras_model_for(loaded, model_file: ModelFile, input_key: str | None = None,
                    image_size: tuple[int, int] | None = None, preprocess: str = scaling.AUTO,
                    embedding_layer: str | None = None) -> Model:
    """A loaded Keras model as a `Model`, settled as `model.model_for` does for a SavedModel.

    The model (or, with `embedding_layer`, a model that also ends at that layer, so classes and
    embedding come from one pass) is called through one tf.function whose input signature is the
    model's own with the batch dimension open, so the last, partial batch is not traced again.
    """
    package = keras_package(loaded)
    path = model_file.path
    where = f"Keras model {os.path.basename(path)}"
    chosen = choose_input(keras_inputs(loaded), input_key, where)
    chosen_scaling, contradiction = scaling_for(chosen, preprocess,
                                                scaling.from_layers(scaling.keras_layers(loaded)))
    spec = input_spec(chosen, image_size, chosen_scaling.preprocess)
    outputs = keras_outputs(loaded)
    embedding_output = embedding_source = None
    pooling: dict[str, str] = {}
    chained: list = []
    if embedding_layer is not None:
        embedding_output, tensor, embedding_source = embedding_layer_output(loaded, embedding_layer)
        if tensor is None:
            chained = dense_path(loaded)
        else:
            how = _pooling(_keras_info(embedding_output, tensor))
            if how is not None:
                pooling[embedding_output] = how
            outputs.setdefault(embedding_output, tensor)
    if (pooling or embedding_output is not None) and not chained:
        called = package.Model(loaded.inputs, outputs)
    else:
        called = loaded
    names = list(outputs)

    def call(batch):
        if chained:
            result, recorded = _chain_call(loaded, chained, batch)
            return {names[0]: result, embedding_output: recorded}
        result = called(batch, training=False)
        if not isinstance(result, dict):
            result = dict(zip(names, result if isinstance(result, (list, tuple)) else [result]))
        for name in pooling:
            value = result[name]
            result[name] = tf.reduce_mean(value, axis=list(range(1, len(value.shape) - 1)))
        return result

    shape = [None, *chosen.shape[1:]]
    if spec.image_size is not None and chosen.layout != "flat":
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
    if chained:
        infos.append(TensorInfo(embedding_output, "float32", (None, int(chained[-1].kernel.shape[0]))))
    model = Model(path, None, function, key, spec, sorted(infos, key=lambda info: info.name), {},
                  called, format="keras" if package.__name__ == "keras" else "tf_keras",
                  embedding_output=embedding_output,
                  embedding_source=embedding_source, pooling=pooling, scaling=chosen_scaling,
                  found_at=model_file.note, warnings=[contradiction] if contradiction else [])
    return probed(model)
