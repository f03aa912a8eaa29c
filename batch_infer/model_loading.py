"""Reading a model file as people have it: a SavedModel, a Keras 3 file, or a Keras 2 file or
SavedModel that only `tf_keras` (the `legacy` extra) reads, with the libraries' warnings kept
off stderr and counted.

Keras 3 cannot read everything Keras 2 wrote: `.h5` files from Keras 2.2-2.4 fail with shape
errors, and SavedModels that Keras 2 wrote with `model.save(DIR)` (they hold
`keras_metadata.pb`) can fail in `tf.saved_model.load` on their optimizer state. `tf_keras` is
Keras 2 for current TensorFlow and reads both as they were written; its model is then called
exactly as a Keras 3 model is.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from typing import Iterator

from .config import ConfigError
from .model_files import HDF5, ModelFile
from .tf_import import tf

LEGACY_EXTRA = "pip install 'batch-infer[legacy]'"


def first_line(error: BaseException, limit: int = 300) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit].rstrip(".")


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.lines.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def library_warnings() -> Iterator[list[str]]:
    """Python warnings and TensorFlow/absl log records raised inside, as lines, instead of on
    stderr above the one sentence a load failure ends in (or the run's own log lines)."""
    lines: list[str] = []
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl", "keras", "tf_keras")]
    saved = [(logger.handlers[:], logger.propagate) for logger in loggers]
    collect = _Collect(lines)
    for logger in loggers:
        logger.handlers, logger.propagate = [collect], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield lines
        lines.extend(f"{warning.category.__name__}: {warning.message}" for warning in caught)
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate


def _attempt(load, warned: list[str]) -> tuple[object | None, str]:
    """(what `load()` returned, ""), or (None, the first line of its error); what the libraries
    said meanwhile is added to `warned`. Loaders raise ValueError, OSError, TypeError... for a
    file they cannot read, so any exception is a failed attempt."""
    with library_warnings() as lines:
        try:
            result, failure = load(), ""
        except Exception as error:
            result, failure = None, first_line(error, 160)
    warned.extend(lines)
    return result, failure


def have_tf_keras() -> bool:
    return importlib.util.find_spec("tf_keras") is not None


@contextlib.contextmanager
def _named(path: str, suffix: str) -> Iterator[str]:
    """`path` under a name ending in `suffix`: Keras picks the reader by the file name, and an
    HDF5 file called `mask_detector.model` is still an HDF5 file."""
    if path.lower().endswith(suffix):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="batch-infer-model-") as folder:
        linked = os.path.join(folder, "model" + suffix)
        os.symlink(os.path.abspath(path), linked)
        yield linked


def _hdf5_facts(path: str) -> tuple[str | None, str]:
    """(the keras_version that wrote an HDF5 file, its model config JSON text or "")."""
    import h5py

    with h5py.File(path, "r") as handle:
        version, config = handle.attrs.get("keras_version"), handle.attrs.get("model_config", "")
    decode = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
    return (None if version is None else str(decode(version))), str(decode(config) or "")


def read_keras(model_file: ModelFile, warned: list[str]):
    """The Keras model in a .keras or HDF5 file: by Keras 3, else by tf_keras; ConfigError
    otherwise. compile=False: inference needs no optimizer or loss, and custom losses would not
    load. Keras's safe mode stays on, and an HDF5 file with Lambda layers (Python code) is
    refused before tf_keras, which has no safe mode for HDF5, would run it."""
    import keras

    path = model_file.path
    suffix = ".h5" if model_file.kind == HDF5 else ".keras"
    version, config = _hdf5_facts(path) if model_file.kind == HDF5 else (None, "")
    if model_file.kind == HDF5 and not config:
        raise ConfigError(f"Keras file {path} holds only weights (model.save_weights), not a model; "
                          "build the model in code, call model.load_weights(...) and save it with "
                          "model.save('model.keras').")
    if version is not None and version.startswith("1."):
        raise ConfigError(f"Keras file {path} was saved by Keras {version}, which neither Keras 3 nor "
                          "tf_keras reads; load it in Keras 2.x and save it again with "
                          "model.save('model.h5') there.")
    with _named(path, suffix) as named:
        model, failure = _attempt(lambda: keras.saving.load_model(named, compile=False), warned)
    if model is None:
        model = _read_with_tf_keras(model_file, suffix, config, version, failure, warned)
    if not getattr(model, "inputs", None):
        raise ConfigError(f"Keras model {path} has no defined inputs (a subclassed model, or one never "
                          "built); build it on keras.Input(...) and save it again, or export a "
                          "SavedModel with model.export(DIR).")
    return model


def _read_with_tf_keras(model_file: ModelFile, suffix: str, config: str, version: str | None,
                        failure: str, warned: list[str]):
    path = model_file.path
    written = f" (written by Keras {version})" if version else ""
    if not have_tf_keras():
        raise ConfigError(f"Keras 3 could not load {path}{written} ({failure}); files from Keras 2 load "
                          f"with tf_keras: {LEGACY_EXTRA}, or save the model again as .keras.")
    if '"class_name": "Lambda"' in config:
        raise ConfigError(f"Keras file {path} holds Lambda layers, whose Python code would run on "
                          "load; rebuild the model without them, or export a SavedModel with "
                          "model.export(DIR) where you trust the code.")
    import tf_keras

    with _named(path, suffix) as named:
        model, legacy_failure = _attempt(lambda: tf_keras.models.load_model(named, compile=False), warned)
    if model is None:
        raise ConfigError(f"Could not load the Keras file {path}{written}: Keras 3 said {failure!r} and "
                          f"tf_keras said {legacy_failure!r}; save it again with model.save('model.keras') "
                          "in the Keras version that trained it, or export a SavedModel with "
                          "model.export(DIR) and pass DIR.")
    return model


def read_saved_model(model_file: ModelFile, warned: list[str]):
    """(the loaded SavedModel, None), or (None, the Keras 2 model) when only tf_keras reads it."""
    path = model_file.path
    loaded, failure = _attempt(lambda: tf.saved_model.load(path), warned)
    if loaded is not None:
        return loaded, None
    if not os.path.isfile(os.path.join(path, "keras_metadata.pb")):
        raise ConfigError(f"Could not load the SavedModel at {path} ({failure}); re-export it with "
                          "Keras model.export(DIR) or tf.saved_model.save(model, DIR).")
    if not have_tf_keras():
        raise ConfigError(f"Could not load the SavedModel at {path} ({failure}); Keras 2 wrote it "
                          f"(it holds keras_metadata.pb) and tf_keras reads it: {LEGACY_EXTRA}.")
    import tf_keras

    keras_2, legacy_failure = _attempt(lambda: tf_keras.models.load_model(path, compile=False), warned)
    if keras_2 is not None:
        return None, keras_2
    raise ConfigError(f"Could not load the SavedModel at {path}: TensorFlow said {failure!r} and "
                      f"tf_keras said {legacy_failure!r}; re-export it from the code that trained it "
                      "with model.export(DIR).")


def read_model(model_file: ModelFile, warned: list[str]):
    """(the loaded SavedModel, None) or (None, the Keras model), whatever `model_file` holds."""
    if model_file.is_keras:
        return None, read_keras(model_file, warned)
    return read_saved_model(model_file, warned)


def keras_metadata_layers(path: str) -> list[tuple[str, str]]:
    """(class name, layer name) of each layer a Keras 2 SavedModel's keras_metadata.pb lists,
    read from the JSON it stores per object, without tf_keras."""
    file = os.path.join(path, "keras_metadata.pb")
    if not os.path.isfile(file):
        return []
    with open(file, "rb") as handle:
        text = handle.read().decode("utf-8", "replace")
    found, decoder, start = [], json.JSONDecoder(), 0
    while (start := text.find('{"name": ', start)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start += 1
            continue
        if isinstance(value, dict) and "class_name" in value:
            found.append((str(value["class_name"]), str(value["name"])))
        start = end
    return found


