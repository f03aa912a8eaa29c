"""--runtime onnx: the model's call converted once with tf2onnx and run by ONNX Runtime, but only
once it has agreed with TensorFlow on the run's first batch.

ONNX Runtime ran MobileNetV2 on a CPU about 1.9x as fast as TensorFlow, ResNet50 about 1.2x, within
fp32 rounding of TensorFlow's outputs. A converter can still get a model wrong without an error,
so nothing it returns is trusted unchecked: the first batch goes through both, and unless every
output is within TOLERANCE and the top-1 class is the same for every image, the run says so in
one sentence and stays on TensorFlow. So does a model the converter cannot take (encoded-bytes
inputs, ops it has no mapping for, any error at all): a run never fails, and never writes other
numbers, because of the runtime.

A conversion takes seconds for a small model and about half a minute for ResNet50, so it is
cached in the user's cache folder, keyed by everything the converted graph depends on: a nightly
re-run loads the cached file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .fingerprint import model_identity
from .model import Model
from .model_loading import first_line, library_warnings
from .progress import log
from .tf_import import tf

TOLERANCE = 1e-4  # TensorFlow itself is 1e-5 from a float64 evaluation of the same weights
CACHE_ENV = "BATCH_INFER_CACHE_DIR"


def cache_dir() -> str:
    """$BATCH_INFER_CACHE_DIR, else $XDG_CACHE_HOME/batch-infer, else ~/.cache/batch-infer."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "batch-infer")


class OnnxCall:
    """A converted model in one InferenceSession: called like `Model.function` but on numpy,
    from several model streams at once (a session may be run from many threads).

    `intra_op` is the local engine's threads per stream (see `parallel`), so that ONNX Runtime
    splits the cores with the decoders as TensorFlow does; 0 lets it choose."""

    def __init__(self, path: str, intra_op: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [output.name for output in self.session.get_outputs()]

    def __call__(self, fed) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, {self.input: np.asarray(fed)})))


def fed_spec(model: Model) -> tf.TensorSpec:
    """The input as the model is fed in this run: the image size settled, the batch open."""
    from .model import probe_batch

    fed = model.spec.fed(probe_batch(model.spec, 1))
    return tf.TensorSpec([None, *fed.shape[1:]], model.spec.dtype, name=model.input_key)


def cache_key(model: Model, spec: tf.TensorSpec) -> dict[str, str]:
    """What the converted graph depends on: the model's identity, the call (signature, or the
    Keras model with its embedding layer), its input as fed and its outputs, and the converter."""
    import tf2onnx

    return {"model": model_identity(model.path), "call": model.where, "input": f"{spec.name} {spec.dtype.name} "
            f"{spec.shape}", "outputs": ",".join(info.name for info in model.outputs),
            "embedding": str(model.embedding_output), "tf2onnx": tf2onnx.__version__}


def converted(model: Model, spec: tf.TensorSpec) -> tuple[str, bool]:
    """(the ONNX file for the model's call, whether it was in the cache), converting it once."""
    key = cache_key(model, spec)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = os.path.join(cache_dir(), "onnx", f"{name}.onnx")
    if os.path.isfile(path):
        return path, True
    import tf2onnx

    call = tf.function(lambda image: model.function(**{model.input_key: image}), input_signature=[spec])
    with library_warnings():  # what TensorFlow says while the graph is frozen stays off stderr
        proto, _ = tf2onnx.convert.from_function(call, input_signature=[spec])
    # Under a name of its own, then renamed: shards starting together may convert the same model.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), prefix=".", suffix=".tmp", delete=False) as handle:
        handle.write(proto.SerializeToString())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    return path, False


def _version() -> str:
    import onnxruntime

    return onnxruntime.__version__


@dataclass
class Runtime:
    """What --runtime onnx came to for one model: converted (`call`) or why not (`problem`),
    then whether the gate let ONNX Runtime score. `Model.onnx` is set only once it has."""

    call: OnnxCall | None
    problem: str | None = None  # why the run stays on TensorFlow, as a clause
    cached: bool = False
    convert_s: float = 0.0
    max_difference: float | None = None
    used: bool = False

    @classmethod
    def prepare(cls, model: Model, intra_op: int) -> "Runtime":
        """Converts (or finds in the cache) the model's call and opens a session; any failure
        is recorded as the problem, never raised."""
        if model.spec.encoded:
            return cls(None, f"{model.where} takes encoded image bytes and decodes them with TensorFlow "
                             "ops that ONNX has no equivalent for")
        if tf.config.list_logical_devices("GPU"):
            return cls(None, "the model runs on the GPU, and the onnx extra's ONNX Runtime runs on the "
                             "CPU only (use --device cpu to compare)")
        started = time.monotonic()
        try:
            path, cached = converted(model, fed_spec(model))
            return cls(OnnxCall(path, intra_op), cached=cached, convert_s=time.monotonic() - started)
        except Exception as error:  # tf2onnx and onnxruntime raise many types for what they cannot take
            return cls(None, f"{model.where} could not be converted to ONNX ({type(error).__name__}: "
                             f"{first_line(error, 200)})")

    def gate(self, model: Model, batch, top1: Callable[[dict[str, np.ndarray]], np.ndarray] | None) -> str | None:
        """Runs `batch` through both; when ONNX Runtime agrees (every output within TOLERANCE,
        the same top-1 class by `top1` for every image), swaps it in as the model's call and
        logs so. Otherwise returns the sentence the run warns with, and TensorFlow stays."""
        fallback = "; scoring with TensorFlow instead."
        if self.call is None:
            return f"--runtime onnx: {self.problem}{fallback}"
        images = int(batch.shape[0])
        expected = model.predict(batch)
        try:
            got = self.call(model.spec.fed(batch))
        except Exception as error:
            return f"--runtime onnx: ONNX Runtime failed on the first batch ({first_line(error, 200)}){fallback}"
        missing = sorted(set(expected) - set(got))
        if missing:
            return f"--runtime onnx: the converted model lacks the output(s) {', '.join(missing)}{fallback}"
        self.max_difference = max(largest_difference(expected[name], got[name]) for name in expected)
        flipped = 0 if top1 is None else int(np.sum(top1(expected) != top1(got)))
        if not self.max_difference <= TOLERANCE or flipped:
            why = (f"top-1 class differs on {flipped} of {images} images" if flipped
                   else f"outputs differ by up to {self.max_difference:.1e}, more than {TOLERANCE:.0e}")
            return (f"--runtime onnx: ONNX Runtime disagreed with TensorFlow on the first {images} "
                    f"images ({why}){fallback}")
        model.onnx = self.call
        self.used = True
        log.info("runtime onnx (onnxruntime %s): agreed with TensorFlow on the first %d images, max "
                 "difference %.1e; model %s", _version(), images, self.max_difference,
                 "converted from the cache" if self.cached else f"converted in {self.convert_s:.1f} s")
        return None

    def metadata(self) -> dict[str, str]:
        """The runtime that scored, the version, and the gate's measured difference."""
        used = {"runtime": "onnx" if self.used else "tensorflow", "runtime_requested": "onnx"}
        if self.call is not None:
            used["onnxruntime_version"] = _version()
        if self.max_difference is not None:
            used["runtime_max_difference"] = f"{self.max_difference:.3e}"
        return used


def largest_difference(expected: np.ndarray, got: np.ndarray) -> float:
    """The largest absolute difference; infinite when the shapes differ or any value is NaN."""
    if expected.shape != got.shape:
        return float("inf")
    difference = np.abs(expected.astype(np.float64) - got.astype(np.float64))
    return float("inf") if np.isnan(difference).any() else float(difference.max(initial=0.0))
