"""Python entry points, for notebooks, Airflow @task functions, and code that holds a Ray Dataset.

`score` is `batch-infer run` as a function: the same options (keyword arguments named as in a job
file), the same checks, resume and output, and the summary line as a dict. `score_dataset` scores
a Ray Dataset the caller already has and leaves the rows in Ray, for pipelines that go on there.
Log lines go to the `batch_infer` logger; configure logging as the host application does.
"""

from __future__ import annotations

import os

import numpy as np

from .config import ConfigError, RunConfig, build_config, parse_options


class RunFailed(Exception):
    """The run committed everything it scored but did not succeed. `exit_code` is what
    `batch-infer run` would have returned (3: over --max-error-rate; 130/143: stopped by
    SIGINT/SIGTERM) and `summary` the summary it would have printed."""

    def __init__(self, message: str, summary: dict, exit_code: int):
        super().__init__(message)
        self.summary = summary
        self.exit_code = exit_code


def score(model: str, input: str, output: str, **options) -> dict:
    """Scores every image under `input` into the Parquet dataset `output` and returns the summary
    (files, ok, errors, skipped, rescored, output, elapsed_s, images_per_s).

    `options` are the `run` options with `_` for `-`: top_k=3, shard="0/4", engine="ray",
    concurrency=4. Paths may be local or s3://, gs://... URLs. Like the command, a second call
    scores only what `output` lacks.

    Raises ConfigError for a bad option, model or path, before any work (the command's exit 2),
    and RunFailed when the error rate exceeds max_error_rate or a signal stopped the run (exit 3,
    130 or 143), so an Airflow task fails as the command would.

    Example:
        from batch_infer.api import score
        summary = score("models/mobilenet", "s3://photos/2024/", "s3://scores/2024/", top_k=3)
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


def score_dataset(dataset, model: str, **options):
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
