"""Time and peak RSS of a no-op re-run over a million scored files, and time to first batch.

The corpus is one PNG hard-linked a million times (1,000 folders of 1,000); OUT is made by
scoring the first folder for real, then writing the other rows with that part's schema and
metadata (so the fingerprint matches) and each file's real size and modification time. The
no-op re-run then lists, checks the fingerprint and compares sizes and times of every file.

    python benchmarks/listing_scale.py [--files 1000000]   # a few minutes the first time
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SAMPLE_MODEL = os.path.join(REPO, "sample_data", "digits_model")
PER_FOLDER = 1000
LINKS_PER_SOURCE = 50_000


def make_corpus(root: str, count: int) -> None:
    marker = os.path.join(root, f".complete-{count}")
    if os.path.exists(marker):
        return
    one = os.path.join(REPO, "sample_data", "images", "one")
    with open(os.path.join(one, min(name for name in os.listdir(one) if name.endswith(".png"))), "rb") as handle:
        image = handle.read()
    os.makedirs(os.path.join(root, "sources"), exist_ok=True)
    for i in range(count):
        if i % LINKS_PER_SOURCE == 0:  # file systems cap the links to one file (ext4: 65,000)
            source = os.path.join(root, "sources", f"{i // LINKS_PER_SOURCE}.bin")
            with open(source, "wb") as handle:
                handle.write(image)
        folder = os.path.join(root, "images", f"{i // PER_FOLDER:04d}")
        if i % PER_FOLDER == 0:
            os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, f"{i:07d}.png")
        if not os.path.exists(target):
            os.link(source, target)
    open(marker, "w").close()


# The child reports its own peak RSS, so that earlier children do not count.
CHILD = ("import resource, sys; from batch_infer.cli import main; code = main(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)")


def run(*args: str) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS in MB, summary line) of `batch-infer run ARGS` in a child."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, "run", "--quiet", *args], cwd=REPO,
                            capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    peak_kb = int(result.stderr.strip().splitlines()[-1])
    return wall, peak_kb / 1024, json.loads(result.stdout.strip().splitlines()[-1])


def first_batch_s(corpus: str, output: str) -> float:
    """Seconds from start until the first part of a first run is committed (every 32 rows)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "batch_infer", "run", "--quiet", "--model", SAMPLE_MODEL,
                                "--input", corpus, "--output", output, "--extensions", "png",
                                "--commit-every", "32"], cwd=REPO, stdout=subprocess.DEVNULL)
    while not (os.path.isdir(output) and any(name.startswith("part-") for name in os.listdir(output))):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    process.kill()
    process.wait()
    return elapsed


def make_output(root: str, output: str, count: int) -> None:
    """OUT with a row for every file: folder 0000 scored for real, the rest written alike."""
    if os.path.isdir(output):
        return
    first = os.path.join(os.path.dirname(root), "first")
    os.makedirs(first, exist_ok=True)
    for name in os.listdir(os.path.join(root, "0000")):
        if not os.path.exists(os.path.join(first, name)):
            os.link(os.path.join(root, "0000", name), os.path.join(first, name))
    scored = output + "-first"
    run("--model", SAMPLE_MODEL, "--input", first, "--output", scored)
    [part] = [os.path.join(scored, name) for name in os.listdir(scored) if name.startswith("part-")]
    template = pq.read_table(part)
    row = template.slice(0, 1)
    os.makedirs(output)
    for folder_index in range(count // PER_FOLDER):
        folder = f"{folder_index:04d}"
        names = sorted(os.listdir(os.path.join(root, folder)))
        stats = [os.stat(os.path.join(root, folder, name)) for name in names]
        table = pa.concat_tables([row] * len(names))
        table = table.set_column(0, "path", pa.array([f"{folder}/{name}" for name in names], pa.string()))
        table = table.set_column(table.schema.get_field_index("file_size"), "file_size",
                                 pa.array([info.st_size for info in stats], pa.int64()))
        table = table.set_column(table.schema.get_field_index("file_mtime"), template.schema.field("file_mtime"),
                                 pa.array([info.st_mtime_ns for info in stats], pa.int64()).cast(
                                     template.schema.field("file_mtime").type))
        pq.write_table(table, os.path.join(output, f"part-0of1-synthetic-{folder_index:05d}.parquet"),
                       compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--root", default=os.path.join(HERE, "corpora", "links"))
    args = parser.parse_args()
    make_corpus(args.root, args.files)
    corpus = os.path.join(args.root, "images")
    output = os.path.join(args.root, f"out-{args.files}")
    make_output(corpus, output, args.files)
    common = ("--model", SAMPLE_MODEL, "--input", corpus, "--output", output, "--extensions", "png")
    wall, peak, summary = run(*common)
    assert summary["skipped"] == args.files and summary["ok"] == 0, summary
    fresh = os.path.join(args.root, f"fresh-{time.time_ns()}")
    first = first_batch_s(corpus, fresh)
    shutil.rmtree(fresh)
    print(json.dumps({"files": args.files, "noop_rerun_s": round(wall, 1), "noop_peak_rss_mb": round(peak),
                      "first_run_first_part_s": round(first, 1)}))


if __name__ == "__main__":
    main()
