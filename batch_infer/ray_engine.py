"""--engine ray: the same run on a Ray cluster, for more cores, machines or GPUs than one process.

The driver hands the actors the listed files' paths; each actor, holding the model once, reads
the files itself (a file that cannot be read is an error row, where Ray's `read_binary_files`
would fail the whole job, and `read_images` stop at the first bad file or silently drop whole
blocks), decodes them with the local engine's batch decode and calls the signature through
the same `Scorer` as the local engine, so a bad file gives the same error row on either engine.
Files in object storage are read with the same client libraries, and credentials, as the
listing: on a cluster the workers need them too. The rows come back to the driver and go through the same
`PartWriter` as locally: the same schema and metadata, atomic parts, commit cadence and signal
handling. A row is about 200 bytes (5 KiB more with a 1,280-d embedding) against the tens of
kilobytes of its image, so the driver is never what limits a run.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import replace

import numpy as np
import pyarrow as pa

from . import parallel
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
        if address and address != "auto":
            check_reachable(address)
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


CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str) -> None:
    """Refuses at once an address nothing listens on: ray.init retries such an address for
    minutes before it gives up."""
    host_port = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    default_port = 10001 if address.startswith("ray://") else 6379
    try:
        socket.create_connection((host or host_port, int(port) if port.isdigit() else default_port),
                                 timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as error:
        raise ConfigError(f"Could not connect to Ray at {address} ({getattr(error, 'strerror', None) or error}); "
                          "check --ray-address (ray://HOST:10001 or HOST:6379) and that the cluster "
                          "is up.") from None


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
        unread. The actors read the rest themselves, so a file that is forbidden or vanished
        since the listing is a `read:` error row, as on the local engine, not a failed job.
        """
        import ray.data

        refused, readable = self.scorer.triage(todo)
        yield refused
        if readable:
            files = ray.data.from_items([{"path": item.path, "fs_path": item.fs_path} for item in readable])
            # A runtime that failed the gate here is not tried again on the actors.
            config = replace(self.config, runtime="onnx" if self.scorer.model.onnx is not None else "tensorflow")
            yield from scored(files, config).iter_batches(batch_format="pyarrow", batch_size=None)


# Ray calls an actor with one batch at a time, and its streams wait for the slowest at the end of
# each call. With one model batch a call, that and Ray's own cost per call took about a third of
# the local engine's throughput on photos (2 cores); with 16 about a tenth. The actor reads its
# files one model batch at a time, so a call holds no more images than the local engine does.
BATCHES_PER_CALL = 16


def scored(files, config: RunConfig):
    """Rows in the output schema for a Dataset with columns `path` and either `bytes` (the
    files' contents) or `fs_path` (where to read them), from `config.concurrency` actors holding
    the model, with `config.num_gpus` GPUs each. Each call hands an actor BATCHES_PER_CALL model
    batches, which its streams score side by side (see `Actor`)."""
    from ray.data import ActorPoolStrategy

    return files.map_batches(Actor, fn_constructor_args=(config,), batch_size=config.batch_size * BATCHES_PER_CALL,
                             batch_format="numpy", num_cpus=1, num_gpus=config.num_gpus,
                             compute=ActorPoolStrategy(size=config.concurrency))


class Actor:
    """One per Ray actor: loads the model once, then decodes and scores batches of files with
    the same `Scorer` as the local engine, so a file gives the same row on either engine.

    TensorFlow's thread pools follow the local engine's plan (`parallel`) for this actor's share
    of its machine's cores, the actors of a run sharing them evenly: with TensorFlow's defaults
    every actor would split each op over all of them. As locally, the plan's streams score
    model batches side by side, here the BATCHES_PER_CALL of each call: one model batch alone
    would leave idle the cores that the plan gives the other streams."""

    def __init__(self, config: RunConfig):
        from .model import configure_device
        from .decode.pipeline import BytesDecoder
        from .scorer import Scorer

        device = configure_device(config.device if config.num_gpus else "cpu")
        self.threads = parallel.configure(device, max(1, parallel.usable_cores() // config.concurrency))
        self.scorer = Scorer.load(config, self.threads)
        gated = self.scorer.gate_runtime([])  # on the probe images: the driver gated on the run's own
        if gated is not None:
            logging.getLogger("batch_infer").warning("%s", gated)
        self.decode = BytesDecoder(self.scorer.model.spec, self.scorer.decoding, self.threads.decode)
        self.batch_size = config.batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Rows for the files of `batch` (up to BATCHES_PER_CALL model batches), in its order."""
        locations = batch.get("fs_path", batch["path"])
        items = [ListedFile(str(path), location if isinstance(location, bytes) else str(location).encode())
                 for path, location in zip(batch["path"], locations)]
        contents = list(batch["bytes"]) if "bytes" in batch else None

        def rows(start: int) -> pa.Table:
            end = start + self.batch_size
            return self._rows(items[start:end], None if contents is None else contents[start:end])

        return pa.concat_tables(table for _, table in parallel.in_order(
            rows, range(0, len(items), self.batch_size), self.threads.streams))

    def _rows(self, items: list[ListedFile], contents: list[bytes] | None) -> pa.Table:
        """One model batch: its files read here unless their bytes came with them."""
        data = contents if contents is not None else self.decode.read(items)
        return self.scorer.rows(items, self.decode.readable(data), data)

