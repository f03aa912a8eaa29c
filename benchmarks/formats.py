"""How batch-infer does on an outside corpus of image files, as a new user would try it.

    python benchmarks/formats.py DIR [--timeout-s 1200]

For instance DIR = Tests/images of a checkout of python-pillow/Pillow (hundreds of odd files
that Pillow's own tests use; not vendored here). Runs `batch-infer run` over every JPEG, PNG,
GIF, BMP, WebP and TIFF file under DIR with a model that returns its 16x16 input, then compares
each ok row's model input with Pillow's upright image (`exif_transpose(...).convert("RGB")`,
resized the same way; images of more than 8 bits a sample by their numbers (mapped linearly by
the README's rule, so the correlation is the one with the numbers) and a GIF's transparent
pixels black, as batch-infer gives them, and also without those two rules). Prints one JSON object: the share of
files Pillow loads fully that became ok rows whose thumbnail correlates at least 0.9 with
Pillow's, whether every other file is exactly one error row, bare decoder lines on stderr, the
run's peak RSS and time, and the files that disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")
SIZE = 16
THRESHOLD = 0.9


def echo_model(path: str) -> str:
    from batch_infer.tf_import import tf

    module = tf.Module()
    function = tf.function(lambda images: {"pixels": tf.reshape(images / 255.0, (-1, SIZE * SIZE * 3))},
                           input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    tf.saved_model.save(module, path, signatures={"serving_default": function})
    return path


def pillow_thumbnail(path: str, viewer_rules: bool) -> np.ndarray | None:
    """Pillow's upright first frame at 16x16, or None when Pillow does not load it fully."""
    from PIL import Image, ImageOps

    from batch_infer.decode.pillow import high_bit_depth
    from batch_infer.tf_import import tf

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                image.load()
                transparent = image.info.get("transparency") if image.format == "GIF" else None
                upright = ImageOps.exif_transpose(image)
                if viewer_rules and (upright.mode.startswith("I") or upright.mode == "F"):
                    gray = high_bit_depth(np.asarray(upright))  # linear in the numbers
                    pixels = np.repeat(gray[..., None], 3, axis=2)
                else:
                    pixels = np.asarray(upright.convert("RGB"))
                    if viewer_rules and transparent is not None and upright.mode in ("P", "L"):
                        pixels = np.where((np.asarray(upright) == transparent)[..., None], 0, pixels)
    except Exception:
        return None
    if pixels.shape[:2] == (SIZE, SIZE):
        return pixels.astype(np.float32)
    return tf.image.resize(pixels, (SIZE, SIZE), antialias=True).numpy()


def agree(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() < 1e-6 or b.std() < 1e-6:  # flat images: correlation is undefined, compare levels
        return bool(np.abs(a - b).mean() < 8)
    return bool(np.corrcoef(a, b)[0, 1] >= THRESHOLD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--timeout-s", type=float, default=1200)
    args = parser.parse_args()
    import pyarrow.dataset as ds

    work = tempfile.mkdtemp(prefix="formats-")
    model = echo_model(os.path.join(work, "model"))
    output = os.path.join(work, "out")
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "batch_infer", "run", "--model", model, "--input", args.folder,
                          "--output", output, "--top-k", str(SIZE * SIZE * 3), "--extensions", ",".join(EXTENSIONS)],
                         cwd=REPO, capture_output=True, text=True, timeout=args.timeout_s)
    elapsed = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    from batch_infer.native_stderr import DECODER_LINE

    bare = [line for line in run.stderr.splitlines() if re.match(DECODER_LINE, line)]
    rows = ds.dataset(output).to_table().to_pylist()
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    listed = sorted(os.path.relpath(os.path.join(d, f), args.folder).replace(os.sep, "/")
                    for d, _, names in os.walk(args.folder) for f in names
                    if f.lower().endswith(tuple("." + e for e in EXTENSIONS)))
    loads, matched, matched_plain, disagree, not_loaded_ok = 0, 0, 0, [], 0
    for path in listed:
        full = os.path.join(args.folder, path)
        reference, plain = pillow_thumbnail(full, True), pillow_thumbnail(full, False)
        row = by_path.get(path, [{}])[0]
        if reference is None:
            not_loaded_ok += row.get("status") == "ok"
            continue
        loads += 1
        if row.get("status") != "ok":
            disagree.append((path, row.get("error")))
            continue
        flat = np.zeros(SIZE * SIZE * 3, np.float32)
        flat[np.asarray(row["top_k_labels"], int)] = row["top_k_scores"]
        pixels = flat.reshape(SIZE, SIZE, 3) * 255.0
        if agree(pixels, reference):
            matched += 1
        else:
            disagree.append((path, f"pixels differ ({row['decoder']})"))
        matched_plain += agree(pixels, plain)
    decoders: dict[str, int] = {}
    for row in rows:
        decoders[row["decoder"] or "error"] = decoders.get(row["decoder"] or "error", 0) + 1
    print(json.dumps({
        "files": len(listed), "rows": len(rows), "exit_code": run.returncode,
        "one_row_each": sorted(by_path) == listed and all(len(v) == 1 for v in by_path.values()),
        "pillow_loads_fully": loads, "ok_and_matching": matched,
        "agreement": round(matched / max(loads, 1), 4),
        "agreement_plain_convert_rgb": round(matched_plain / max(loads, 1), 4),
        "ok_though_pillow_fails": not_loaded_ok, "rows_by_decoder": decoders,
        "bare_decoder_lines_on_stderr": len(bare), "bare_lines": bare[:10],
        "other_stderr_lines": [line for line in run.stderr.splitlines()
                               if not line.startswith("batch-infer: ")][:10],
        "summary": json.loads(run.stdout.strip().splitlines()[-1]),
        "elapsed_s": round(elapsed, 1), "peak_rss_mb": round(peak_rss_mb), "disagree": disagree,
    }, indent=1))


if __name__ == "__main__":
    main()
