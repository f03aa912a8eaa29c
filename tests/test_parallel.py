"""Model streams: how the cores are shared, and that streams change no score and no order."""

import threading
import time

import numpy as np

from batch_infer.listing import list_images
from batch_infer.model import load_model
from batch_infer.parallel import ThreadPlan, in_order, plan_for
from batch_infer.decoding import DecodeOptions
from batch_infer.pipeline import batches

DECODING = DecodeOptions(max_pixels=10**8, max_file_mb=64, exif_transpose=True, scaled_decode=True)


def test_cpu_cores_are_shared_by_streams_and_a_gpu_gets_one_stream():
    assert plan_for("cpu", 1) == ThreadPlan(streams=1, intra_op=1, inter_op=2, decode=1)
    assert plan_for("cpu", 2) == ThreadPlan(streams=2, intra_op=1, inter_op=4, decode=2)
    assert plan_for("cpu", 16) == ThreadPlan(streams=4, intra_op=4, inter_op=8, decode=16)
    assert plan_for("gpu", 8) == ThreadPlan(streams=1, intra_op=0, inter_op=0, decode=8)
    assert plan_for("cpu", 2).describe() == "2 model streams of 1 thread, 2 decode threads"


def test_results_come_back_in_input_order_while_calls_overlap():
    running, most = 0, 0
    lock = threading.Lock()

    def slow_square(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (8 - n))  # later items finish first
        with lock:
            running -= 1
        return n * n

    assert list(in_order(slow_square, range(8), 3)) == [(n, n * n) for n in range(8)]
    assert most == 3


def test_streamed_scores_equal_one_call_at_a_time(model_dir, image_dir):
    runner = load_model(model_dir["float"])
    files = list_images(image_dir, ("jpg", "png"))
    decoded = list(batches(files, runner.spec, 2, DECODING))
    assert len(decoded) > 3
    one_at_a_time = [runner.predict(images)["probabilities"] for _, images, _ in decoded]
    streamed = [scores for _, scores in in_order(lambda batch: runner.predict(batch[1])["probabilities"], decoded, 3)]
    assert len(streamed) == len(one_at_a_time)
    for expected, got in zip(one_at_a_time, streamed):
        np.testing.assert_array_equal(got, expected)
