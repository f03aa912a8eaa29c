"""Python entry points, for notebooks, Airflow @task functions, and code that holds a Ray Dataset.

Each command is a function here: `score` (`run`), `inspect`, `review`, `report` and `export` take
the command's long options as keywords (`_` for `-`), check them with the same option table as
the command line, and return what the command prints as data. A problem the command reports
with exit 2 raises `ConfigError`, whose message is the sentence the command prints; the command
line is these calls plus printing. `score_dataset` scores a Ray Dataset the caller already has
and leaves the rows in Ray. Log lines go to the `batch_infer` logger; configure logging as the
host application does. Nothing heavy is imported until a call needs it, so `import batch_infer`
stays fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .config import ConfigError, RunConfig, apply_preset, build_config, parse_command_options, parse_options

if TYPE_CHECKING:
    import numpy as np

    from .findings import Review


class RunFailed(Exception):
    """The run committed everything it scored but did not succeed. `exit_code` is what
    `batch-infer run` would have returned (3: over --max-error-rate; 130/143: stopped by
    SIGINT/SIGTERM) and `summary` the summary it would have printed."""

    def __init__(self, message: str, summary: dict[str, Any], exit_code: int):
        super().__init__(message)
        self.summary = summary
        self.exit_code = exit_code


def score(model: str, input: str, output: str, **options: Any) -> dict[str, Any]:
    """Scores every image under `input` into the Parquet dataset `output`, as `batch-infer run`.
    Like the command, a second call scores only what `output` lacks.

    Args:
        model: SavedModel directory, or a Keras .keras or .h5 file.
        input: directory of images, an s3://, gs://... URL, or a manifest file.
        output: the Parquet dataset directory (or URL) to write.
        **options: the `run` options with `_` for `-`: top_k=3, shard="0/4", engine="ray".

    Returns:
        The summary line's object: files, ok, errors, skipped, rescored, output, elapsed_s,
        images_per_s.

    Raises:
        ConfigError: a bad option, model or path, before any work (the command's exit 2).
        RunFailed: the error rate exceeded max_error_rate or a signal stopped the run (exit 3,
            130 or 143), so an Airflow task fails as the command would.

    Example:
        summary = batch_infer.score("models/mobilenet", "s3://photos/2024/", "s3://scores/2024/", top_k=3)
    """
    from .runner import run

    config = build_config({"model": model, "input": input, "output": output, **options})
    summary = run(config)
    code, problem = summary.outcome(config.max_error_rate)
    if problem is not None:
        raise RunFailed(problem, summary.as_dict(), code)
    return summary.as_dict()


# Options about the run as a whole, which a Dataset already settles or which need an output.
_RUN_ONLY = ("input", "output", "job", "recursive", "extensions", "shard", "max_error_rate",
             "path_column", "keep_columns",
             "commit_every", "max_file_mb", "engine", "ray_address", "quiet", "log_format")


def score_dataset(dataset: Any, model: str, **options: Any) -> Any:
    """Scores a Ray Dataset with columns `bytes` (encoded image files) and `path`, and returns a
    Ray Dataset of rows in the output schema (`path` as given, then status, error, label, score,
    top_k_labels, top_k_indices, top_k_scores, and embedding or output_KEY when asked for): one
    row per input row, bad files as error rows.

    `options` are the model options of `score` (signature, batch_size, top_k, preprocess,
    concurrency, num_gpus, ...). The model is loaded here once to check it, then once per actor;
    it must be at the same path on every node. Nothing runs until the result is consumed.

    Example:
        import ray
        files = ray.data.read_binary_files("s3://photos/2024/", include_paths=True)
        rows = score_dataset(files, "models/mobilenet", batch_size=64, concurrency=4, num_gpus=1)
        rows.write_parquet("s3://scores/2024/")
    """
    from . import ray_engine
    from .scorer import Scorer

    misplaced = sorted(set(options) & set(_RUN_ONLY))
    if misplaced:
        raise ConfigError(f"score_dataset does not take {', '.join(misplaced)}: the Dataset "
                          "decides what is read and the caller where rows go; use score() for a "
                          "whole run.")
    # No input or output: the Dataset brings the bytes and the caller keeps the rows.
    config = RunConfig(model=os.path.abspath(model), input="", output="", **parse_options(options))
    Scorer.load(config)
    ray_engine.connect(config)
    return ray_engine.scored(dataset, config)


def inspect(model: str, **options: Any) -> dict[str, Any]:
    """What a model expects and what `run` would choose, as `batch-infer inspect MODEL --json`.

    Args:
        model: SavedModel directory, or a Keras .keras or .h5 file.
        **options: signature, input_key, output_key, image_size ("HxW"), the preprocessing
            options (preprocess, resize, crop_fraction, interpolation, antialias, preset), and
            labels (a file of class names), and against (a folder with one sub-folder per
            class) with sample (files, default 200); without against, sample may be a folder of
            images on which the pixel scaling is checked as `run` checks its first files.

    Returns:
        The description: signatures, inputs, outputs, and under "run" the choices `run` would
        make; with `against`, instead the ranking of the preprocessings on the labelled sample.

    Raises:
        ConfigError: a bad option, or a model, signature or key that cannot be used.
    """
    from .decode.options import Resize

    given = parse_command_options("inspect", options)
    given.pop("json", None)
    against, sample = given.pop("against", None), given.pop("sample", None)
    chosen = {**vars(RunConfig(model="", input="", output="")), **apply_preset(given)}
    resize = Resize(chosen["resize"], chosen["crop_fraction"], chosen["interpolation"], chosen["antialias"])
    keys = (chosen["signature"], chosen["input_key"], chosen["output_key"], chosen["image_size"])
    if against is not None:
        from .against import compare

        if isinstance(sample, str):
            raise ConfigError(f"--sample with --against is a number of files; got the folder {sample}.")
        return compare(os.path.abspath(model), against, sample or 200, *keys, resize, given.get("labels"))
    if isinstance(sample, int):
        raise ConfigError("--sample N needs --against LABELLED_DIR; without it, --sample takes a folder "
                          "of images to check the pixel scaling on.")
    from .describe import describe

    return describe(os.path.abspath(model), *keys, chosen["preprocess"], resize, chosen["preset"],
                    given.get("labels"), sample if isinstance(sample, str) else None)


def review(out: str, truth: str, output: str | None = None, **options: Any) -> dict[str, Any]:
    """Compares the predictions in OUT with the labels the files already have, as
    `batch-infer review OUT --json`.

    Args:
        out: the output dataset of a run that classified.
        truth: "folder" (the first folder of each path) or "column:NAME" (a kept manifest column).
        output: a directory to write suspects, duplicates, per_class and confusion .parquet to.
        **options: similarity, the cosine similarity at which embeddings are near copies
            (default: from the data); phash_distance, the phash bits at most that differ
            between near copies, or "off" (default: 4).

    Returns:
        The summary: accuracy, matched and unmatched given labels, suspects and duplicate counts.

    Raises:
        ConfigError: OUT has no predictions or no truth column, or no given label matches.
    """
    return reviewed(out, truth=truth, output=output, **options).summary(output)


def reviewed(out: str, **options: Any) -> Review:
    """The `Review` itself, for the command's text form; `review` without the summary."""
    from .findings import Truth, load

    given = parse_command_options("review", options)
    if "truth" not in given:
        raise ConfigError("review needs --truth folder or --truth column:NAME.")
    found = load(out, Truth.parse(given["truth"]), given.get("similarity"), given.get("phash_distance"))
    if given.get("output"):
        found.write(given["output"])
    return found


def report(out: str, html: str, input: str | None = None, truth: str | None = None) -> str:
    """Writes a self-contained HTML page about OUT, as `batch-infer report`.

    Args:
        out: the output dataset of a run.
        html: the HTML file to write.
        input: the run's --input, to embed thumbnails.
        truth: "folder" or "column:NAME", to add the review section.

    Returns:
        The HTML file's absolute path.

    Raises:
        ConfigError: OUT or `input` cannot be read, or the review cannot be made.
    """
    return str(reported(out, html=html, input=input, truth=truth)["report"])


def reported(out: str, **options: Any) -> dict[str, Any]:
    """`report`, returning also the rows, errors and thumbnails the command prints."""
    from .findings import Truth
    from .reporting import write_report

    given = parse_command_options("report", options)
    truth = Truth.parse(given["truth"]) if "truth" in given else None
    return write_report(out, given["html"], given.get("input"), truth)


def export(out: str, format: str, dest: str, **options: Any) -> dict[str, Any]:
    """Writes the ok rows of OUT in the shape another tool wants, as `batch-infer export`.

    Args:
        out: the output dataset of a run.
        format: "csv", "imagefolder" or "label-studio".
        dest: the file to write (csv, label-studio) or a new or empty directory (imagefolder).
        **options: input (the run's --input, for imagefolder), min_score, link ("hardlink" or
            "copy"), image_root (label-studio URL prefix), review (a review directory, to export
            its suspects and duplicates as Label Studio tasks).

    Returns:
        What was written: format, dest, and the counts exported and left out.

    Raises:
        ConfigError: a bad option, a --dest that is in the way, or images not under `input`.
    """
    from .exporting import export as write_export

    given = parse_command_options("export", {"format": format, "dest": dest, **options})
    return write_export(out, **given)


def load_embeddings(output: str) -> tuple[list[str], np.ndarray]:
    """(paths, matrix) of every row of OUT that has an embedding: `matrix` is one contiguous
    float32 [rows, D] array whose row i belongs to paths[i]; error rows are left out.

    The column's values are read once into Arrow and the matrix is a view of them, without a
    Python loop over rows.

    Example:
        paths, vectors = load_embeddings("out/photos")
        nearest = np.argsort(-(vectors @ vectors[0]))[:10]
    """
    import pyarrow.compute as pc

    from .output import part_files, read_parts

    parts, filesystem = part_files(output)
    if parts:
        import pyarrow.parquet as pq

        if "embedding" not in pq.read_schema(parts[0], filesystem=filesystem).names:
            raise ConfigError(f"{output} has no embedding column; score it with --task embed, "
                              "--embedding-key or --embedding-layer.")
    table, _ = read_parts(output, ["path", "embedding"])
    table = table.filter(pc.is_valid(table.column("embedding")))
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    matrix = column.flatten().to_numpy(zero_copy_only=True).reshape(-1, dim)
    return table.column("path").to_pylist(), matrix
