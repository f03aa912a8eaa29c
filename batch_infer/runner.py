"""One run, top to bottom: list files, skip what OUT has, load the model, stream, commit, summarise."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import __version__, parallel, storage
from .config import RunConfig
from .labels import resolve_labels
from .listing import ListedFile, in_shard, list_images
from .lock import output_lock
from .progress import Progress, log
from .output import scored_paths
from .sink import PartWriter, error_rows, prediction_rows, remove_stale_temporaries


@dataclass
class Summary:
    files: int
    ok: int
    errors: int
    skipped: int
    output: str
    elapsed_s: float
    stopped_by: int | None = None  # the signal that ended the run early

    @property
    def images_per_s(self) -> float:
        return round((self.ok + self.errors) / self.elapsed_s, 2) if self.elapsed_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        scored = self.ok + self.errors
        return self.errors / scored if scored else 0.0

    def as_dict(self) -> dict:
        return {"files": self.files, "ok": self.ok, "errors": self.errors, "skipped": self.skipped,
                "output": self.output, "elapsed_s": round(self.elapsed_s, 3),
                "images_per_s": self.images_per_s}


class StopSignals:
    """SIGINT/SIGTERM ask the run to stop after the current batch; a second one stops at once."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.received = signum
        log.warning("received %s: committing what is scored, then stopping",
                    signal.Signals(signum).name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; there the host program owns them
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def shard_tag(config: RunConfig) -> str:
    return f"{config.shard[0]}of{config.shard[1]}"


def files_to_score(config: RunConfig, listed: list[ListedFile]) -> list[ListedFile]:
    done = scored_paths(config.output)
    return [item for item in listed if item.path not in done]


def run(config: RunConfig, clock: Callable[[], float] = time.monotonic) -> Summary:
    started = clock()
    listed = in_shard(list_images(config.input, config.extensions, config.recursive), config.shard)
    todo = files_to_score(config, listed)

    def summary(ok: int = 0, errors: int = 0, stopped_by: int | None = None) -> Summary:
        return Summary(len(listed), ok, errors, len(listed) - len(todo), config.output,
                       clock() - started, stopped_by)

    if not listed:
        log.warning("no files ending in %s under %s", ",".join(config.extensions), config.input)
    if not todo:
        log.info("nothing to score: all %d files are already in %s", len(listed), config.output)
        return summary()

    # TensorFlow is imported only now, so a no-op re-run returns before paying for it.
    from .model import configure_device, load_runner
    from .pipeline import DecodeOptions

    if config.engine == "ray":
        from . import ray_engine

        ray_engine.connect(config)  # first: it may refuse the run, and it installs signal handlers
        configure_device("cpu")  # here the model is only checked; the actors score
        device = "gpu" if config.num_gpus else "cpu"
        threads = None
    else:
        device = configure_device(config.device)
        threads = parallel.configure(device)
    model = load_runner(config.model, config.signature, config.input_key, config.output_key,
                        config.image_size, config.preprocess, config.activation)
    labels, labels_source = resolve_labels(config.model, config.labels, model.num_classes)
    top_k = min(config.top_k, model.num_classes)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    metadata = {
        "run_id": run_id, "model": config.model, "signature": model.signature,
        "input_key": model.input_key, "output_key": model.output_key,
        "input": "encoded bytes" if model.spec.encoded else
                 f"{model.spec.dtype.name} {model.spec.image_size[0]}x{model.spec.image_size[1]}x{model.spec.channels}",
        "preprocess": config.preprocess, "activation": model.activation,
        "activation_reason": model.activation_reason, "labels_source": labels_source,
        "top_k": str(top_k), "shard": f"{config.shard[0]}/{config.shard[1]}", "device": device,
        "batch_infer_version": __version__, "tensorflow_version": _tensorflow_version(),
        "exif_transpose": str(config.exif_transpose).lower(), "max_pixels": str(config.max_pixels),
        "max_file_mb": str(config.max_file_mb), "scaled_decode": str(config.scaled_decode).lower(),
        "engine": config.engine, "threads": threads.describe() if threads else "one model per Ray actor",
    }
    log.info("model %s: signature %s, input %s, output %s (%d classes, activation %s: %s), labels: %s",
             config.model, model.signature, metadata["input"], model.output_key, model.num_classes,
             model.activation, model.activation_reason, labels_source)
    log.info("device %s: %s", device, metadata["threads"])

    local_output = not storage.is_url(config.output)
    if local_output:
        os.makedirs(config.output, exist_ok=True)
    with output_lock(config.output, shard_tag(config)), StopSignals() as stop:
        if local_output:
            remove_stale_temporaries(config.output, shard_tag(config))
        todo = files_to_score(config, listed)  # again under the lock: another run may have finished
        writer = PartWriter(config.output, f"{shard_tag(config)}-{run_id}", metadata,
                            max_rows=config.commit_every, clock=clock)
        progress = Progress(len(todo), config.quiet, clock=clock)
        decoding = DecodeOptions.from_config(config)
        if config.engine == "ray":
            ok, errors = ray_engine.score(config, model.spec, todo, decoding, writer, progress, stop)
        else:
            ok, errors = _score(model, todo, labels, top_k, config.batch_size, decoding, threads,
                                writer, progress, stop)
        writer.commit()
        progress.close()
        return summary(ok, errors, stop.received)


def _score(model, todo: list[ListedFile], labels: np.ndarray, top_k: int, batch_size: int,
           decoding, threads: parallel.ThreadPlan, writer: PartWriter, progress: Progress,
           stop: StopSignals) -> tuple[int, int]:
    """Streams `todo` through the model into `writer`, `threads.streams` batches at a time;
    returns (ok rows, error rows)."""
    from .pipeline import batches, diagnose

    refused = [item for item in todo if item.problem is not None]
    readable = [item for item in todo if item.problem is None]
    writer.add(error_rows([item.path for item in refused], [item.problem for item in refused]))
    progress.update(len(refused))
    ok, errors = 0, len(refused)

    def dropped(indices: list[int]) -> None:
        """Files the pipeline could not turn into images: find out why, one by one."""
        nonlocal errors
        if indices:
            items = [readable[i] for i in indices]
            writer.add(error_rows([item.path for item in items],
                                  [diagnose(item, model.spec, decoding) for item in items]))
            errors += len(items)
            progress.update(len(items))

    next_index = 0
    decoded = batches(readable, model.spec, batch_size, decoding, threads)
    for (indices, _), (scores, failures) in parallel.in_order(
            lambda batch: model.predict_or_isolate(batch[1]), decoded, threads.streams):
        arrived = set(indices.tolist())
        dropped([i for i in range(next_index, int(indices[-1])) if i not in arrived])
        next_index = int(indices[-1]) + 1
        writer.add(prediction_rows([readable[i].path for i in indices], scores, failures, top_k, labels))
        ok += len(indices) - len(failures)
        errors += len(failures)
        progress.update(len(indices))
        if stop.received is not None:
            return ok, errors
    dropped(list(range(next_index, len(readable))))
    return ok, errors


def _tensorflow_version() -> str:
    from .tf_import import tf

    return tf.__version__
