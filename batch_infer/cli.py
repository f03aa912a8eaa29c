"""Command line: parses options, runs the command, maps outcomes to the contract's exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__, export, report, review
from .config import (PREPROCESSING_OPTIONS, ConfigError, add_options, add_run_arguments, build_config,
                     parse_image_size, parse_options, positive_int)
from .progress import log, setup_logging

EXIT_OK, EXIT_USAGE = 0, 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every error is one sentence."""

    def error(self, message: str):
        raise ConfigError(f"{message[0].upper()}{message[1:]}; see `{self.prog} --help`.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batch-infer", description="Score a directory of images with a "
                     "TensorFlow SavedModel or Keras model and write predictions to Parquet.")
    parser.add_argument("--version", action="version", version=f"batch-infer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run", help="score images into a Parquet dataset",
        description="Score every image under --input and write one row per file to --output. "
                    "Example: batch-infer run --model model/ --input photos/ --output scores/",
    )
    add_run_arguments(run)

    inspect = commands.add_parser(
        "inspect", help="show what a model expects and what run would use",
        description="Show every signature of a SavedModel (or a Keras file's input, outputs and "
                    "the layers that can serve as embeddings) and what `run` would choose. "
                    "Example: batch-infer inspect model/",
    )
    inspect.add_argument("model", metavar="MODEL", help="SavedModel directory, or a Keras .keras or .h5 file")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--signature", default="serving_default", metavar="NAME",
                         help="signature run would call (default: serving_default)")
    inspect.add_argument("--input-key", metavar="KEY", help="input run would feed")
    inspect.add_argument("--output-key", metavar="KEY", help="output run would read")
    inspect.add_argument("--image-size", metavar="HxW", help="size for signatures that leave it open")
    add_options(inspect, PREPROCESSING_OPTIONS)
    inspect.add_argument("--against", metavar="LABELLED_DIR",
                         help="score a sample of LABELLED_DIR (one folder per class, named as the "
                              "model's labels) under each preprocessing that applies, and rank them")
    inspect.add_argument("--sample", metavar="N", default=200,
                         help="files sampled from LABELLED_DIR, spread over the classes (default: 200)")
    review.add_command(commands)
    report.add_command(commands)
    export.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if hasattr(args, "handler"):
            return args.handler(args)
        if args.command == "inspect":
            return _inspect(args)
        return _run(args)
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


def _run(args: argparse.Namespace) -> int:
    given = {name: value for name, value in vars(args).items() if name != "command"}
    config = build_config(given)
    setup_logging(config.log_format, config.quiet)
    from .runner import run

    summary = run(config)
    print(json.dumps(summary.as_dict()), flush=True)
    code, problem = summary.outcome(config.max_error_rate)
    if problem is not None:
        log.warning("%s", problem)
    return code


def _inspect(args: argparse.Namespace) -> int:
    from .decoding import Resize
    from .describe import describe, format_description

    image_size = parse_image_size("image_size", args.image_size) if args.image_size else None
    given = {name: getattr(args, name) for name in PREPROCESSING_OPTIONS if hasattr(args, name)}
    chosen = {**vars(_defaults()), **parse_options(given)}
    resize = Resize(chosen["resize"], chosen["crop_fraction"], chosen["interpolation"], chosen["antialias"])
    if args.against is not None:
        from .against import compare, format_comparison

        sample = positive_int("sample", args.sample)
        result = compare(os.path.abspath(args.model), args.against, sample,
                         args.signature, args.input_key, args.output_key, image_size, resize)
        print(json.dumps(result, indent=2) if args.json else format_comparison(result))
        return EXIT_OK
    info = describe(os.path.abspath(args.model), args.signature, args.input_key, args.output_key,
                    image_size, chosen["preprocess"], resize, chosen["preset"])
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return EXIT_OK


def _defaults():
    from .config import RunConfig

    return RunConfig(model="", input="", output="")
