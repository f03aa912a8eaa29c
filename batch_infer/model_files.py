"""What a --model path holds, told by its content rather than its name, without TensorFlow.

People pass what they have: an HDF5 file named `mask_detector.model` or `.hdf5`, a `.keras` zip,
a SavedModel directory, or a TF Serving model base (`DIR/1/`, `DIR/2/`, each a SavedModel). A
wrong path is refused here with the fix, before TensorFlow is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .config import ConfigError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
SAVED_MODEL, KERAS_ZIP, HDF5 = "saved_model", "keras", "h5"


@dataclass(frozen=True)
class ModelFile:
    """`path` is what TensorFlow or Keras loads: the version directory of a TF Serving base."""

    kind: str  # SAVED_MODEL, KERAS_ZIP or HDF5
    path: str
    note: str | None = None  # how `path` was found, for the log line

    @property
    def is_keras(self) -> bool:
        return self.kind in (KERAS_ZIP, HDF5)


def _signature(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(8)


def _is_saved_model(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES)


def serving_versions(path: str) -> list[int]:
    """The numeric subdirectories of a TF Serving model base that hold a SavedModel, ascending."""
    return sorted(int(name) for name in os.listdir(path)
                  if name.isdigit() and _is_saved_model(os.path.join(path, name)))


def is_keras_path(path: str) -> bool:
    """Whether `path` is a Keras file by its content (for checks made before loading)."""
    return os.path.isfile(path) and locate(path).is_keras


def locate(path: str) -> ModelFile:
    """The model at `path` and its kind; ConfigError with the fix for the usual wrong things."""
    if not os.path.exists(path):
        raise ConfigError(f"Model {path} does not exist; pass a SavedModel directory or a Keras "
                          ".keras or .h5 file with --model.")
    if os.path.isfile(path):
        head = _signature(path)
        if head.startswith(HDF5_SIGNATURE):
            return ModelFile(HDF5, path)
        if head.startswith(ZIP_SIGNATURE):
            return ModelFile(KERAS_ZIP, path)
        if os.path.basename(path) in SAVED_MODEL_FILES:
            raise ConfigError(f"Model {path} is the graph file of a SavedModel; pass its directory "
                              f"{os.path.dirname(path) or '.'} instead.")
        if path.lower().endswith(".pb"):
            raise ConfigError(f"Model {path} is a frozen TensorFlow graph (a GraphDef), which has no "
                              "signature saying what it takes; load it in TensorFlow and save a "
                              "SavedModel with tf.saved_model.save(module, DIR), then pass DIR.")
        raise ConfigError(f"Model {path} is neither an HDF5 (.h5) nor a zip (.keras) Keras file, "
                          "whatever its name; --model must be one of those or a SavedModel directory "
                          "(one holding saved_model.pb).")
    if _is_saved_model(path):
        return ModelFile(SAVED_MODEL, path)
    versions = serving_versions(path)
    if versions:
        chosen = os.path.join(path, str(versions[-1]))
        return ModelFile(SAVED_MODEL, chosen, f"version {versions[-1]} of the TF Serving model base "
                         f"{path} (the highest of {', '.join(map(str, versions))})")
    names = os.listdir(path)
    if "checkpoint" in names or any(name.endswith(".index") for name in names):
        raise ConfigError(f"Model {path} holds a TensorFlow checkpoint, not a SavedModel; save one "
                          "with tf.saved_model.save(model, DIR) or Keras model.export(DIR).")
    nested = sorted(name for name in names if _is_saved_model(os.path.join(path, name)))
    if nested:
        raise ConfigError(f"Model {path} has no saved_model.pb, but {os.path.join(path, nested[0])} "
                          "does; pass that directory with --model.")
    raise ConfigError(f"Model {path} has no saved_model.pb, so it is not a SavedModel; export one "
                      "with Keras model.export(DIR) or tf.saved_model.save(model, DIR).")
