"""Side-by-side throughput on one machine, in one run: `make bench` (or python benchmarks/bench.py).

For each corpus (see corpora.py), on the same files and batch size:
- model limit: the signature alone on pre-decoded tensors of the right size, run as batch-infer
  runs it (its thread plan and model streams, see batch_infer/parallel.py);
- model, one call at a time: the same with TensorFlow's default threads and allocator, for
  comparison;
- decode limit: batch-infer's own tf.data read + decode + resize, no model;
- combined limit: 1 / (1/model + 1/decode), both stages sharing the same cores;
- keras: what users write today, image_dataset_from_directory + the signature, with
  TensorFlow's defaults, the median of three passes;
- batch-infer: `batch-infer run` end to end, start-up cancelled by timing N and 2N files (the
  corpus hard-linked 4 times over, so that scoring outweighs start-up's jitter), measured as
  engines.py measures the local engine: the median of three pairs, each timed back to back.
On the camera corpus it also compares scaled JPEG decoding with a full decode + antialiased
resize: the PSNR of the model inputs and the top-1 agreement of the model.
TensorFlow's thread pools are fixed once per process, so the batch-infer settings and the
defaults are measured in separate processes (this script with --stage).
Prints Markdown tables; `--corpora photos,small` picks corpora.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import corpora  # noqa: E402
import engines  # noqa: E402
from batch_infer import parallel  # noqa: E402
from batch_infer.decode.options import DecodeOptions  # noqa: E402
from batch_infer.heads import Classification  # noqa: E402
from batch_infer.listing import list_images  # noqa: E402
from batch_infer.model import load_model  # noqa: E402
from batch_infer.decode.pipeline import batches  # noqa: E402
from batch_infer.tf_import import tf  # noqa: E402

BATCH = 32
DECODING = DecodeOptions(max_pixels=10**8, max_file_mb=512, exif_transpose=True, scaled_decode=True)
SAMPLE_MODEL = os.path.join(REPO, "sample_data", "digits_model")
COPIES = 4  # end-to-end and decode figures run on the corpus 4 times over (hard links)
TF_DEFAULTS = {"TF_CPU_ALLOCATOR_USE_BFC": "false"}  # what a plain TensorFlow program gets
# A busy machine hides real gaps (other jobs slow the Keras pipeline more than batch-infer), so
# ratios taken above this one-minute load average are not printed unless --busy-ok says so.
QUIET_LOAD = 0.5
SETTLE_S = 240  # the longest wait for the bench's own previous corpus to fade from the load


def settled_load() -> float:
    """The one-minute load average once the bench's own last corpus has faded from it (it falls
    by e each minute), or after SETTLE_S: what other work puts on the machine. The load after a
    corpus counts the bench itself (two busy cores read about 2), so only this one is judged."""
    deadline = time.monotonic() + SETTLE_S
    while os.getloadavg()[0] > QUIET_LOAD and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def rate(count: int, seconds: float) -> float:
    return count / seconds


def model_limit(runner, count: int, streams: int) -> float:
    height, width = runner.spec.image_size
    batch = tf.cast(tf.random.uniform((BATCH, height, width, runner.spec.channels), 0, 255, seed=1),
                    runner.spec.dtype)
    for _ in parallel.in_order(runner.predict, [batch] * streams, streams):  # warm-up
        pass
    batches_needed = max(count // BATCH, 3 * streams)

    def seconds() -> float:
        started = time.perf_counter()
        for _ in parallel.in_order(runner.predict, [batch] * batches_needed, streams):
            pass
        return time.perf_counter() - started

    return rate(batches_needed * BATCH, min(seconds() for _ in range(3)))  # best of 3, as for the others


def decode_limit(runner, folder: str, plan: parallel.ThreadPlan) -> float:
    """Images/s of the marginal files, timed in pairs as for the end-to-end figure: each pipeline
    traces `decode` anew, which takes a second or two."""
    def seconds(files) -> float:
        started = time.perf_counter()
        for _ in batches(files, runner.spec, BATCH, DECODING, plan):
            pass
        return time.perf_counter() - started

    files = list_images(folder, ("jpg", "png"))
    half = [item for item in files if item.path.startswith("a/")]

    def marginal_s() -> float:
        half_s = seconds(half)
        return seconds(files) - half_s

    return rate(len(files) - len(half), statistics.median(marginal_s() for _ in range(engines.PAIRS)))


def top_1(model, batch) -> np.ndarray:
    return Classification.for_model(model).scores(model.predict(batch)).argmax(1)


def scaled_decode_fidelity(runner, folder: str) -> tuple[float, float]:
    """(mean PSNR in dB of scaled vs full-decode model inputs, top-1 agreement of the model)."""
    files = list_images(folder, ("jpg",))
    full = DecodeOptions(DECODING.max_pixels, DECODING.max_file_mb, DECODING.exif_transpose, False)
    psnrs, agree = [], 0
    for (_, scaled_batch, _), (_, full_batch, _) in zip(batches(files, runner.spec, BATCH, DECODING),
                                                  batches(files, runner.spec, BATCH, full)):
        a, b = scaled_batch.numpy().astype(np.float64), full_batch.numpy().astype(np.float64)
        mse = np.maximum(((a - b) ** 2).mean(axis=(1, 2, 3)), 1e-12)
        psnrs.extend(10 * np.log10(255.0**2 / mse))
        agree += int((top_1(runner, scaled_batch) == top_1(runner, full_batch)).sum())
    return float(np.mean(psnrs)), agree / len(files)


def keras_pipeline(runner, folder: str, passes: int = 3) -> float:
    """The median of `passes` passes of the loop users write: one pass moved by 2x between runs
    on a shared machine, more than any change to batch-infer moves its own figure."""
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, image_size=runner.spec.image_size, batch_size=BATCH, shuffle=False,
        color_mode="rgb", verbose=False)

    def one_pass() -> float:
        count = 0
        started = time.perf_counter()
        for images in dataset:
            runner.function(**{runner.input_key: images})
            count += int(images.shape[0])
        return rate(count, time.perf_counter() - started)

    return statistics.median(one_pass() for _ in range(passes))


def model_for(name: str) -> str:
    if name == "small":
        return SAMPLE_MODEL
    return corpora.make_small_64() if name == "small-jpeg" else corpora.make_mobilenet()


def stage(kind: str, name: str) -> dict:
    """The measurements of one process: `tuned` as batch-infer sets TensorFlow up, `defaults` as
    a plain TensorFlow program has it."""
    folder = os.path.join(corpora.ROOT, name)
    count = len(list_images(folder, ("jpg", "png")))
    if kind == "defaults":
        runner = load_model(model_for(name))
        return {"model_one_call": model_limit(runner, count, streams=1),
                "keras": keras_pipeline(runner, folder)}
    plan = parallel.configure("cpu")
    runner = load_model(model_for(name))
    result = {"model_limit": model_limit(runner, count, plan.streams),
              "decode_limit": decode_limit(runner, corpora.repeated(folder, COPIES), plan),
              "threads": plan.describe()}
    if name == "camera":
        result["psnr_db"], result["top1_agreement"] = scaled_decode_fidelity(runner, folder)
    return result


def in_process(kind: str, name: str) -> dict:
    environment = {**os.environ, **(TF_DEFAULTS if kind == "defaults" else {})}
    finished = subprocess.run([sys.executable, __file__, "--stage", kind, "--corpora", name],
                              check=True, cwd=REPO, env=environment, stdout=subprocess.PIPE, text=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def measure(name: str, extra: list[str]) -> dict:
    folder = corpora.make_corpus(name, tf)
    model = model_for(name)
    result = {"corpus": name, "files": len(list_images(folder, ("jpg", "png"))),
              "model": os.path.basename(model)}
    result.update(in_process("tuned", name))
    result.update(in_process("defaults", name))
    result["combined_limit"] = 1 / (1 / result["model_limit"] + 1 / result["decode_limit"])
    result["batch_infer"] = engines.measure(model, corpora.repeated(folder, COPIES), False, extra)["marginal"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=",".join(corpora.CORPORA))
    parser.add_argument("--stage", choices=("tuned", "defaults"), help=argparse.SUPPRESS)
    parser.add_argument("--busy-ok", action="store_true",
                        help=f"print the ratios even when the load average was above {QUIET_LOAD}")
    args, extra = parser.parse_known_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.corpora)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
          f"batch size {BATCH}", flush=True)
    header = ("corpus", "files", "model", "model, one call", "model limit", "decode limit",
              "combined limit", "keras", "batch-infer", "vs model", "vs combined", "vs keras")
    rows, fidelity, threads, busiest = [], None, None, 0.0
    for name in args.corpora.split(","):
        before = settled_load()
        r = measure(name, extra)
        after = os.getloadavg()[0]
        busiest = max(busiest, before)
        print(f"{name}: load average {before:.2f} before, {after:.2f} after", file=sys.stderr, flush=True)
        threads = r["threads"]
        if "psnr_db" in r:
            fidelity = r
        rows.append((r["corpus"], r["files"], r["model"], *(f"{r[k]:.1f}" for k in (
            "model_one_call", "model_limit", "decode_limit", "combined_limit", "keras", "batch_infer")),
            f"{r['batch_infer'] / r['model_limit']:.2f}x", f"{r['batch_infer'] / r['combined_limit']:.2f}x",
            f"{r['batch_infer'] / r['keras']:.2f}x", f"{before:.2f} / {after:.2f}"))
    busy = busiest > QUIET_LOAD and not args.busy_ok
    if busy:
        header = header[:9]
        rows = [row[:9] for row in rows]
    else:
        header = (*header, "load before / after")
    print(f"\nimages/s ({threads}):\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    if fidelity:
        print(f"\nscaled JPEG decode on {fidelity['files']} camera photos vs full decode + antialiased "
              f"resize: PSNR {fidelity['psnr_db']:.1f} dB, top-1 agreement {fidelity['top1_agreement']:.1%}")
    if busy:
        print(f"\nratios left out: the load average was {busiest:.2f} before a corpus, above {QUIET_LOAD}; other work "
              "was running, which hides real gaps. Run again on a quiet machine, or pass --busy-ok.")


if __name__ == "__main__":
    main()
