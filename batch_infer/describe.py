"""`batch-infer inspect`: every signature of a model, and what `run` would choose with the given
options, or the sentence it would stop with."""

from __future__ import annotations

from .config import ConfigError
from .decoding import DecodeOptions, Resize
from .heads import Classification
from .labels import find_labels_file, read_labels
from .model import TensorInfo, load_saved_model, model_for, signature_inputs, signature_outputs
from .scorer import check_resize_applies


def describe(path: str, signature: str = "serving_default", input_key: str | None = None,
             output_key: str | None = None, image_size: tuple[int, int] | None = None,
             preprocess: str = "raw", resize: Resize = Resize(), preset: str | None = None) -> dict:
    loaded = load_saved_model(path)
    signatures = {
        name: {"inputs": [vars(info) for info in signature_inputs(function)],
               "outputs": [vars(info) for info in signature_outputs(function)]}
        for name, function in sorted(loaded.signatures.items())
    }
    labels_file = find_labels_file(path, None)
    result = {"model": path, "signatures": signatures,
              "labels": {"file": labels_file, "count": len(read_labels(labels_file))} if labels_file else None}
    try:
        model = model_for(loaded, path, signature, input_key, image_size, preprocess)
        head = Classification.for_model(model, output_key)
        check_resize_applies(model, DecodeOptions(1, 1, True, True, resize, preset=preset))
    except ConfigError as error:
        return {**result, "run": None, "problem": str(error)}
    spec = model.spec
    result["run"] = {
        "signature": model.signature, "input_key": model.input_key, "output_key": head.output_key,
        "input": "encoded image bytes" if spec.encoded else "pixels",
        "image_size": None if spec.encoded else f"{spec.image_size[0]}x{spec.image_size[1]}",
        "channels": spec.channels, "input_dtype": spec.dtype.name, "preprocess": spec.preprocess,
        "resize": None if spec.encoded else {
            "mode": resize.mode, "crop_fraction": resize.crop_fraction,
            "interpolation": resize.interpolation, "antialias": resize.antialias,
            "description": resize.describe()},
        "preset": preset,
        "num_classes": head.num_classes, "activation": head.activation,
        "activation_reason": head.activation_reason,
    }
    return result


def format_description(info: dict) -> str:
    lines = [f"SavedModel {info['model']}", ""]
    for name, signature in info["signatures"].items():
        lines.append(f"signature {name!r}")
        for kind in ("inputs", "outputs"):
            lines += [f"  {kind[:-1]:<6} {TensorInfo(**tensor).describe()}" for tensor in signature[kind]]
    lines.append("")
    chosen = info["run"]
    if chosen is None:
        lines.append(f"run would stop: {info['problem']}")
    else:
        lines.append("run would use:")
        size = chosen["image_size"] or "(the model decodes the bytes itself)"
        rows = [
            ("signature", chosen["signature"]), ("input key", chosen["input_key"]),
            ("input", f"{chosen['input']}, {chosen['input_dtype']}"), ("image size", size),
            ("channels", chosen["channels"] or "-"),
        ]
        if chosen["resize"] is not None:
            rows.append(("resize", chosen["resize"]["description"]))
        rows += [
            ("preprocess", chosen["preprocess"]),
            ("output key", f"{chosen['output_key']} ({chosen['num_classes']} classes)"),
            ("activation", f"{chosen['activation']} ({chosen['activation_reason']})"),
        ]
        if chosen["preset"]:
            rows.append(("preset", chosen["preset"]))
        lines += [f"  {key:<11} {value}" for key, value in rows]
    labels = info["labels"]
    lines.append("labels: " + (f"{labels['file']} ({labels['count']} labels)" if labels
                               else "none found next to the model; rows show class indices (use --labels FILE)"))
    return "\n".join(lines)
