"""Class names: from --labels, else a labels.txt shipped with the model, else the index as text."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from .config import ConfigError

SHIPPED_NAMES = ("labels.txt", os.path.join("assets", "labels.txt"))
SEPARATORS = re.compile(r"[\s_\-.]+")


def find_labels_file(model: str, given: str | None) -> str | None:
    """--labels, else labels.txt in a SavedModel directory or its assets/, or, for a Keras file
    x.keras, x.labels.txt or labels.txt beside it."""
    if given is not None:
        return given
    if os.path.isfile(model):
        stem = os.path.splitext(model)[0]
        candidates = [stem + ".labels.txt", os.path.join(os.path.dirname(model), "labels.txt")]
    else:
        candidates = [os.path.join(model, name) for name in SHIPPED_NAMES]
    return next((candidate for candidate in candidates if os.path.isfile(candidate)), None)


def read_labels(path: str) -> list[str]:
    """One label per line; trailing blank lines are ignored, inner ones are an error."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"Labels file {path} could not be read ({error}); give a UTF-8 text file "
                          "with one label per line.") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if any(not line.strip() for line in lines):
        raise ConfigError(f"Labels file {path} has blank lines; write one label per line, line i "
                          "naming class i.")
    return [line.strip() for line in lines]


def resolve_labels(model: str, given: str | None, num_classes: int) -> tuple[np.ndarray, str]:
    """(label per class index, where they came from); the count must match the model's classes."""
    path = find_labels_file(model, given)
    if path is None:
        return np.array([str(i) for i in range(num_classes)], dtype=object), "class indices"
    names = read_labels(path)
    if len(names) != num_classes:
        raise ConfigError(f"Labels file {path} has {len(names)} labels but the model outputs "
                          f"{num_classes} classes; give one label per class with --labels.")
    return np.array(names, dtype=object), path


def loose_key(name: str) -> str:
    """A name without case or separators (space, _, -, .): `Golden_Retriever` and
    `golden retriever` meet. `str.lower`, not `casefold`, so `STRASSE` stays apart from `Straße`:
    folding would turn one class's name into another's spelling."""
    return SEPARATORS.sub("", name.lower())


@dataclass
class Matching:
    """Each given name's model label, the part of it matched loosely, and the names that match
    no label with their file counts."""
    label_of: dict[str, str] = field(default_factory=dict)
    loose: dict[str, str] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)


def match_labels(counts: dict[str, int], labels: list[str]) -> Matching:
    """Matches given names (folders, manifest values; `counts` holds each one's files) to the
    model's labels: the same text, else the one label with the same `loose_key`. A name whose key
    fits two labels (`CAT` with `Cat` and `cat`) matches neither, since picking one would count
    its files against a class they may not be. `review`, `report` and `inspect --against` all
    match through here, so a name they show as matched is matched in all three."""
    exact = set(labels)
    by_key: dict[str, list[str]] = {}
    for label in labels:
        by_key.setdefault(loose_key(label), []).append(label)
    found = Matching()
    for name, files in sorted(counts.items()):
        candidates = by_key.get(loose_key(name), [])
        if name in exact:
            found.label_of[name] = name
        elif len(candidates) == 1:
            found.label_of[name] = found.loose[name] = candidates[0]
        else:
            found.unmatched[name] = files
    return found
