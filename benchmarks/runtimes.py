"""TensorFlow against ONNX Runtime (`--runtime onnx`), side by side in one run, per model family:
MobileNetV2 (depthwise), EfficientNetB0, ResNet50, each `keras.applications.*(weights=None)`
exported with `model.export` (random weights: speed does not depend on them).

- model limit: plain calls on one pre-decoded batch of 32 (seeded random pixels, scaled as `run`
  scales them), each runtime with its default threads in this process: TensorFlow calls the
  signature `run` calls, ONNX Runtime the conversion `run` makes (cached as `run` caches it);
  the runtimes take turns, `--rounds` rounds of `--batches` batches each, and each figure is the
  median of its rounds;
- gate: the largest absolute difference between the two runtimes' outputs on that batch, and
  whether the top-1 class agrees on every image (what `run`'s gate checks on its first batch);
- end to end: `batch-infer run` on the photos corpus with `--runtime tensorflow` and `--runtime
  onnx`, start-up cancelled by timing the `a` half and the whole corpus back to back, the two
  runtimes taking turns, median of `--pairs` pairs; with the runtime that actually scored (the
  gate may keep TensorFlow) and the share of files whose top-k is identical in the two outputs.

Prints the load average before and after each model, and leaves the ratios out when it was
above bench.py's QUIET_LOAD before one (after its own last model faded, see bench.settled_load),
unless --busy-ok.

    python benchmarks/runtimes.py [--models mobilenet_v2,efficientnet_b0,resnet50] [--quick]

`--quick` checks that it all works in a few minutes: MobileNetV2 only, two rounds of two batches,
one end-to-end pair on the photos corpus once over (not four times).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import corpora  # noqa: E402
from bench import QUIET_LOAD, settled_load  # noqa: E402

BATCH = 32
FAMILIES = {"mobilenet_v2": "MobileNetV2", "efficientnet_b0": "EfficientNetB0", "resnet50": "ResNet50"}
COPIES = 4  # the photos corpus 4 times over (hard links), as bench.py runs it end to end
# Conversions are cached where `run` looks for them, beside the corpora unless the caller says.
os.environ.setdefault("BATCH_INFER_CACHE_DIR", os.path.join(corpora.ROOT, "cache"))


def make_family(name: str) -> str:
    """The family's SavedModel under benchmarks/corpora/runtime_NAME, made once.

    With random weights and fresh batch-norm statistics every image comes out as the same
    uniform 1/1000, so the gate would compare constants: the statistics are first set from one
    batch of seeded random images (momentum 0), which makes the outputs differ by image."""
    path = os.path.join(corpora.ROOT, f"runtime_{name}")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        import keras

        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, FAMILIES[name])(weights=None)
        module = {"mobilenet_v2": "mobilenet_v2", "efficientnet_b0": "efficientnet", "resnet50": "resnet50"}[name]
        pixels = np.random.default_rng(0).uniform(0, 255, (16, 224, 224, 3)).astype(np.float32)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.0
        model(getattr(keras.applications, module).preprocess_input(pixels), training=True)
        model.export(path, verbose=False)
    return path


def model_limits(path: str, rounds: int, batches: int) -> dict:
    """Images/s of plain calls under each runtime, interleaved, medians; the gate's figures."""
    from batch_infer.model import load_model, probe_batch
    from batch_infer.onnx_runtime import OnnxCall, largest_difference, fed_spec, converted
    from batch_infer.heads import Classification

    model = load_model(path)
    batch = probe_batch(model.spec, BATCH)
    started = time.perf_counter()
    onnx_path, cached = converted(model, fed_spec(model))
    convert_s = time.perf_counter() - started
    onnx = OnnxCall(onnx_path, 0)
    fed = model.spec.fed(batch)
    calls = {"tensorflow": lambda: model.function(**{model.input_key: fed}),
             "onnx": lambda: onnx(fed)}
    for call in calls.values():  # warm-up: the first call of each builds its kernels
        call()
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            begun = time.perf_counter()
            for _ in range(batches):
                call()
            rates[name].append(batches * BATCH / (time.perf_counter() - begun))
    expected, got = model.predict(batch), onnx(fed)
    classes = Classification.for_model(model)
    return {"tensorflow": statistics.median(rates["tensorflow"]), "onnx": statistics.median(rates["onnx"]),
            "max_difference": max(largest_difference(expected[key], got[key]) for key in expected),
            "top1_same": bool((classes.scores(expected).argmax(1) == classes.scores(got).argmax(1)).all()),
            "convert_s": None if cached else convert_s}


def top_k_agreement(left: str, right: str) -> float:
    import pyarrow.dataset as ds

    def by_path(output: str) -> dict:
        table = ds.dataset(output, format="parquet").to_table(columns=["path", "top_k_indices"])
        return dict(zip(table.column("path").to_pylist(), table.column("top_k_indices").to_pylist()))

    a, b = by_path(left), by_path(right)
    return sum(a[path] == b.get(path) for path in a) / len(a)


def end_to_end(path: str, folder: str, pairs: int) -> dict:
    """Marginal images/s of each runtime on the photos, taking turns; the runtime that scored."""
    import pyarrow.dataset as ds

    marginals: dict[str, list[float]] = {"tensorflow": [], "onnx": []}
    kept = tempfile.mkdtemp(prefix="bench-runtimes-")
    outputs = {}
    for pair in range(pairs):
        for runtime in marginals:
            extra = ["--runtime", runtime]
            half_s, half, _ = corpora.timed_run(path, os.path.join(folder, "a"), extra, BATCH)
            output = os.path.join(kept, f"{runtime}-{pair}")
            full_s, full, _ = corpora.timed_run(path, folder, extra, BATCH, output=output)
            assert full["errors"] == 0 and full["ok"] == full["files"], full
            marginals[runtime].append((full["files"] - half["files"]) / (full_s - half_s))
            outputs[runtime] = output
    used = ds.dataset(outputs["onnx"], format="parquet").schema.metadata[b"batch_infer.runtime"].decode()
    return {"tensorflow": statistics.median(marginals["tensorflow"]), "onnx": statistics.median(marginals["onnx"]),
            "scored_by": used, "top_k_same": top_k_agreement(outputs["tensorflow"], outputs["onnx"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(FAMILIES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the model limit (default: 5)")
    parser.add_argument("--batches", type=int, default=10, help="batches per round (default: 10)")
    parser.add_argument("--pairs", type=int, default=3, help="end-to-end pairs per runtime (default: 3)")
    parser.add_argument("--busy-ok", action="store_true",
                        help=f"print the ratios even when the load average was above {QUIET_LOAD}")
    parser.add_argument("--quick", action="store_true", help="MobileNetV2, 2 rounds of 2 batches, one pair "
                        "on the photos once over: checks that it works, measures nothing")
    args = parser.parse_args()
    names, copies = args.models.split(","), COPIES
    if args.quick:
        names, args.rounds, args.batches, args.pairs, copies = ["mobilenet_v2"], 2, 2, 1, 1
    from batch_infer.tf_import import tf

    photos = corpora.make_corpus("photos", tf)
    folder = corpora.repeated(photos, copies) if copies > 1 else photos
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
          f"batch size {BATCH}, photos x{copies}", flush=True)
    rows, busiest = [], 0.0
    for name in names:
        before = settled_load()
        path = make_family(name)
        limits = model_limits(path, args.rounds, args.batches)
        e2e = end_to_end(path, folder, args.pairs)
        after = os.getloadavg()[0]
        busiest = max(busiest, before)
        print(f"{name}: load average {before:.2f} before, {after:.2f} after", file=sys.stderr, flush=True)
        rows.append({"model": FAMILIES[name], "limit TF": f"{limits['tensorflow']:.1f}",
                     "limit ONNX": f"{limits['onnx']:.1f}", "limit ONNX/TF": f"{limits['onnx'] / limits['tensorflow']:.2f}x",
                     "gate max diff": f"{limits['max_difference']:.1e}", "top-1 same": "yes" if limits["top1_same"] else "NO",
                     "convert s": "cached" if limits["convert_s"] is None else f"{limits['convert_s']:.1f}",
                     "photos TF": f"{e2e['tensorflow']:.1f}", "photos --runtime onnx": f"{e2e['onnx']:.1f}",
                     "photos ONNX/TF": f"{e2e['onnx'] / e2e['tensorflow']:.2f}x", "scored by": e2e["scored_by"],
                     "top-k same": f"{e2e['top_k_same']:.2%}", "load before / after": f"{before:.2f} / {after:.2f}"})
    busy = busiest > QUIET_LOAD and not args.busy_ok
    header = [key for key in rows[0] if not (busy and key.endswith("ONNX/TF"))]
    print("\nimages/s:\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row[key] for key in header) + " |")
    if busy:
        print(f"\nratios left out: the load average was {busiest:.2f} before a model, above {QUIET_LOAD}; other work "
              "was running, which hides real gaps. Run again on a quiet machine, or pass --busy-ok.")


if __name__ == "__main__":
    main()
