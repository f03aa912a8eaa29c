"""Model streams and decode batches: how the cores are shared, and that neither streams nor
batches change a score or the order."""

import io
import threading
import time

from support import images
import numpy as np
import pytest

from batch_infer import perceptual
from batch_infer.decode.geometry import to_channels
from batch_infer.decode.graph import decode
from batch_infer.decode.options import DecodeOptions, Resize
from batch_infer.storage import read
from batch_infer.listing import list_images
from batch_infer.model import InputSpec, load_model
from batch_infer.parallel import ThreadPlan, in_order, plan_for
from batch_infer.decode.pipeline import batches
from batch_infer.tf_import import tf

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
    decoded = list(batches(files, runner.spec, 2, DECODING, read_batches=1))
    assert len(decoded) > 3
    one_at_a_time = [runner.predict(images)["probabilities"] for _, images, _ in decoded]
    streamed = [scores for _, scores in in_order(lambda batch: runner.predict(batch[1])["probabilities"], decoded, 3)]
    assert len(streamed) == len(one_at_a_time)
    for expected, got in zip(one_at_a_time, streamed):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("read_batches", [1, 3])
@pytest.mark.parametrize("resize", [Resize(), Resize("crop", 0.875, "bicubic")])
def test_batches_decode_as_each_file_alone_would(tmp_path, resize, read_batches):
    """Batches of one size (resized as one), of one format and of mixed formats and sizes, a
    corrupt file (its batch is done again file by file) and a TIFF (left to Pillow): every file
    that arrives has exactly the model input (and phash thumbnail) of decoding it alone; the
    others leave gaps. Read
    several model batches at a time (as small files are), the corrupt file sends the whole read
    batch down the slow way, and what comes out is still read batches, in order, each file once."""
    from PIL import Image

    names = []
    for i in range(12):  # batches of 4: [png x4 of one size], [jpg x4 of one size], [mixed]
        kind, size = ("png", (40, 30)) if i < 4 else ("jpg", (40, 30)) if i < 8 else (("png", "jpg")[i % 2], (30 + i, 24))
        names.append(images.write_image(tmp_path / f"{i:02d}.{kind}", images.random_pixels(i, *size)))
    (tmp_path / "12.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # corrupt
    Image.fromarray(images.random_pixels(13, 20, 20)).save(tmp_path / "13.png", format="TIFF")
    names.append(images.write_image(tmp_path / "14.png", images.random_pixels(14, 40, 30)))
    files = list_images(str(tmp_path), ("jpg", "png"))
    spec = InputSpec(False, (16, 16), 3, tf.float32, "raw")
    options = DecodeOptions(10**8, 64, exif_transpose=True, scaled_decode=True, resize=resize)
    arrived, thumbnails, order = {}, {}, []
    for indices, images_, facts in batches(files, spec, 4, options, read_batches=read_batches):
        assert 0 < len(indices) <= 4 * read_batches and len(images_) == len(indices)
        order += [int(index) for index in indices]
        arrived.update({int(index): image for index, image in zip(indices, images_.numpy())})
        thumbnails.update(zip(indices.tolist(), facts["thumbnail"]))
    assert order == [i for i in range(15) if i not in (12, 13)]
    for index, image in arrived.items():
        np.testing.assert_array_equal(image, decode(read(files[index].fs_path), spec, options).numpy())
        alone = tf.io.decode_image(read(files[index].fs_path), expand_animations=False)
        np.testing.assert_array_equal(thumbnails[index], perceptual.thumbnails(to_channels(alone, 3)).numpy())


def test_small_files_are_read_several_model_batches_at_a_time_and_photos_one():
    """Thumbnails for a small model fill a read batch with many model batches (fewer graph calls
    a file); photos, or a model input as large as a photo, keep one model batch a read."""
    from batch_infer.listing import ListedFile
    from batch_infer.decode.pipeline import MAX_BATCHES_PER_READ, batches_per_read

    def listing(size):
        return [ListedFile(f"{i}.jpg", b"/%d.jpg" % i, size=size) for i in range(5000)]

    small, large = InputSpec(False, (32, 32), 3, tf.float32, "raw"), InputSpec(False, (512, 512), 3, tf.float32, "raw")
    assert batches_per_read(listing(2_000), small, 32) == MAX_BATCHES_PER_READ
    assert batches_per_read(listing(2_000), small, 256) == 2
    assert batches_per_read(listing(3_000_000), small, 32) == 1
    assert batches_per_read(listing(2_000), large, 32) == 1
    assert batches_per_read([], small, 32) == MAX_BATCHES_PER_READ


def test_a_batch_with_no_file_for_the_graph_decodes_to_nothing_without_failing():
    """A batch of files left to Pillow (or that fail a check) is empty after its headers are
    read; it must not fail, which would send it down the slow way, file by file."""
    from PIL import Image

    from batch_infer.decode.pipeline import BytesDecoder

    tiff = io.BytesIO()
    Image.fromarray(images.random_pixels(1, 20, 20)).save(tiff, format="TIFF")
    decoder = BytesDecoder(InputSpec(False, (16, 16), 3, tf.float32, "raw"),
                           DecodeOptions(10**8, 64, exif_transpose=True, scaled_decode=True))
    positions, inputs, _ = decoder.batch_function(tf.constant([tiff.getvalue(), b"not an image"]))
    assert positions.numpy().tolist() == [] and inputs.shape == (0, 16, 16, 3)


def test_a_batch_with_files_that_fail_to_decode_loses_only_those_files():
    """Files whose header passes but whose data is broken fail the whole batch; it is done again
    in parts, and a part that fails file by file. Three broken files, two of them in one part,
    leave three gaps; every other file has exactly its model input of being decoded alone."""
    from batch_infer.decode.pipeline import BytesDecoder

    spec = InputSpec(False, (16, 16), 3, tf.float32, "raw")
    good = [tf.io.encode_png(images.random_pixels(i, 24, 20)).numpy() if i % 2
            else tf.io.encode_jpeg(images.random_pixels(i, 20, 24)).numpy() for i in range(14)]
    broken = {0, 4, 5}  # 14 files: parts of 3, so 4 and 5 share one, and 0 is in another
    files = [data[:len(data) // 2] if i in broken else data for i, data in enumerate(good)]
    decoder = BytesDecoder(spec, DECODING)
    with pytest.raises(tf.errors.OpError):
        decoder.batch_function(tf.constant(files))
    positions, inputs, facts = decoder.batch(files)
    assert positions.tolist() == [i for i in range(14) if i not in broken]
    for position, image, content_hash in zip(positions, inputs.numpy(), facts["content_hash"]):
        np.testing.assert_array_equal(image, decode(tf.constant(files[position]), spec, DECODING).numpy())
        np.testing.assert_array_equal(content_hash, tf.fingerprint(tf.constant([files[position]]))[0].numpy())


def test_files_in_object_storage_decode_in_batches_as_local_files_do(tmp_path):
    """file:// URLs take the object-store path (read by Python threads, fed to tf.data as bytes):
    the same batches, model inputs and facts as the same files read locally, and a file that
    cannot be read, like one that does not decode, leaves a gap of its own."""
    from batch_infer.listing import ListedFile

    for i in range(9):
        images.write_image(tmp_path / f"{i:02d}.{('png', 'jpg')[i % 2]}", images.random_pixels(i, 30, 20 + i))
    (tmp_path / "07.jpg").write_bytes((tmp_path / "03.jpg").read_bytes()[:300])  # truncated: fails its batch
    spec = InputSpec(False, (16, 16), 3, tf.float32, "raw")
    local = list_images(str(tmp_path), ("jpg", "png"))
    remote = [ListedFile(item.path, b"file://" + item.fs_path) for item in local]
    remote[1] = ListedFile(remote[1].path, b"file://" + bytes(tmp_path / "missing.jpg"))

    def decoded(files):
        return [(int(i), image, content_hash) for indices, batch, facts in batches(files, spec, 4, DECODING)
                for i, image, content_hash in zip(indices, batch.numpy(), facts["content_hash"])]

    expected = {i: rest for i, *rest in decoded(local)}
    arrived = decoded(remote)
    got = {i: rest for i, *rest in arrived}
    assert sorted(expected) == [i for i in range(9) if i != 7]
    assert [i for i, *_ in arrived] == [i for i in range(9) if i not in (1, 7)]  # in order, once each
    for i in got:
        np.testing.assert_array_equal(got[i][0], expected[i][0])
        np.testing.assert_array_equal(got[i][1], expected[i][1])
