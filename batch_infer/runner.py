"""One run, top to bottom: check OUT was scored like this run, list files, skip what OUT has,
load the model, drop the rows of changed files, stream, commit, summarise."""

from __future__ import annotations

import importlib
import json
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from . import __version__, fingerprint, storage
from .config import RunConfig
from .layout import part_prefix, shard_tag
from .listing import ListedFile, in_shard, list_input
from .lock import output_lock
from .native_stderr import decoder_lines_logged
from .output import Committed, committed
from .progress import Progress, log
from .sink import PartWriter, drop_rows, remove_stale_temporaries

EXIT_OK, EXIT_ERROR_BUDGET = 0, 3
# Each engine has the same two calls: prepare() -> (scorer, metadata), score(todo) -> tables.
ENGINES = {"local": ("local_engine", "LocalEngine"), "ray": ("ray_engine", "RayEngine")}


@dataclass
class Summary:
    files: int
    ok: int
    errors: int
    skipped: int
    rescored: int
    output: str
    elapsed_s: float
    stopped_by: int | None = None  # the signal that ended the run early
    warnings: int | None = 0  # lines decoders printed on stderr, logged (see native_stderr)

    @property
    def images_per_s(self) -> float:
        return round((self.ok + self.errors) / self.elapsed_s, 2) if self.elapsed_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        scored = self.ok + self.errors
        return self.errors / scored if scored else 0.0

    def outcome(self, max_error_rate: float | None) -> tuple[int, str | None]:
        """(exit code, why it is not 0) by the contract, for the command and the API alike."""
        if self.stopped_by is not None:
            return 128 + self.stopped_by, (f"stopped by signal {self.stopped_by} after committing what "
                                           "was scored; run again to score the rest")
        if max_error_rate is not None and self.error_rate > max_error_rate:
            return EXIT_ERROR_BUDGET, f"error rate {self.error_rate:.4f} exceeds --max-error-rate {max_error_rate}"
        return EXIT_OK, None

    def as_dict(self) -> dict:
        return {"files": self.files, "ok": self.ok, "errors": self.errors, "skipped": self.skipped,
                "rescored": self.rescored, "output": self.output, "elapsed_s": round(self.elapsed_s, 3),
                "images_per_s": self.images_per_s, "warnings": self.warnings}


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


def plan(listed: list[ListedFile], found: Committed) -> tuple[list[ListedFile], set[str]]:
    """(files to score, the paths among them whose old row must go): files OUT lacks, and files
    whose size or modification time differ from those their row was scored at."""
    todo, changed = [], set()
    for item in listed:
        recorded = found.rows.get(item.path)
        if recorded is None:
            todo.append(item)
        elif _changed(item, recorded[0], recorded[1]):
            todo.append(item)
            changed.add(item.path)
    return todo, changed


def _changed(item: ListedFile, size: int | None, mtime_ns: int | None) -> bool:
    """Compares what both sides know: a row from before sizes were recorded, or a listing that
    cannot tell (a URL in a manifest), is taken as unchanged."""
    if item.problem is not None or size is None:
        return False
    return (item.size is not None and item.size != size) or (
        item.mtime_ns is not None and mtime_ns is not None and item.mtime_ns != mtime_ns)


def engine_for(config: RunConfig):
    module, name = ENGINES[config.engine]
    return getattr(importlib.import_module(f".{module}", __package__), name)(config)


def run(config: RunConfig, clock: Callable[[], float] = time.monotonic) -> Summary:
    started = clock()
    found = committed(config.output)
    run_fingerprint = fingerprint.check(config, found.metadata, log.warning)
    listing = list_input(config.input, config.extensions, config.recursive, config.path_column,
                         config.keep_columns)
    listed = in_shard(listing.items, config.shard)
    todo, changed = plan(listed, found)

    def summary(ok: int = 0, errors: int = 0, stopped_by: int | None = None,
                warnings: int | None = 0) -> Summary:
        return Summary(len(listed), ok, errors, len(listed) - len(todo), len(changed), config.output,
                       clock() - started, stopped_by, warnings)

    if not listed:
        log.warning("no files ending in %s under %s", ",".join(config.extensions), config.input)
    if not todo:
        log.info("nothing to score: all %d files are already in %s", len(listed), config.output)
        return summary()

    # TensorFlow is imported only now, so a no-op re-run returns before paying for it.
    engine = engine_for(config)
    scorer, placement = engine.prepare()
    log.info("model %s: %s", config.model, scorer.describe())
    log.info("device %s: %s", placement["device"], placement["threads"])
    for line in scorer.model.library_lines:
        log.debug("while loading the model: %s", line)
    advice = scorer.advice(todo)
    for sentence in advice:
        log.warning("%s", sentence)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    metadata = {"run_id": run_id, **scorer.metadata(), **placement,  # after the checks, which it records
                "shard": f"{config.shard[0]}/{config.shard[1]}", "engine": config.engine,
                "batch_infer_version": __version__, "tensorflow_version": _tensorflow_version(),
                fingerprint.METADATA_KEY: json.dumps(run_fingerprint)}
    load_warnings = len(advice) + len(scorer.model.library_lines)

    local_output = not storage.is_url(config.output)
    if local_output:
        os.makedirs(config.output, exist_ok=True)
    shard = shard_tag(config.shard)
    with output_lock(config.output, shard), StopSignals() as stop:
        if local_output:
            remove_stale_temporaries(config.output, shard)
        found = committed(config.output)  # again under the lock: another run may have finished
        fingerprint.check(config, found.metadata, log.debug)  # warned above already
        todo, changed = plan(listed, found)
        if changed:
            log.info("%d files changed since they were scored; their rows are replaced", len(changed))
            drop_rows(found, changed)
        schema = pa.schema(list(scorer.schema)[:3] + listing.fields + list(scorer.schema)[3:])
        writer = PartWriter(config.output, part_prefix(shard, run_id), schema, metadata,
                            max_rows=config.commit_every, clock=clock)
        progress = Progress(len(todo), config.quiet, clock=clock)
        annotate = listing.annotator(todo)
        ok = errors = 0
        with decoder_lines_logged(config.log_format, config.quiet) as decoder_lines:
            for table in engine.score(todo):
                writer.add(annotate(table))
                failed = table.column("status").to_pylist().count("error")
                ok, errors = ok + table.num_rows - failed, errors + failed
                progress.update(table.num_rows)
                if stop.received is not None:
                    break
        writer.commit()
        progress.close()
        return summary(ok, errors, stop.received,
                       None if decoder_lines.lines is None else decoder_lines.lines + load_warnings)


def _tensorflow_version() -> str:
    from .tf_import import tf

    return tf.__version__
