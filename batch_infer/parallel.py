"""How a run shares the CPU cores between decoding and the model.

With TensorFlow's default threads, one model call splits every op across all cores and waits for
the slowest part, so a core that is also decoding an image stalls the whole model; and splitting
ops costs CPU of its own (two threads spent a quarter more per image than one). Instead the
model runs as a few streams: batches in flight at once, each op on fewer threads, as CPU
inference servers do in their throughput modes. On two cores, two single-thread streams ran
MobileNetV2 about 1.3x faster than one call on two threads, and decoding fits in between
without stalling anyone.

Decoding gets a fixed pool of one thread per core, each batch of files on one thread, and no
tf.data autotuning: under a busy model the autotuner starved the decoder, and at the end of the
input it sometimes held the iterator for ten seconds.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, TypeVar

from .progress import log

MAX_STREAMS = 4  # more batches in flight only cost memory: each stream holds a batch's activations

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class ThreadPlan:
    streams: int  # model calls in flight at once
    intra_op: int  # threads that share one model op; 0 lets TensorFlow choose
    inter_op: int  # threads that run ops side by side; 0 lets TensorFlow choose
    decode: int  # tf.data threads that read and decode files, one batch each

    def describe(self) -> str:
        """As the log and the `threads` metadata say it: "2 model streams of 1 thread, ..."."""
        def count(number: int, noun: str) -> str:
            return f"{number} {noun}{'' if number == 1 else 's'}"

        threads = count(self.intra_op, "thread") if self.intra_op else "default threads"
        return f"{count(self.streams, 'model stream')} of {threads}, {count(self.decode, 'decode thread')}"


def usable_cores() -> int:
    """The cores this process may run on (taskset and cpusets count; os.cpu_count() does not)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plan_for(device: str, cores: int) -> ThreadPlan:
    """On a GPU one stream feeds the model and every core decodes; on a CPU, up to MAX_STREAMS
    streams share the cores evenly."""
    if device == "gpu":
        return ThreadPlan(streams=1, intra_op=0, inter_op=0, decode=cores)
    streams = max(1, min(cores, MAX_STREAMS))
    return ThreadPlan(streams, intra_op=max(1, cores // streams), inter_op=2 * streams, decode=cores)


def configure(device: str, cores: int | None = None) -> ThreadPlan:
    """The plan for `device` on this machine (or on `cores` of it), with TensorFlow's thread
    pools set to match.

    The pools can only be set before TensorFlow runs its first op; a host program that already
    has (the Python API, the tests) keeps its pools, the streams share them, and the plan
    returned says so.
    """
    from .tf_import import tf  # here, so that a run with nothing to score never imports it

    plan = plan_for(device, cores or usable_cores())
    try:
        tf.config.threading.set_intra_op_parallelism_threads(plan.intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(plan.inter_op)
    except RuntimeError:
        log.debug("TensorFlow's thread pools are already fixed; the model streams share them")
    return replace(plan, intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
                   inter_op=tf.config.threading.get_inter_op_parallelism_threads())


def in_order(function: Callable[[Item], Result], items: Iterable[Item],
             width: int) -> Iterator[tuple[Item, Result]]:
    """(item, function(item)) for every item, in the order of `items`, with up to `width` calls
    running at once on threads (TensorFlow, and reads from object storage, release the GIL).
    Closing the iterator early waits for the calls in flight and drops their results."""
    with ThreadPoolExecutor(width) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(function, item)))
            if len(pending) >= width:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
