"""--engine ray: the same run on a Ray cluster, for more cores, machines or GPUs than one process.

Ray reads the files with `read_binary_files`, which hands over bytes and leaves judging them to
us (`read_images` stops the job at the first bad file, or silently drops whole blocks). Actors
that each load the model once decode those bytes with the local engine's `decoding.decode` and
call the signature through the same `Scorer` as the local engine, so a bad file gives the same
error row on either engine. The rows come back to the driver and go through the same
`PartWriter` as locally: the same schema and metadata, atomic parts, commit cadence and signal
handling. A row is about 200 bytes (5 KiB more with a 1,280-d embedding) against the tens of
kilobytes of its image, so the driver is never what limits a run.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa

from . import storage
from .config import ConfigError, RunConfig
from .listing import ListedFile


def connect(config: RunConfig) -> None:
    """Joins the cluster at --ray-address (or $RAY_ADDRESS, which `ray job submit` sets), else
    starts a Ray on this machine for this run; then checks the cluster can hold the actors.

    Must run before the run's signal handlers are installed: ray.init installs its own for
    SIGTERM.
    """
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        address = config.ray_address or os.environ.get("RAY_ADDRESS")
        extra = {} if address else {"include_dashboard": False}
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **extra)
        except ConnectionError as error:
            raise ConfigError(f"Could not connect to Ray at {address} ({error}); check --ray-address "
                              "(ray://HOST:10001 or HOST:6379) and that the cluster is up.") from None
    DataContext.get_current().enable_progress_bars = False  # our progress line counts rows, not blocks
    if config.quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    check_resources(ray.cluster_resources(), config.concurrency, config.num_gpus)


def check_resources(resources: dict[str, float], concurrency: int, num_gpus: float) -> None:
    """Refuses, before any work, a run the cluster cannot place: Ray would wait forever.

    Each actor takes one CPU, and reading files needs one more; with every CPU held by an actor
    the read tasks never start and the run hangs without a word.
    """
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if concurrency + 1 > cpus:
        raise ConfigError(f"--concurrency {concurrency} needs {concurrency + 1} CPUs on the Ray cluster "
                          f"(one per model actor, one for reading files) but it has {cpus:g}; "
                          "lower --concurrency or add nodes.")
    if concurrency * num_gpus > gpus:
        raise ConfigError(f"--concurrency {concurrency} with --num-gpus {num_gpus:g} needs "
                          f"{concurrency * num_gpus:g} GPUs on the Ray cluster but it has {gpus:g}; "
                          "lower --concurrency or --num-gpus, or add GPU nodes.")


class RayEngine:
    def __init__(self, config: RunConfig):
        self.config = config

    def prepare(self):
        """Joins the cluster first (it may refuse the run, and ray.init installs signal handlers),
        then loads the model here on the CPU to check it and to diagnose files; the actors score."""
        from .model import configure_device
        from .scorer import Scorer

        connect(self.config)
        configure_device("cpu")
        self.scorer = Scorer.load(self.config)
        return self.scorer, {"device": "gpu" if self.config.num_gpus else "cpu",
                             "threads": "one model per Ray actor"}

    def score(self, todo: list[ListedFile]):
        """Rows for every file of `todo`, in tables as the actors return them.

        As locally, files the listing refused or over --max-file-mb get their error rows here,
        unread. Ray leaves out files that vanished since the listing (ignore_missing_paths) and
        they get read errors at the end, so every listed file still has exactly one row.
        """
        refused, readable = self.scorer.triage(todo)
        yield refused
        fs = storage.filesystem(self.config.input)[0] if storage.is_url(self.config.input) else None
        unnamed: list[str] = []
        locations: dict[str, str] = {}  # where Ray reads the file: path
        for item in readable:
            location = _location(item, fs)
            if location is None:
                unnamed.append(item.path)
            else:
                locations[location] = item.path
        yield self.scorer.error_rows(unnamed, ["read: the file name is not UTF-8, which Ray cannot open"]
                                     * len(unnamed))
        if locations:
            rows = scored(_read(list(locations), fs), self.config)
            for table in rows.iter_batches(batch_format="pyarrow", batch_size=None):
                paths = [locations.pop(location) for location in table.column("path").to_pylist()]
                yield table.set_column(0, "path", pa.array(paths, pa.string()))
        vanished = list(locations.values())
        yield self.scorer.error_rows(vanished, ["read: the file disappeared after it was listed"] * len(vanished))


def _location(item: ListedFile, fs) -> str | None:
    """The file as Ray's reader names it (and gives it back in the `path` column): the local
    path, or the object's path within its file system; None for a name that is not UTF-8."""
    try:
        location = item.fs_path.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return fs._strip_protocol(location) if fs is not None else location


def _read(locations: list[str], fs):
    """A Dataset of `bytes` and `path`; object stores through the same fsspec file system (and
    so the same credentials) as the listing."""
    import pyarrow.fs
    from ray.data import read_binary_files

    filesystem = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)) if fs is not None else None
    return read_binary_files(locations, include_paths=True, filesystem=filesystem,
                             ignore_missing_paths=True)


def scored(files, config: RunConfig):
    """Rows in the output schema for a Dataset with columns `bytes` and `path`, from
    `config.concurrency` actors holding the model, with `config.num_gpus` GPUs each."""
    from ray.data import ActorPoolStrategy

    return files.map_batches(Actor, fn_constructor_args=(config,), batch_size=config.batch_size,
                             batch_format="numpy", num_cpus=1, num_gpus=config.num_gpus,
                             compute=ActorPoolStrategy(size=config.concurrency))


class Actor:
    """One per Ray actor: loads the model once, then decodes and scores batches of files with
    the same `Scorer` as the local engine, so a file gives the same row on either engine."""

    def __init__(self, config: RunConfig):
        from .model import configure_device
        from .pipeline import BytesDecoder
        from .scorer import Scorer

        configure_device(config.device if config.num_gpus else "cpu")
        self.scorer = Scorer.load(config)
        self.decode = BytesDecoder(self.scorer.model.spec, self.scorer.decoding)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        data = list(batch["bytes"])
        items = [ListedFile(str(path), str(path).encode()) for path in batch["path"]]
        decoded, images = self.decode(data)
        return self.scorer.rows(items, decoded, images, data)
