"""Heads: what a model's raw outputs become in the output table.

A head names the fields it adds to the Parquet schema, turns one model call's outputs into those
columns, and says what it decided in the metadata. Both engines and every writer see only
heads, so a new kind of output column is one new head class here.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyarrow as pa

from .config import ConfigError
from .labels import resolve_labels
from .model import Model, TensorInfo
from .tf_import import tf


class Head(Protocol):
    def fields(self) -> list[pa.Field]:
        """The columns this head adds, in order; null on error rows."""

    def columns(self, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """One model call's raw outputs, [rows, ...] each, as this head's columns."""

    def metadata(self) -> dict[str, str]:
        """What the head decided, for every part's key-value metadata."""

    def describe(self) -> str:
        """The same, in words for the log."""


def choose_output(outputs: list[TensorInfo], key: str | None, signature: str) -> TensorInfo:
    names = ", ".join(info.describe() for info in outputs)
    if key is not None:
        matches = [info for info in outputs if info.name == key]
        if not matches:
            raise ConfigError(f"Output key {key!r} is not an output of signature {signature!r}; "
                              f"outputs are {names}.")
        if not matches[0].is_vector:
            raise ConfigError(f"Output {matches[0].describe()} is not [batch, classes] scores; "
                              f"choose another --output-key among {names}.")
        return matches[0]
    candidates = [info for info in outputs if info.is_vector]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigError(f"No output of signature {signature!r} is [batch, classes] float scores "
                          f"(outputs: {names}); batch-infer needs a classification output.")
    raise ConfigError(f"Signature {signature!r} has several outputs that could be the class scores "
                      f"({', '.join(c.name for c in candidates)}); choose one with --output-key.")


def detect_activation(outputs: np.ndarray) -> tuple[str, str]:
    """(activation, why) for raw outputs: probabilities pass through, anything else is logits."""
    within_unit = bool(np.all((outputs >= 0) & (outputs <= 1)))
    if within_unit and outputs.shape[1] > 1 and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        return "none", "outputs are probabilities (rows sum to 1)"
    if within_unit:
        return "none", "outputs lie in [0, 1] (independent probabilities)"
    if outputs.shape[1] == 1:
        return "sigmoid", "single output outside [0, 1] looks like a logit"
    return "softmax", "outputs outside [0, 1] look like logits"


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best classes per row, best first; ties keep the lower index."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order.astype(np.int32), np.take_along_axis(scores, order, axis=1).astype(np.float32)


def _fixed_lists(values: pa.Array, rows: int, k: int) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32)), values)


class Classification:
    """Class scores: activation, top-k and label names. A single sigmoid output is a binary
    classifier and becomes the two classes [1 - p, p]."""

    FIELDS = [pa.field("label", pa.string()), pa.field("score", pa.float32()),
              pa.field("top_k_labels", pa.list_(pa.string())),
              pa.field("top_k_indices", pa.list_(pa.int32())),
              pa.field("top_k_scores", pa.list_(pa.float32()))]

    def __init__(self, output_key: str, activation: str, activation_reason: str, labels: np.ndarray,
                 labels_source: str, top_k: int):
        self.output_key = output_key
        self.activation = activation
        self.activation_reason = activation_reason
        self.labels = labels
        self.labels_source = labels_source
        self.top_k = min(top_k, len(labels))

    @classmethod
    def for_model(cls, model: Model, output_key: str | None = None, activation: str = "auto",
                  labels: str | None = None, top_k: int = 5) -> "Classification":
        """Settles the output, the activation (from the load-time probe) and the labels;
        ConfigError when the model has no usable class scores."""
        chosen = choose_output(model.outputs, output_key, model.signature)
        probe = model.probe[chosen.name]
        width = probe.shape[1]
        if activation == "auto":
            activation, reason = detect_activation(probe.astype(np.float64))
        else:
            reason = "set by --activation"
        if width == 1 and activation == "softmax":
            raise ConfigError("--activation softmax on a single output always gives 1.0; use sigmoid or auto.")
        names, source = resolve_labels(model.path, labels, 2 if width == 1 else width)
        return cls(chosen.name, activation, reason, names, source, top_k)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Scores after activation, [rows, classes]."""
        raw = tf.cast(outputs[self.output_key], tf.float32)
        if self.activation == "softmax":
            raw = tf.nn.softmax(raw, axis=-1)
        elif self.activation == "sigmoid":
            raw = tf.sigmoid(raw)
        scores = raw.numpy()
        if scores.shape[1] == 1:
            scores = np.concatenate([1.0 - scores, scores], axis=1)
        return scores

    def fields(self) -> list[pa.Field]:
        return self.FIELDS

    def columns(self, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """Built column-wise: no Python loop per row."""
        indices, best = top_k(self.scores(outputs), self.top_k)
        rows, k = indices.shape
        names = self.labels[indices]
        return {
            "label": pa.array(names[:, 0], pa.string()),
            "score": pa.array(best[:, 0], pa.float32()),
            "top_k_labels": _fixed_lists(pa.array(names.ravel(), pa.string()), rows, k),
            "top_k_indices": _fixed_lists(pa.array(indices.ravel(), pa.int32()), rows, k),
            "top_k_scores": _fixed_lists(pa.array(best.ravel(), pa.float32()), rows, k),
        }

    def metadata(self) -> dict[str, str]:
        return {"output_key": self.output_key, "activation": self.activation,
                "activation_reason": self.activation_reason, "labels_source": self.labels_source,
                "top_k": str(self.top_k)}

    def describe(self) -> str:
        return (f"output {self.output_key} ({self.num_classes} classes, activation {self.activation}: "
                f"{self.activation_reason}), labels: {self.labels_source}")


class FileFacts:
    """What each file says of itself, from the decoder: its stored size (before any turn or
    resize; null when the header does not say) and a fingerprint of its bytes, for exact
    duplicates."""

    FIELDS = [pa.field("width", pa.int32()), pa.field("height", pa.int32()),
              pa.field("content_hash", pa.string())]

    def fields(self) -> list[pa.Field]:
        return self.FIELDS

    def columns(self, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        return {"width": pa.array(outputs["width"], pa.int32(), mask=outputs["width"] == 0),
                "height": pa.array(outputs["height"], pa.int32(), mask=outputs["height"] == 0),
                "content_hash": pa.array([bytes(row).hex() for row in outputs["content_hash"]], pa.string())}

    def metadata(self) -> dict[str, str]:
        return {"content_hash": "farmhash64 of the file's bytes (tf.fingerprint), as 16 hex digits"}

    def describe(self) -> str:
        return "width, height and content hash from the decoder"
