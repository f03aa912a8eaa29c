"""What a row's values depend on, recorded in every part, so that a re-run into the same OUT can
never mix rows scored one way with rows scored another.

The fingerprint is the model's identity, the labels' content, and the value of every option
declared with `changes_values` in `config.OPTIONS` (a new option counts unless it says it does
not). It is computed without TensorFlow, from the options as given, so that a re-run with
nothing to score still checks it in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import os

from .config import OPTIONS, ConfigError, RunConfig
from .labels import find_labels_file
from .model_files import SAVED_MODEL_FILES, serving_versions

METADATA_KEY = "fingerprint"
_CHUNK = 2**20


def _sha256(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def model_identity(path: str) -> str:
    """The SavedModel's own fingerprint.pb (written by TensorFlow 2.12 and later) when present,
    else a hash of saved_model.pb and the variables index; a Keras file's hash."""
    if os.path.isfile(path):
        return "sha256:" + _sha256([path])
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES):
        versions = serving_versions(path)  # a TF Serving base: the version a run loads
        if versions:
            path = os.path.join(path, str(versions[-1]))
    for names in (["fingerprint.pb"], ["saved_model.pb", os.path.join("variables", "variables.index")],
                  ["saved_model.pb"], ["saved_model.pbtxt"]):
        files = [os.path.join(path, name) for name in names]
        if all(os.path.isfile(file) for file in files):
            return f"sha256({'+'.join(names)}):" + _sha256(files)
    return "unknown"


def _text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return "x".join(str(part) for part in value)
    return "(not set)" if value is None else str(value)


def of_config(config: RunConfig) -> dict[str, str]:
    """{what: value as the user would say it}, model first."""
    labels = find_labels_file(config.model, config.labels)
    values = {"model": model_identity(config.model),
              "labels": "sha256:" + _sha256([labels]) if labels else "class indices"}
    values.update({option.name: _text(getattr(config, option.name)) for option in OPTIONS
                   if option.changes_values})
    return values


def _defaults() -> dict[str, str]:
    return {option.name: _text(RunConfig.__dataclass_fields__[option.name].default) for option in OPTIONS
            if option.changes_values}


def first_difference(recorded: dict[str, str], current: dict[str, str]) -> str | None:
    """The first thing that differs, in user terms ("was scored with --preprocess raw; this run
    asks for unit"); None when they agree. A name an older OUT does not record had its default
    value then."""
    defaults = _defaults()
    for name, value in current.items():
        before = recorded.get(name, defaults.get(name))
        if before == value:
            continue
        if name == "model":
            return f"was scored with another model (identity {before}); this run's model has {value}"
        if name == "labels":
            return f"was scored with labels {before}; this run's labels are {value}"
        return f"was scored with --{name.replace('_', '-')} {before}; this run asks for {value}"
    return None


def check(config: RunConfig, recorded: list[dict[str, str]], warn) -> dict[str, str]:
    """The run's fingerprint, after refusing a run whose OUT parts were scored differently.

    `recorded` is each part's metadata; parts written before fingerprints existed are resumed
    with a warning through `warn`."""
    current = of_config(config)
    if any(METADATA_KEY not in meta for meta in recorded):
        warn("some parts of %s were written without a fingerprint, so it cannot be checked that "
             "they were scored like this run; resuming anyway", config.output)
    for meta in recorded:
        if METADATA_KEY in meta:
            difference = first_difference(json.loads(meta[METADATA_KEY]), current)
            if difference is not None:
                raise ConfigError(f"{config.output} {difference}, so its rows would not match this run's. Score into "
                                  "a new --output, or run with the options OUT was scored with.")
    return current
