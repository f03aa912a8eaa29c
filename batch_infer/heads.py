"""Heads: what a model's raw outputs become in the output table.

A head names the fields it adds to the Parquet schema, turns one model call's outputs into those
columns, and says what it decided in the metadata. Both engines and every writer see only
heads, so a new kind of output column is one new head class here.
"""

from __future__ import annotations

import json
from typing import Protocol

import numpy as np
import pyarrow as pa

from . import perceptual
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
        """The same, in words for the log; empty when there is nothing run-specific to say."""


def choose_output(outputs: list[TensorInfo], key: str | None, where: str,
                  exclude: frozenset[str] = frozenset()) -> TensorInfo:
    """The class scores: --output-key, else the only [batch, classes] float output among those
    not taken by another head (`exclude`)."""
    names = ", ".join(info.describe() for info in outputs)
    if key is not None:
        matches = [info for info in outputs if info.name == key]
        if not matches:
            raise ConfigError(f"Output key {key!r} is not an output of {where}; outputs are {names}.")
        if not matches[0].is_vector:
            raise ConfigError(f"Output {matches[0].describe()} is not [batch, classes] scores; "
                              f"choose another --output-key among {names}.")
        return matches[0]
    candidates = [info for info in outputs if info.is_vector and info.name not in exclude]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigError(f"No output of {where} is [batch, classes] float scores (outputs: {names}); "
                          "use --task embed or --keep-output KEY for a model without a "
                          "classification output.")
    raise ConfigError(f"{where[0].upper()}{where[1:]} has several outputs that could be the class "
                      f"scores ({', '.join(c.name for c in candidates)}); choose one with --output-key.")


def looks_like_features(outputs: np.ndarray) -> bool:
    """Non-negative and not within [0, 1]: what ReLU features and their pooling give. Logits of
    a real classifier have negative entries on any batch."""
    return outputs.shape[1] > 1 and bool(np.all(outputs >= 0)) and bool(np.any(outputs > 1))


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
                  labels: str | None = None, top_k: int = 5,
                  exclude: frozenset[str] = frozenset()) -> "Classification":
        """Settles the output, the activation (from the load-time probe) and the labels;
        ConfigError when the model has no usable class scores."""
        chosen = choose_output(model.outputs, output_key, model.where, exclude)
        probe = model.probe[chosen.name]
        width = probe.shape[1]
        if activation == "auto" and looks_like_features(probe.astype(np.float64)):
            raise ConfigError(f"Output {chosen.name} of {model.where} looks like features, not class "
                              f"scores ({width} non-negative values, some above 1, as pooled ReLU "
                              "activations are); use --task embed to write them as embeddings, or "
                              "--activation softmax if they really are logits.")
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
                "labels": json.dumps(self.labels.tolist(), ensure_ascii=False), "top_k": str(self.top_k)}

    def describe(self) -> str:
        return (f"output {self.output_key} ({self.num_classes} classes, activation {self.activation}: "
                f"{self.activation_reason}), labels: {self.labels_source}")


def _vector_output(model: Model, key: str, what: str) -> TensorInfo:
    names = ", ".join(info.describe() for info in model.outputs)
    matches = [info for info in model.outputs if info.name == key]
    if not matches:
        raise ConfigError(f"{what} {key!r} is not an output of {model.where}; outputs are {names}.")
    return matches[0]


def _width(model: Model, key: str) -> int:
    """Columns of a [batch, N] output, from the load-time probe (the signature may leave N open)."""
    probe = model.probe[key]
    return int(np.prod(probe.shape[1:], dtype=np.int64))


class Embedding:
    """A feature vector per image as `embedding`, fixed_size_list<float32>[D]; optionally L2
    normalised, so that a dot product is the cosine similarity."""

    def __init__(self, output_key: str, dim: int, source: str, pooling: str | None, normalize: bool):
        self.output_key = output_key
        self.dim = dim
        self.source = source
        self.pooling = pooling
        self.normalize = normalize
        self.type = pa.list_(pa.float32(), dim)

    @classmethod
    def for_model(cls, model: Model, key: str | None = None, normalize: bool = False,
                  exclude: frozenset[str] = frozenset()) -> "Embedding":
        """--embedding-key KEY, else the output --embedding-layer added to a Keras model, else the
        only [batch, D] float output not taken by another head; ConfigError otherwise."""
        names = ", ".join(info.describe() for info in model.outputs)
        if key is not None:
            chosen = _vector_output(model, key, "Embedding key")
            if not chosen.is_vector:
                raise ConfigError(f"Output {chosen.describe()} is not a [batch, D] float vector, so it "
                                  f"cannot be the embedding; choose another --embedding-key among {names}.")
            source = f"output {key!r} of {model.where}"
        elif model.embedding_output is not None:
            chosen = _vector_output(model, model.embedding_output, "Embedding layer")
            source = f"{model.embedding_source} of {model.where}"
        else:
            candidates = [info for info in model.outputs if info.is_vector and info.name not in exclude]
            if not candidates:
                hint = ("name a layer with --embedding-layer NAME or penultimate" if model.format == "keras"
                        else "export a signature that returns features (batch-infer inspect MODEL shows how)")
                raise ConfigError(f"No output of {model.where} is a [batch, D] float vector (outputs: "
                                  f"{names}); {hint}.")
            if len(candidates) > 1:
                raise ConfigError(f"{model.where[0].upper()}{model.where[1:]} has several outputs that "
                                  f"could be the embedding ({', '.join(c.name for c in candidates)}); "
                                  "choose one with --embedding-key.")
            chosen = candidates[0]
            source = f"output {chosen.name!r} of {model.where}"
        return cls(chosen.name, _width(model, chosen.name), source, model.pooling.get(chosen.name),
                   normalize)

    def fields(self) -> list[pa.Field]:
        return [pa.field("embedding", self.type)]

    def columns(self, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """One contiguous float32 buffer wrapped as fixed-size lists: no copy per row."""
        values = np.asarray(outputs[self.output_key], np.float32).reshape(-1, self.dim)
        if self.normalize:
            norms = np.linalg.norm(values, axis=1, keepdims=True)
            values = values / np.maximum(norms, np.finfo(np.float32).tiny)
        return {"embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(values).ravel(), pa.float32()), self.dim)}

    def metadata(self) -> dict[str, str]:
        return {"embedding_key": self.output_key, "embedding_source": self.source,
                "embedding_dim": str(self.dim), "embedding_pooling": self.pooling or "none",
                "embedding_normalized": "l2" if self.normalize else "none"}

    def describe(self) -> str:
        pooled = f", {self.pooling}" if self.pooling else ""
        normalized = ", L2-normalised" if self.normalize else ""
        return f"embedding {self.source} ({self.dim} dimensions{pooled}{normalized})"


class KeptOutput:
    """Any other float output kept raw as `output_<KEY>`: float32 for one value per image
    ([batch] or [batch, 1]: a regression head), else fixed_size_list<float32>[N]."""

    def __init__(self, output_key: str, width: int | None):
        self.output_key = output_key
        self.width = width  # None: one float per image
        self.name = f"output_{output_key}"
        self.type = pa.float32() if width is None else pa.list_(pa.float32(), width)

    @classmethod
    def for_model(cls, model: Model, key: str) -> "KeptOutput":
        chosen = _vector_output(model, key, "--keep-output")
        rank = None if chosen.shape is None else len(chosen.shape)
        if not chosen.dtype.startswith(("float", "bfloat")) or rank not in (1, 2):
            raise ConfigError(f"--keep-output keeps [batch] or [batch, N] float outputs, but output "
                              f"{chosen.describe()} is not one; drop --keep-output {key}.")
        width = _width(model, key)
        return cls(key, None if rank == 1 or width == 1 else width)

    def fields(self) -> list[pa.Field]:
        return [pa.field(self.name, self.type)]

    def columns(self, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        values = np.asarray(outputs[self.output_key], np.float32)
        if self.width is None:
            return {self.name: pa.array(values.reshape(-1), pa.float32())}
        return {self.name: pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(values).reshape(-1), pa.float32()), self.width)}

    def metadata(self) -> dict[str, str]:
        return {f"kept_output.{self.output_key}": str(self.type)}

    def describe(self) -> str:
        shape = "one float" if self.width is None else f"{self.width} floats"
        return f"{self.name} ({shape} per image, raw)"


class FileFacts:
    """What each file says of itself, from the decoder: its stored size (before any turn or
    resize; null when the header does not say), a fingerprint of its bytes, for exact
    duplicates, and a perceptual fingerprint and the mean colour of its pixels (`perceptual`),
    for near copies."""

    FIELDS = [pa.field("width", pa.int32()), pa.field("height", pa.int32()),
              pa.field("content_hash", pa.string()), pa.field("phash", pa.string()),
              pa.field("mean_colour", pa.string())]

    def fields(self) -> list[pa.Field]:
        return self.FIELDS

    def columns(self, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """Each fact the decoder gave; nulls for one it did not (the Pillow fallback reads no
        header; a model that takes encoded bytes leaves no pixels to fingerprint)."""
        rows = len(next(iter(outputs.values())))
        columns = {field.name: pa.nulls(rows, field.type) for field in self.FIELDS}
        if "width" in outputs:
            columns["width"] = pa.array(outputs["width"], pa.int32(), mask=outputs["width"] == 0)
            columns["height"] = pa.array(outputs["height"], pa.int32(), mask=outputs["height"] == 0)
        if "content_hash" in outputs:
            columns["content_hash"] = pa.array([bytes(row).hex() for row in outputs["content_hash"]], pa.string())
        if "thumbnail" in outputs:
            columns["phash"] = pa.array(perceptual.as_text(perceptual.fingerprints(outputs["thumbnail"])),
                                        pa.string())
            columns["mean_colour"] = pa.array(perceptual.mean_colours(outputs["thumbnail"]), pa.string())
        return columns

    def metadata(self) -> dict[str, str]:
        return {"content_hash": "farmhash64 of the file's bytes (tf.fingerprint), as 16 hex digits",
                "phash": perceptual.DESCRIPTION,
                "mean_colour": "mean of the upright pixels' 32x32 thumbnail per channel, as rrggbb hex"}

    def describe(self) -> str:
        return ""  # the same for every run: nothing for the log line
