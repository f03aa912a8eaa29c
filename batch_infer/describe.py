"""`batch-infer inspect`: every signature of a SavedModel (or a Keras file's input, outputs and
the layers that can serve as embeddings), and what `run` would choose with the given options, or
the sentence it would stop with."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from . import scaling
from .config import DEFAULT_EXTENSIONS, ConfigError
from .decode.options import DecodeOptions, Resize
from .heads import Classification
from .labels import find_labels_file, read_labels
from .keras_model import (PENULTIMATE, _keras_info, embedding_layers, final_dense, keras_inputs,
                          keras_model_for, keras_outputs)
from .model import TensorInfo, model_for, signature_inputs, signature_outputs
from .model_files import locate
from .model_loading import read_model
from .listing import list_images
from .scorer import check_resize_applies, scaling_collapses

# What a SavedModel without a features output needs: it keeps no layers to cut at, so the
# features must be exported as an output of their own.
EXPORT_FEATURES = """\
a SavedModel keeps no usable layers, so export one that returns the features too, e.g.:
    both = keras.Model(model.inputs, {"probs": model.output, "features": model.layers[-2].output})
    both.export("DIR")  # then: batch-infer run --model DIR --embedding-key features
or pass the Keras file itself with --embedding-layer NAME."""


SHOWN_MAPS = 5  # a backbone has a hundred feature-map layers; the text shows the last few


def describe(path: str, signature: str = "serving_default", input_key: str | None = None,
             output_key: str | None = None, image_size: tuple[int, int] | None = None,
             preprocess: str = "auto", resize: Resize = Resize(), preset: str | None = None,
             labels: str | None = None, sample: str | None = None) -> dict:
    """What `inspect` shows, as one JSON-ready dict; with `sample`, a folder of images, the
    label-free scaling check that `run` makes on its first files, under every candidate."""
    model_file = locate(path)
    loaded, keras_model = read_model(model_file, [])  # inspect prints no library lines
    if keras_model is not None:
        return _describe_keras(keras_model, model_file, input_key, output_key, image_size, preprocess,
                               resize, preset, labels, sample)
    signatures = {
        name: {"inputs": [vars(info) for info in signature_inputs(function)],
               "outputs": [vars(info) for info in signature_outputs(function)]}
        for name, function in sorted(loaded.signatures.items())
    }
    result = {"model": model_file.path, "found_at": model_file.note, "format": "saved_model",
              "signatures": signatures, "labels": _labels(model_file.path, labels)}
    try:
        model = model_for(loaded, model_file, signature, input_key, image_size, preprocess)
    except ConfigError as error:
        return {**result, "run": None, "problem": str(error), "embedding_outputs": []}
    return _with_run(result, model, output_key, resize, preset, labels, sample)


def _describe_keras(keras_model, model_file, input_key: str | None, output_key: str | None,
                    image_size: tuple[int, int] | None, preprocess: str, resize: Resize,
                    preset: str | None, labels: str | None, sample: str | None) -> dict:
    path = model_file.path
    try:
        dense = final_dense(keras_model).name
    except ConfigError:
        dense = None
    result = {"model": path, "found_at": model_file.note, "format": "keras",
              "inputs": [vars(info) for info in keras_inputs(keras_model)],
              "outputs": [vars(TensorInfo(name, info.dtype, info.shape))
                          for name, info in ((name, _keras_info(name, tensor))
                                             for name, tensor in keras_outputs(keras_model).items())],
              "embedding_layers": [vars(info) for info in embedding_layers(keras_model)],
              "penultimate": dense, "labels": _labels(path, labels)}
    try:
        model = keras_model_for(keras_model, model_file, input_key, image_size, preprocess)
    except ConfigError as error:
        return {**result, "run": None, "problem": str(error), "embedding_outputs": []}
    return _with_run(result, model, output_key, resize, preset, labels, sample)


def _labels(path: str, given: str | None) -> dict | None:
    labels_file = find_labels_file(path, given)
    return {"file": labels_file, "count": len(read_labels(labels_file))} if labels_file else None


def _with_run(result: dict, model, output_key: str | None, resize: Resize, preset: str | None,
              labels: str | None, sample: str | None) -> dict:
    """What run would choose: the feeding, the class scores, and the outputs that could be
    written as embeddings (the [batch, D] float outputs other than the class scores)."""
    spec = model.spec
    try:
        head = Classification.for_model(model, output_key, labels=labels)
        check_resize_applies(model, DecodeOptions(1, 1, True, True, resize, preset=preset))
    except ConfigError as error:
        head, problem = None, str(error)
    result["embedding_outputs"] = [vars(info) for info in model.outputs
                                   if info.is_vector and (head is None or info.name != head.output_key)]
    result["run"] = {
        "signature": model.signature, "input_key": model.input_key,
        "input": "encoded image bytes" if spec.encoded else "pixels",
        "image_size": None if spec.encoded else f"{spec.image_size[0]}x{spec.image_size[1]}",
        "channels": spec.channels, "input_dtype": spec.dtype.name, "preprocess": spec.preprocess,
        "preprocess_source": model.scaling.source, "warnings": model.warnings,
        "resize": None if spec.encoded else {
            "mode": resize.mode, "crop_fraction": resize.crop_fraction,
            "interpolation": resize.interpolation, "antialias": resize.antialias,
            "description": resize.describe()},
        "preset": preset,
    }
    if head is None:
        return {**result, "problem": problem}
    if sample is not None:
        result["scaling_check"] = _scaling_check(model, head, resize, sample)
    result["run"].update({"output_key": head.output_key, "num_classes": head.num_classes,
                          "activation": head.activation, "activation_reason": head.activation_reason})
    return result


def _scaling_check(model, head, resize: Resize, sample: str) -> dict:
    items = [item for item in list_images(sample, DEFAULT_EXTENSIONS) if item.problem is None]
    with ThreadPoolExecutor(2) as pool:
        collapses, images = scaling_collapses(model, head, DecodeOptions(10**8, 512, True, True, resize),
                                              items, pool, every=True)
    warning = scaling.check(model.spec.preprocess, collapses, images) if collapses else None
    return {"directory": sample, "images": images,
            "pinned": {name: collapse.pinned for name, collapse in collapses.items()}, "warning": warning}


def format_description(info: dict) -> str:
    if info["format"] == "keras":
        lines = [f"Keras model {info['model']}", ""]
        lines += [f"input  {TensorInfo(**tensor).describe()}" for tensor in info["inputs"]]
        lines += [f"output {TensorInfo(**tensor).describe()}" for tensor in info["outputs"]]
        lines += ["", "layers that can serve as embeddings (--embedding-layer NAME):"]
        layers = [TensorInfo(**tensor) for tensor in info["embedding_layers"]]
        maps = [layer for layer in layers if len(layer.shape) > 2]
        shown = [layer for layer in layers if len(layer.shape) == 2 or layer in maps[-SHOWN_MAPS:]]
        if len(maps) > SHOWN_MAPS:
            lines.append(f"  ... {len(maps) - SHOWN_MAPS} earlier feature maps (--json lists every layer)")
        for layer in shown:
            pooled = f" (averaged to [batch, {layer.shape[-1]}])" if len(layer.shape) > 2 else ""
            lines.append(f"  {layer.describe()}{pooled}")
        if info["penultimate"]:
            lines.append(f"  {PENULTIMATE}: the input of the final Dense layer {info['penultimate']!r}")
    else:
        lines = [f"SavedModel {info['model']}", ""]
        for name, signature in info["signatures"].items():
            lines.append(f"signature {name!r}")
            for kind in ("inputs", "outputs"):
                lines += [f"  {kind[:-1]:<6} {TensorInfo(**tensor).describe()}" for tensor in signature[kind]]
    if info.get("found_at"):
        lines.insert(1, f"loaded: {info['found_at']}")
    lines.append("")
    chosen = info["run"]
    if chosen is not None:
        lines.append("run would use:")
        size = chosen["image_size"] or "(the model decodes the bytes itself)"
        rows = ([("signature", chosen["signature"])] if chosen["signature"] else []) + [
            ("input key", chosen["input_key"]),
            ("input", f"{chosen['input']}, {chosen['input_dtype']}"), ("image size", size),
            ("channels", chosen["channels"] or "-"),
        ]
        if chosen["resize"] is not None:
            rows.append(("resize", chosen["resize"]["description"]))
        rows.append(("preprocess", f"{chosen['preprocess']} ({chosen['preprocess_source']})"))
        if "output_key" in chosen:
            rows += [("output key", f"{chosen['output_key']} ({chosen['num_classes']} classes)"),
                     ("activation", f"{chosen['activation']} ({chosen['activation_reason']})")]
        if chosen["preset"]:
            rows.append(("preset", chosen["preset"]))
        lines += [f"  {key:<11} {value}" for key, value in rows]
    if "problem" in info:
        lines.append(f"run would stop: {info['problem']}")
    lines += [f"warning: {sentence}" for sentence in (chosen or {}).get("warnings", [])]
    checked = info.get("scaling_check")
    if checked is not None:
        pinned = ", ".join(f"{name} {share:.0%}" for name, share in checked["pinned"].items())
        lines.append(f"scaling check on {checked['images']} images of {checked['directory']}: top-1 "
                     f"scores pinned at 1 under {pinned or '(too few images decoded)'}")
        if checked["warning"]:
            lines.append(f"warning: {checked['warning']}")
    if chosen is not None:
        candidates = [TensorInfo(**tensor) for tensor in info["embedding_outputs"]]
        if candidates:
            lines += ["embedding outputs (--embedding-key KEY, or --task embed):"]
            lines += [f"  {tensor.describe()}" for tensor in candidates]
        elif info["format"] == "saved_model":
            lines.append("embeddings: no other output is a [batch, D] vector; " + EXPORT_FEATURES)
    labels = info["labels"]
    lines.append("labels: " + (f"{labels['file']} ({labels['count']} labels)" if labels
                               else "none found next to the model; rows show class indices (use --labels FILE)"))
    return "\n".join(lines)
