"""The one place where files become rows, for both engines: triage of files refused unread, the
model call (with a bad input isolated to its own row), the heads' columns, and the diagnosis of
files that dropped out of decoding, which the Pillow fallback gets to decode first.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pyarrow as pa

from . import parallel, scaling
from .config import ConfigError, RunConfig
from .decode.diagnose import rescue, unread_reason
from .decode.geometry import ModelInputs, scaled
from .decode.graph import PILLOW, TENSORFLOW
from .decode.options import DecodeOptions
from .decode.pipeline import DecodedBatch
from .heads import Classification, Embedding, FileFacts, Head, KeptOutput
from .listing import ListedFile
from .model import Model, load_model, probe_batch
from .tf_import import short_error, tf

BASE_FIELDS = [pa.field("path", pa.string()), pa.field("status", pa.string()),
               pa.field("error", pa.string())]
# Which decoder produced an ok row's pixels: "tensorflow" (the tf.data graph) or "pillow" (the
# fallback); null on error rows. Last, so the columns users know keep their places.
DECODER_FIELD = pa.field("decoder", pa.string())


class Rows:
    """Tables in the output schema: path, status, error, each head's fields in order, decoder."""

    def __init__(self, heads: list[Head]):
        self.heads = heads
        self.schema = pa.schema(BASE_FIELDS + [field for head in heads for field in head.fields()]
                                + [DECODER_FIELD])

    def errors(self, paths: list[str], reasons: list[str]) -> pa.Table:
        rows = len(paths)
        columns = {"path": pa.array(paths, pa.string()), "status": pa.array(["error"] * rows, pa.string()),
                   "error": pa.array(reasons, pa.string())}
        return pa.table({field.name: columns.get(field.name, pa.nulls(rows, field.type))
                         for field in self.schema}, schema=self.schema)

    def ok(self, paths: list[str], outputs: dict[str, np.ndarray], decoder: str = TENSORFLOW) -> pa.Table:
        """Rows for scored files, from one model call's outputs, column-wise."""
        rows = len(paths)
        columns = {"path": pa.array(paths, pa.string()), "status": pa.array(["ok"] * rows, pa.string()),
                   "error": pa.nulls(rows, pa.string())}
        for head in self.heads:
            columns.update(head.columns(outputs))
        columns["decoder"] = pa.array([decoder] * rows, pa.string())
        return pa.table(columns, schema=self.schema)


def check_resize_applies(model: Model, decoding: DecodeOptions) -> None:
    """A model that takes encoded bytes decodes and resizes them itself, so resize options and
    the presets would change nothing: refused rather than recorded as if they had applied."""
    if model.spec.encoded and (not decoding.resize.is_default or decoding.preset is not None):
        raise ConfigError(f"Signature {model.signature!r} takes encoded image bytes and resizes them "
                          "itself, so --resize, --crop-fraction, --interpolation, --antialias and "
                          "--preset do not apply; drop them.")


def heads_for(model: Model, config: RunConfig) -> list[Head]:
    """The heads a run writes, in column order: classification (unless --task embed), the
    embedding (--task embed, --embedding-key, --embedding-layer), then each --keep-output.

    The class scores are chosen among the outputs no other head took, so a model with probs
    and features outputs needs no --output-key once --embedding-key names the features; when
    --keep-output took every candidate (a regression model), there are no class columns.
    """
    kept = [KeptOutput.for_model(model, key) for key in config.keep_output]
    taken = frozenset(head.output_key for head in kept)
    embedding = None
    if config.task == "embed" or config.embedding_key or config.embedding_layer:
        embedding = Embedding.for_model(model, config.embedding_key, config.normalize_embeddings, taken)
        taken |= {embedding.output_key}
    heads: list[Head] = []
    if config.task == "classify":
        without_classes = kept and config.output_key is None and not any(
            info.is_vector and info.name not in taken for info in model.outputs)
        if not without_classes:
            heads.append(Classification.for_model(model, config.output_key, config.activation,
                                                  config.labels, config.top_k, taken))
    return heads + ([embedding] if embedding else []) + kept


class Scorer:
    """A loaded model, its heads and the decode options: everything both engines need to turn
    decoded batches into rows in one schema."""

    def __init__(self, model: Model, heads: list[Head], decoding: DecodeOptions, task: str, batch_size: int,
                 runtime=None):
        self.model = model
        self.runtime = runtime  # an onnx_runtime.Runtime for --runtime onnx, until the gate decides
        self.batch_size = batch_size  # images per model call
        self.task = task
        self.heads = heads
        self.decoding = decoding
        self.table = Rows(heads)
        self.schema = self.table.schema
        self.model_inputs = ModelInputs(model.spec, decoding.resize)
        self.scaling_check: dict | None = None  # each scaling's Collapse on a sample, once checked
        # Pillow releases the GIL while it decodes: one thread per core, shared by the streams,
        # so a folder of TIFFs uses every core and holds at most one decoded image per core.
        self.fallback_pool = ThreadPoolExecutor(parallel.usable_cores(), thread_name_prefix="pillow")

    @classmethod
    def load(cls, config: RunConfig, threads: parallel.ThreadPlan | None = None) -> "Scorer":
        """Loads the model and settles every choice before any file is read; ConfigError otherwise.
        With --runtime onnx the model is converted here too, on `threads`' split of the cores."""
        model = load_model(config.model, config.signature, config.input_key, config.image_size,
                           config.preprocess, config.embedding_layer)
        decoding = DecodeOptions.from_config(config)
        check_resize_applies(model, decoding)
        runtime = None
        if config.runtime == "onnx":
            from .onnx_runtime import Runtime

            runtime = Runtime.prepare(model, threads.intra_op if threads is not None else 0)
        return cls(model, heads_for(model, config) + [FileFacts()], decoding, config.task, config.batch_size,
                   runtime)

    def advice(self, todo: list[ListedFile]) -> list[str]:
        """Sentences the run logs as warnings before it starts: the model's (a --preprocess that
        contradicts it), then the label-free check of a scaling nothing said (`scaling`)."""
        sentences = list(self.model.warnings)
        if self.model.scaling.source == scaling.UNSAID:
            checked = self._check_scaling(todo)
            if checked is not None:
                sentences.append(checked)
        gated = self.gate_runtime(todo)
        return sentences + ([gated] if gated is not None else [])

    def gate_runtime(self, todo: list[ListedFile]) -> str | None:
        """With --runtime onnx: the gate (`onnx_runtime`) on the first batch of `todo`, decoded
        by Pillow as the scaling check decodes (the seeded probe images when none decode); the
        sentence to warn with when the run stays on TensorFlow."""
        if self.runtime is None:
            return None
        if self.runtime.call is None:  # not converted: nothing to compare
            return self.runtime.gate(self.model, None, None)
        decoded = pillow_pixels(todo[:self.batch_size], self.model.spec, self.decoding, self.fallback_pool)
        batch = self.model_inputs(decoded)[0] if decoded else probe_batch(self.model.spec)
        classes = self.classes
        top1 = None if classes is None else (lambda outputs: np.argmax(classes.scores(outputs), axis=1))
        return self.runtime.gate(self.model, batch, top1)

    @property
    def classes(self) -> Classification | None:
        """The class-scores head, when the run writes one."""
        return next((head for head in self.heads if isinstance(head, Classification)), None)

    def _check_scaling(self, todo: list[ListedFile]) -> str | None:
        if self.classes is None:
            return None
        collapses, images = scaling_collapses(self.model, self.classes, self.decoding, todo, self.fallback_pool)
        if not collapses:
            return None
        self.scaling_check = {name: vars(collapse) for name, collapse in collapses.items()}
        return scaling.check(self.model.spec.preprocess, collapses, images)

    def metadata(self) -> dict[str, str]:
        merged = {**self.model.metadata(), **self.decoding.metadata(), "task": self.task,
                  **(self.runtime.metadata() if self.runtime is not None else {"runtime": "tensorflow"})}
        if self.scaling_check is not None:
            merged["preprocess_check"] = json.dumps(self.scaling_check)
        for head in self.heads:
            merged.update(head.metadata())
        return merged

    def describe(self) -> str:
        """One log line: how the model is fed and what each head decided."""
        model = self.model
        called = f"signature {model.signature}" if model.signature else model.where
        feeding = [f"{called}, input {model.spec.describe()}"]
        if not model.spec.encoded:
            feeding.append(f"preprocess {model.spec.preprocess} ({model.scaling.source})")
        return ", ".join(([model.found_at] if model.found_at else []) + feeding
                         + [head.describe() for head in self.heads if head.describe()])

    def error_rows(self, paths: list[str], reasons: list[str]) -> pa.Table:
        return self.table.errors(paths, reasons)

    def triage(self, todo: list[ListedFile]) -> tuple[pa.Table, list[ListedFile]]:
        """(error rows of the files refused unread, the files to read)."""
        reasons = [unread_reason(item, self.decoding) for item in todo]
        refused = [(item.path, reason) for item, reason in zip(todo, reasons) if reason is not None]
        return (self.error_rows([path for path, _ in refused], [reason for _, reason in refused]),
                [item for item, reason in zip(todo, reasons) if reason is None])

    def rows(self, items: list[ListedFile], decoded: DecodedBatch, data: list[bytes] | None = None) -> pa.Table:
        """One row for each of `items`: those `decoded` names by position are scored, their facts
        beside the model's outputs; the others are rescued by the Pillow fallback and scored, or
        diagnosed: from `data` when the engine has each file's bytes, else by reading the file
        again."""
        arrived = [int(position) for position in decoded.positions]
        missing = sorted(set(range(len(items))) - set(arrived))
        rescued = list(self.fallback_pool.map(
            lambda i: rescue(items[i], data[i] if data is not None else None, self.model.spec, self.decoding),
            missing))
        failed = [(items[i].path, reason) for i, (_, reason) in zip(missing, rescued) if reason is not None]
        tables = [self.error_rows([path for path, _ in failed], [reason for _, reason in failed])] if failed else []
        if arrived:
            tables.extend(self._scored([items[i].path for i in arrived], decoded.images, TENSORFLOW, decoded.facts))
        by_pillow = [(items[i].path, one) for i, (one, _) in zip(missing, rescued) if one is not None]
        if by_pillow:
            inputs, thumbnails = self.model_inputs([one.pixels for _, one in by_pillow])
            facts = {name: np.stack([one.facts[name] for _, one in by_pillow]) for name in by_pillow[0][1].facts}
            tables.extend(self._scored([path for path, _ in by_pillow], inputs, PILLOW,
                                       {**facts, "thumbnail": thumbnails}))
        return pa.concat_tables(tables) if tables else self.error_rows([], [])

    def _scored(self, paths: list[str], images, decoder: str,
                facts: dict[str, np.ndarray] | None = None) -> list[pa.Table]:
        """Rows of one model call on `images`, one per path: ok, or the model's error."""
        outputs, failures = self._predict(images)
        kept = [row for row in range(len(paths)) if row not in failures]
        outputs.update({name: value[kept] for name, value in (facts or {}).items()})
        scored = [paths[row] for row in kept]
        tables = [self.table.ok(scored, outputs, decoder)] if scored else []
        return tables + ([self.error_rows([paths[row] for row in failures], list(failures.values()))]
                         if failures else [])

    def _predict(self, images) -> tuple[dict[str, np.ndarray], dict[int, str]]:
        """Outputs of the rows the model took, plus {row: reason} for rows it rejected, from one
        model call a `batch_size` rows: a read batch of small files holds several model batches,
        and one table for all of them costs their rows a fraction of what a table each does."""
        count = int(images.shape[0])
        if count <= self.batch_size:
            return self._predict_batch(images)
        starts = range(0, count, self.batch_size)
        taken, failures = [], {}
        for start, part in zip(starts, tf.split(images, [min(self.batch_size, count - start) for start in starts])):
            outputs, failed = self._predict_batch(part)
            taken.append(outputs)
            failures.update({start + row: reason for row, reason in failed.items()})
        return _joined(taken), failures

    def _predict_batch(self, images) -> tuple[dict[str, np.ndarray], dict[int, str]]:
        """`_predict` of one model batch.

        When the batch call fails (say an encoded-bytes model meets a corrupt file), each image is
        retried alone, so one bad input costs one error row instead of the whole batch.
        """
        try:
            return self.model.predict(images), {}
        except tf.errors.OpError:
            pass
        taken, failures = [], {}
        for row in range(int(tf.shape(images)[0])):
            try:
                taken.append(self.model.predict(images[row:row + 1]))
            except tf.errors.OpError as error:
                failures[row] = f"model: {short_error(error)}"
        return _joined(taken), failures


def pillow_pixels(items: list[ListedFile], spec, decoding: DecodeOptions, pool) -> list[np.ndarray]:
    """The upright pixels of those of `items` that decode, read and decoded by Pillow on `pool`:
    the few images the checks before a run look at, outside the run's pipeline."""
    return [one.pixels for one, _ in pool.map(lambda item: rescue(item, None, spec, decoding), items)
            if one is not None]


def scaling_collapses(model: Model, classes: Classification, decoding: DecodeOptions,
                      items: list[ListedFile], pool, every: bool = False) -> tuple[dict, int]:
    """({scaling: Collapse}, images) for up to CHECK_IMAGES of `items`, spread over them,
    decoded by Pillow and scored under the model's scaling, then, when that looks degenerate
    (or `every`), under each other candidate; ({}, 0) when too few decode or nothing applies."""
    spec = model.spec
    if spec.encoded or spec.dtype == tf.uint8:
        return {}, 0
    step = max(1, len(items) // scaling.CHECK_IMAGES)
    decoded = pillow_pixels(items[::step][:scaling.CHECK_IMAGES], spec, decoding, pool)
    if len(decoded) < scaling.MIN_CHECK_IMAGES:
        return {}, 0
    unscaled = ModelInputs(replace(spec, preprocess="raw", dtype=tf.float32), decoding.resize)(decoded)[0]
    collapses = {}
    for candidate in [spec.preprocess] + [name for name in scaling.candidates(spec) if name != spec.preprocess]:
        inputs = scaled(unscaled, replace(spec, preprocess=candidate))
        collapses[candidate] = scaling.Collapse.of(classes.scores(model.predict(inputs)))
        if not every and collapses[spec.preprocess].pinned < scaling.SUSPECT:
            break
    return collapses, len(decoded)


def _joined(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The outputs of several model calls as one, row after row; a call that kept no row left out."""
    outputs = [one for one in outputs if one]
    return {key: np.concatenate([one[key] for one in outputs]) for key in outputs[0]} if outputs else {}
