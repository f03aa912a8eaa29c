"""Command line: maps flags to the calls in `api`, prints what they return, and maps outcomes to
the contract's exit codes. Every command is registered the same way, from the option table in
`config`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from . import __version__
from .config import COMMAND_OPTIONS, ConfigError, add_run_arguments, add_options, build_config
from .progress import log, setup_logging

EXIT_OK, EXIT_USAGE = 0, 2
OUT_HELP = "output directory of a batch-infer run"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every error is one sentence."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message[0].upper()}{message[1:]}; see `{self.prog} --help`.")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str  # ends with an example
    handler: Callable[[dict[str, Any]], int]  # the given options (and the positional) to an exit code
    positional: tuple[str, str, str] | None = None  # (name, metavar, help)


def _run(given: dict[str, Any]) -> int:
    config = build_config(given)
    setup_logging(config.log_format, config.quiet)
    from .runner import run

    summary = run(config)
    print(json.dumps(summary.as_dict()), flush=True)
    code, problem = summary.outcome(config.max_error_rate)
    if problem is not None:
        log.warning("%s", problem)
    return code


def _inspect(given: dict[str, Any]) -> int:
    from .api import inspect

    as_json = given.pop("json", False)
    result = inspect(given.pop("model"), **given)
    if as_json:
        print(json.dumps(result, indent=2))
    elif "against" in given:
        from .against import format_comparison

        print(format_comparison(result))
    else:
        from .describe import format_description

        print(format_description(result))
    return EXIT_OK


def _review(given: dict[str, Any]) -> int:
    from .api import reviewed

    as_json = given.pop("json", False)
    found = reviewed(given.pop("out"), **given)
    review_dir = given.get("output")
    print(json.dumps(found.summary(review_dir)) if as_json else found.text(review_dir), flush=True)
    return EXIT_OK


def _report(given: dict[str, Any]) -> int:
    from .api import reported

    print(json.dumps(reported(given.pop("out"), **given)), flush=True)
    return EXIT_OK


def _export(given: dict[str, Any]) -> int:
    from .api import export

    print(json.dumps(export(given.pop("out"), **given)), flush=True)
    return EXIT_OK


COMMANDS = (
    Command("run", "score images into a Parquet dataset",
            "Score every image under --input and write one row per file to --output. "
            "Example: batch-infer run --model model/ --input photos/ --output scores/", _run),
    Command("inspect", "show what a model expects and what run would use",
            "Show every signature of a SavedModel (or a Keras file's input, outputs and the layers "
            "that can serve as embeddings) and what `run` would choose. "
            "Example: batch-infer inspect model/", _inspect,
            ("model", "MODEL", "SavedModel directory, or a Keras .keras or .h5 file")),
    Command("review", "compare predictions with the labels a dataset has: metrics, likely wrong "
            "labels, duplicates",
            "Compare the predictions in OUT with given labels: accuracy, per-class metrics, the "
            "confusion matrix, rows whose label the model doubts, and duplicate groups (exact by "
            "content_hash; near by phash, and by embedding when OUT has one). "
            "Example: batch-infer review scores/ --truth folder --output review/", _review,
            ("out", "OUT", OUT_HELP)),
    Command("report", "write a self-contained HTML report of an output dataset",
            "Summarise OUT in one HTML file that needs no network: run metadata, class "
            "distribution, score histogram, least confident predictions, a sample per class and "
            "the error rows. Example: batch-infer report scores/ --input photos/ --html report.html",
            _report, ("out", "OUT", OUT_HELP)),
    Command("export", "write ok rows as CSV, an image folder per label, or Label Studio tasks",
            "Export the ok rows of OUT for other tools. Example: batch-infer export scores/ "
            "--format imagefolder --input photos/ --dest by_label/ --min-score 0.9", _export,
            ("out", "OUT", OUT_HELP)),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batch-infer", description="Score a directory of images with a "
                     "TensorFlow SavedModel or Keras model and write predictions to Parquet.")
    parser.add_argument("--version", action="version", version=f"batch-infer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description)
        if command.positional is not None:
            name, metavar, help = command.positional
            sub.add_argument(name, metavar=metavar, help=help)
        if command.name == "run":
            add_run_arguments(sub)
        else:
            add_options(sub, COMMAND_OPTIONS[command.name])
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = vars(build_parser().parse_args(argv))
        del args["command"]
        handler: Callable[[dict[str, Any]], int] = args.pop("handler")
        return handler(args)
    except ConfigError as error:
        print(f"batch-infer: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("batch-infer: interrupted before any file was scored.", file=sys.stderr)
        return 130
    except Exception as error:  # a bug or an environment failure: one line, traceback on request
        if os.environ.get("BATCH_INFER_DEBUG"):
            raise
        print(f"batch-infer: unexpected error: {type(error).__name__}: {error} "
              "(set BATCH_INFER_DEBUG=1 to see the traceback).", file=sys.stderr)
        return 1


def console() -> None:
    """The `batch-infer` command: `main`, then an exit that skips the interpreter's teardown,
    which with TensorFlow loaded takes seconds (two under load, most of a SIGTERM's time to exit)
    and has nothing left to do: every part is committed and fsynced, and stdout and stderr are
    flushed here. Ray's exit handler must run, as it stops the processes `ray.init` started."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if "ray" in sys.modules:
        sys.exit(code)
    os._exit(code)
