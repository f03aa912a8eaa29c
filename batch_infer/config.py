"""Options of every command: each defined once, merged from defaults, a job file and the command
line, and checked here for the command line and the Python calls alike.

This module never imports TensorFlow, so a bad flag is reported in a fraction of a second. It is
over 400 lines because the option table, with its help texts, is most of it: one table is the
point.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tomllib
from dataclasses import MISSING, dataclass, replace
from typing import Any, Callable, Iterable

from . import storage


class ConfigError(Exception):
    """A problem the user must fix before any work starts; the message says how, in one sentence."""


PREPROCESS_MODES = ("raw", "unit", "symmetric", "caffe", "torch")
RESIZE_MODES = ("stretch", "crop", "pad")
INTERPOLATIONS = ("bilinear", "bicubic", "area", "nearest", "lanczos3")
# Named bundles of preprocessing choices; flags given explicitly (or in a job file) win.
PRESETS = {
    # keras.utils.image_dataset_from_directory(image_size=..., interpolation="bilinear"): its
    # decode_image (no EXIF turn, never at reduced scale), bilinear without antialias, raw 0..255.
    "keras": {"resize": "stretch", "crop_fraction": 1.0, "interpolation": "bilinear",
              "antialias": False, "preprocess": "raw", "exif_transpose": False,
              "scaled_decode": False},
    # timm/torchvision evaluation: shorter side to size/0.875, centre crop, bicubic, mean/std.
    "imagenet": {"resize": "crop", "crop_fraction": 0.875, "interpolation": "bicubic",
                 "antialias": True, "preprocess": "torch"},
}
ACTIVATIONS = ("auto", "softmax", "sigmoid", "none")
DEVICES = ("auto", "cpu", "gpu")
LOG_FORMATS = ("text", "json")
ENGINES = ("local", "ray")
RUNTIMES = ("tensorflow", "onnx")
TASKS = ("classify", "embed")
RAY_OPTIONS = ("ray_address", "concurrency", "num_gpus")
DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")
PATH_OPTIONS = ("model", "input", "output", "labels")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".txt")


@dataclass(frozen=True)
class RunConfig:
    """A validated run. Paths are absolute, or URLs (s3://...); `shard` is (index, count)."""

    model: str
    input: str
    output: str
    top_k: int = 5
    batch_size: int = 32
    labels: str | None = None
    signature: str = "serving_default"
    input_key: str | None = None
    output_key: str | None = None
    image_size: tuple[int, int] | None = None
    preprocess: str = "auto"
    activation: str = "auto"
    recursive: bool = True
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    shard: tuple[int, int] = (0, 1)
    max_error_rate: float | None = None
    commit_every: int = 2000
    device: str = "auto"
    quiet: bool = False
    log_format: str = "text"
    exif_transpose: bool = True
    max_pixels: int = 100_000_000
    max_file_mb: int = 512
    engine: str = "local"
    ray_address: str | None = None
    concurrency: int = 1
    num_gpus: float = 0.0
    scaled_decode: bool = True
    path_column: str = "path"
    keep_columns: tuple[str, ...] = ()
    resize: str = "stretch"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    antialias: bool = True
    preset: str | None = None
    task: str = "classify"
    embedding_key: str | None = None
    embedding_layer: str | None = None
    keep_output: tuple[str, ...] = ()
    normalize_embeddings: bool = False
    runtime: str = "tensorflow"


# --- value parsers: accept the text of a flag or the native TOML value ---------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or number < 1 or str(value).strip() != str(number):
        raise ConfigError(f"{_flag(name)} must be a positive whole number; got {value!r}.")
    return number


positive_int = _positive_int


def _non_negative(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not number >= 0.0:
        raise ConfigError(f"{_flag(name)} must be a number of at least 0, e.g. 1 or 0.5; got {value!r}.")
    return number


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{_flag(name)} must be one of {', '.join(choices)}; got {value!r}.")
        return str(value)

    return parse


def _fraction(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0.0 < number <= 1.0:
        raise ConfigError(f"{_flag(name)} must be a number above 0 and at most 1, e.g. 0.875; "
                          f"got {value!r}.")
    return number


def _share(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ConfigError(f"{_flag(name)} must be a number between 0 and 1, e.g. 0.8; got {value!r}.")
    return number


def _cosine(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -2.0
    if isinstance(value, bool) or not -1.0 <= number <= 1.0:
        raise ConfigError(f"{_flag(name)} must be a cosine similarity between -1 and 1, e.g. 0.93; "
                          f"got {value!r}.")
    return number


# Near copies by fingerprint: at most this many of the 64 phash bits differ. Measured (README,
# "Reviewing a labelled dataset"): nearly every resized or recompressed copy differs in 4 bits or
# fewer; different photos in far more, different drawn shapes or digits rarely.
PHASH_DISTANCE = 6


def _phash_distance(name: str, value: Any) -> int | None:
    """A number of bits, or None for "off"."""
    if value == "off":
        return None
    if isinstance(value, bool) or not str(value).isdigit() or int(value) > 31:
        raise ConfigError(f"{_flag(name)} must be a number of bits from 0 to 31, or off; got {value!r}.")
    return int(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{_flag(name)} needs a non-empty text value; got {value!r}.")
    return value


def _sample(name: str, value: Any) -> int | str:
    """A count of files (with --against), or a folder of images (without)."""
    if isinstance(value, int) or str(value).strip().isdigit():
        return _positive_int(name, value)
    if isinstance(value, str) and os.path.isdir(value):
        return value
    raise ConfigError(f"{_flag(name)} takes a number of files (with --against) or a folder of images "
                      f"to check the pixel scaling on; got {value!r}, which is neither.")


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false in the job file; got {value!r}.")
    return value


def parse_image_size(name: str, value: Any) -> tuple[int, int]:
    parts = str(value).lower().split("x")
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ConfigError(f"{_flag(name)} must look like HxW, e.g. 224x224; got {value!r}.")


def parse_shard(name: str, value: Any) -> tuple[int, int]:
    parts = str(value).split("/")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        index, count = int(parts[0]), int(parts[1])
        if 0 <= index < count:
            return index, count
    raise ConfigError(f"{_flag(name)} must be I/N with 0 <= I < N, e.g. 0/4; got {value!r}.")


def _rate(name: str, value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = -1.0
    if isinstance(value, bool) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"{_flag(name)} must be a share between 0 and 1, e.g. 0.05; got {value!r}.")
    return rate


def _keys(name: str, value: Any) -> tuple[str, ...]:
    """A repeatable flag (given once per key) or a TOML list of keys."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(item, str) and item for item in items):
        raise ConfigError(f"{_flag(name)} takes an output name, once per output to keep; got {value!r}.")
    return tuple(dict.fromkeys(items))


def _extensions(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    cleaned = tuple(str(item).strip().lower().lstrip(".") for item in items)
    if not cleaned or not all(cleaned):
        raise ConfigError(f"{_flag(name)} must be a comma-separated list like jpg,png; got {value!r}.")
    return cleaned


def _columns(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    cleaned = tuple(str(item).strip() for item in items)
    if not cleaned or not all(cleaned):
        raise ConfigError(f"{_flag(name)} must be a comma-separated list of column names like "
                          f"label,split; got {value!r}.")
    return cleaned


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    parse: Callable[[str, Any], Any]
    metavar: str | None = None
    boolean: bool = False
    changes_values: bool = True  # False: a resume with another value never mixes rows (see `fingerprint`)
    repeatable: bool = False
    switch: bool = False  # a flag without a value, on when given (--quiet, --json)
    required: bool = False  # on the command line; run's own three may come from a job file instead
    choices: tuple[str, ...] | None = None  # for argparse to check and list (export's, as before)
    default: Any = None  # the value when not given: RunConfig's for run options, else set here
    shown_default: str | None = None  # the help's "(default: ...)" in words, where the value would not say it

    @property
    def help_text(self) -> str:
        """The help with its default, as every command's --help (and the README's table) shows it."""
        shown = self.shown_default if self.shown_default is not None else _shown(self.default)
        return f"{self.help} (default: {shown})" if shown and not self.switch else self.help


def _shown(value: Any) -> str | None:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return None if value is None else str(value)


OPTIONS: tuple[Option, ...] = (
    Option("model", "SavedModel directory, or a Keras .keras or .h5 file", _text, "MODEL", changes_values=False),
    Option("input", "directory of images to score, an s3://, gs://... URL, or a manifest file "
           "(.csv, .tsv, .parquet, .jsonl, or .txt with one path a line) naming the files",
           _text, "DIR|MANIFEST", changes_values=False),
    Option("output", "output Parquet dataset directory, or an s3://, gs://... URL", _text, "OUT", changes_values=False),
    Option("top_k", "number of best classes kept per image, capped at the class count",
           _positive_int, "K"),
    Option("batch_size", "images per model call", _positive_int, "N", changes_values=False),
    Option("labels", "class names, one per line, line i = class i", _text, "FILE", changes_values=False,
           shown_default="labels.txt in MODEL or MODEL/assets if present, else class indices"),
    Option("signature", "signature to call", _text, "NAME"),
    Option("input_key", "signature input to feed", _text, "KEY", shown_default="its only input"),
    Option("output_key", "signature output holding class scores", _text, "KEY",
           shown_default="the only [batch, classes] output"),
    Option("image_size", "HxW to resize to, only when the signature does not fix it",
           parse_image_size, "HxW"),
    Option("preprocess", "pixel scaling applied before the model: raw 0..255, unit 0..1, symmetric "
           "-1..1, caffe (BGR minus ImageNet mean), torch (ImageNet mean/std), or auto: what the "
           "model says (a Rescaling layer, a known Keras Applications backbone), else raw, "
           "checked on the first images", _choice(("auto",) + PREPROCESS_MODES)),
    Option("resize", "how the image becomes the model size: stretch (both sides to size), crop "
           "(scale so the shorter side fits, keep the centre), pad (scale so the longer side fits, "
           "pad with zeros)", _choice(RESIZE_MODES)),
    Option("crop_fraction", "take the centre F of the resized image, as timm's crop_pct: resize to "
           "size/F, then keep the model size", _fraction, "F"),
    Option("interpolation", "resampling filter: bilinear, bicubic, area, nearest or lanczos3", _choice(INTERPOLATIONS)),
    Option("antialias", "widen the filter when shrinking, so large photos are not aliased", _bool, boolean=True),
    Option("preset", "a named bundle of preprocessing choices that flags given explicitly "
           "override: keras (as keras.utils.image_dataset_from_directory), imagenet (as "
           "timm/torchvision evaluation)", _choice(tuple(PRESETS)), shown_default="none"),
    Option("activation", "turn outputs into probabilities: auto detects logits once per run", _choice(ACTIVATIONS)),
    Option("recursive", "descend into subdirectories", _bool, boolean=True, changes_values=False,
           shown_default="recursive"),
    Option("extensions", "file extensions to score",
           _extensions, "LIST", changes_values=False),
    Option("shard", "score only shard I of N, e.g. Airflow's map_index/N",
           parse_shard, "I/N", changes_values=False, shown_default="0/1"),
    Option("max_error_rate", "exit 3 when the share of error rows in this run exceeds R", _rate, "R",
           changes_values=False, shown_default="no limit"),
    Option("commit_every", "commit a Parquet part at least every N rows (sooner when the rows "
           "pending reach 32 MiB, as wide embeddings do, and every 30 s), which bounds what a "
           "killed run loses and the size of a part", _positive_int, "N",
           changes_values=False),
    Option("device", "where the model runs", _choice(DEVICES), changes_values=False,
           shown_default="auto, the GPU when there is one"),
    Option("quiet", "no progress output, warnings only", _bool, switch=True, changes_values=False),
    Option("log_format", "stderr log lines as text or one JSON object each",
           _choice(LOG_FORMATS), changes_values=False),
    Option("exif_transpose", "turn photos upright by their EXIF orientation before resizing, as "
           "image viewers do", _bool, boolean=True),
    Option("max_pixels", "refuse images whose header declares more pixels than this (all frames "
           "of a GIF), before decoding, as a `too-large` error row; a decoded image takes about 3 "
           "bytes per pixel", _positive_int, "N"),
    Option("scaled_decode", "decode JPEGs much larger than the model input at 1/2, 1/4 or 1/8 "
           "scale inside the decoder, never below the model size", _bool, boolean=True),
    Option("max_file_mb", "refuse files larger than this many MiB unread, as a `too-large` "
           "error row", _positive_int, "MB"),
    Option("task", "classify writes the class columns (and an embedding when asked for); embed "
           "writes only the embedding", _choice(TASKS)),
    Option("embedding_key", "signature output to write as `embedding`, a [batch, D] float vector",
           _text, "KEY"),
    Option("embedding_layer", "Keras files: the layer whose output is written as `embedding` "
           "(feature maps averaged to [batch, D]), or penultimate for the input of the final Dense "
           "layer", _text, "NAME"),
    Option("keep_output", "keep this float output raw as the column output_KEY; repeat the flag "
           "for more outputs", _keys, "KEY", repeatable=True),
    Option("normalize_embeddings", "store embeddings L2-normalised, so a dot product is the cosine "
           "similarity", _bool, boolean=True),
    Option("runtime", "what calls the model: tensorflow, or onnx (ONNX Runtime, on the model "
           "converted once and cached; used only when it agrees with TensorFlow on the first batch, "
           "else the run says so and stays on TensorFlow)", _choice(RUNTIMES)),
    Option("engine", "where files are decoded and scored: local (this process) or ray (a Ray "
           "cluster)", _choice(ENGINES), changes_values=False),
    Option("ray_address", "Ray cluster to join, e.g. ray://head:10001", _text, "ADDRESS", changes_values=False,
           shown_default="$RAY_ADDRESS, else a Ray started on this machine for the run"),
    Option("concurrency", "model actors on the Ray cluster, each holding the model once", _positive_int, "N",
           changes_values=False),
    Option("num_gpus", "GPUs per Ray model actor, fractions allowed", _non_negative, "N", changes_values=False),
)
MANIFEST_OPTIONS = (
    Option("path_column", "manifest column holding each file's path or URL; relative paths are "
           "taken from the manifest's folder", _text, "NAME", changes_values=False),
    Option("keep_columns", "manifest columns copied into every row with their types, e.g. a "
           "class column to review against", _columns, "A,B", shown_default="none"),
)
# A run option's default is RunConfig's, typed there once.
OPTIONS = tuple(replace(option, default=RunConfig.__dataclass_fields__[option.name].default)
                if RunConfig.__dataclass_fields__[option.name].default is not MISSING else option
                for option in OPTIONS + MANIFEST_OPTIONS)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every run option; unset flags stay absent so the job file can fill them."""
    parser.add_argument("--job", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML job file with these options as keys (flags given here win)")
    add_options(parser, [option.name for option in OPTIONS])


PREPROCESSING_OPTIONS = ("preprocess", "resize", "crop_fraction", "interpolation", "antialias", "preset")
FORMATS = ("csv", "imagefolder", "label-studio")
LINKS = ("hardlink", "copy")
LOCAL_FILES = "/data/local-files/?d="
JSON = Option("json", "print one JSON object", _bool, switch=True)
TRUTH = Option("truth", "where each file's given label is: folder (the first folder of its path) "
               "or column:NAME (a manifest column kept with --keep-columns)", _text, "folder|column:NAME")
RUN_INPUT = "the run's --input"

# The other commands' options, each as `run`'s: an option named as a run option and not listed
# here is that run option (inspect's --signature is run's). Keyed by command; the Python call of
# each command takes the same names as keywords.
COMMAND_OPTIONS: dict[str, tuple[Option | str, ...]] = {
    "inspect": (
        JSON, "signature", "input_key", "output_key", "image_size", *PREPROCESSING_OPTIONS,
        Option("against", "score a sample of LABELLED_DIR (one folder per class, named as the "
               "model's labels) under each preprocessing that applies, and rank them", _text,
               "LABELLED_DIR"),
        Option("sample", "with --against: files sampled from LABELLED_DIR, spread over the classes "
               "(default: 200); without: a folder of images to check the pixel scaling on, as run "
               "checks its first files", _sample, "N|DIR"),
        "labels",
    ),
    "review": (
        replace(TRUTH, required=True),
        Option("output", "directory to write suspects, duplicates, per_class and confusion "
               ".parquet to", _text, "REVIEW_DIR"),
        Option("similarity", "near duplicates: centred cosine similarity of the embeddings at least "
               "S", _cosine, "S", shown_default="from the data, a tenth of the typical distance "
               "between an image and its nearest neighbour"),
        Option("phash_distance", "near duplicates: phash values that differ in at most BITS of their 64 "
               "bits, or off", _phash_distance, "BITS", default=PHASH_DISTANCE,
               shown_default=f"{PHASH_DISTANCE}, measured: see the README"),
        JSON,
    ),
    "report": (
        Option("input", f"{RUN_INPUT}, to embed thumbnails", _text, "DIR", shown_default="no thumbnails"),
        Option("html", "HTML file to write", _text, "FILE", required=True),
        TRUTH,
    ),
    "export": (
        Option("format", "csv: path,label,score,top_k_labels,top_k_scores with top-k joined by '|'; "
               "imagefolder: DEST/<label>/<path with / replaced by __>; label-studio: a JSON task "
               "list with the top-1 label as a prediction", _choice(FORMATS), required=True,
               choices=FORMATS),
        Option("dest", "file to write (csv, label-studio) or new or empty directory (imagefolder)",
               _text, "DEST", required=True),
        Option("input", f"{RUN_INPUT} (needed by imagefolder)", _text, "DIR"),
        Option("min_score", "export only rows whose top-1 score is at least S",
               _share, "S", default=0.0),
        Option("link", "imagefolder: hard-link the images (copied when DEST is on another "
               "filesystem) or copy them", _choice(LINKS), choices=LINKS, default="hardlink"),
        Option("image_root", "label-studio: prefix of each task's image URL, followed by the "
               f"URL-quoted path (default: {LOCAL_FILES}, Label Studio's local files URL, which is "
               "relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: set that to the run's --input, "
               f"or give e.g. {LOCAL_FILES}photos/ or https://host/photos/). The labeling config "
               "must name its tags image and choice: <Image name=\"image\" value=\"$image\"/>"
               "<Choices name=\"choice\" toName=\"image\">", _text, "PREFIX"),
        Option("review", "label-studio: export the suspects and duplicate groups that `batch-infer "
               "review OUT --output REVIEW_DIR` wrote, as review tasks carrying the given label and "
               "the prediction, instead of every ok row", _text, "REVIEW_DIR"),
    ),
}


def command_options(command: str) -> dict[str, Option]:
    """The options of `inspect`, `review`, `report` or `export` by name."""
    return {entry.name if isinstance(entry, Option) else entry:
            entry if isinstance(entry, Option) else OPTIONS_BY_NAME[entry]
            for entry in COMMAND_OPTIONS[command]}


def parse_command_options(command: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values given to `command` (None: not given), each checked by its option."""
    options = command_options(command)
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise ConfigError(f"{command} takes no option(s) {', '.join(unknown)}; its options are "
                          f"{', '.join(options)}.")
    defaults = {entry.name: entry.default for entry in COMMAND_OPTIONS[command]
                if isinstance(entry, Option) and entry.default is not None}
    return {**defaults, **{name: options[name].parse(name, value) for name, value in values.items()
                           if value is not None}}


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option | str]) -> None:
    """Adds the options (names of run options, or Options), with the same flags and help text
    everywhere; unset flags stay absent."""
    for option in (OPTIONS_BY_NAME[entry] if isinstance(entry, str) else entry for entry in options):
        if option.switch:
            parser.add_argument(_flag(option.name), action="store_true", default=argparse.SUPPRESS,
                                help=option.help_text)
        elif option.repeatable:
            parser.add_argument(_flag(option.name), metavar=option.metavar, action="append",
                                default=argparse.SUPPRESS, help=option.help_text)
        elif option.boolean:
            parser.add_argument(_flag(option.name), action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=option.help_text)
        else:
            parser.add_argument(_flag(option.name), metavar=option.metavar, choices=option.choices,
                                required=option.required, default=argparse.SUPPRESS, help=option.help_text)


def read_job_file(path: str) -> dict[str, Any]:
    """Reads a TOML job file; relative paths in it are taken from the job file's own directory,
    so a scheduler can start the job from any working directory."""
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"Job file {path} does not exist; check the --job path.") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"Job file {path} could not be read: {error}.") from None
    unknown = sorted(set(values) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ConfigError(f"Job file {path} has unknown key(s) {', '.join(unknown)}; valid keys are "
                          f"{', '.join(OPTIONS_BY_NAME)}.")
    base = os.path.dirname(os.path.abspath(path))
    for name in PATH_OPTIONS:
        if isinstance(values.get(name), str) and not storage.is_url(values[name]):
            values[name] = os.path.join(base, os.path.expanduser(values[name]))
    return values


def build_config(given: dict[str, Any]) -> RunConfig:
    """Merges job file values under command-line values and checks every one of them."""
    values = dict(given)
    job = values.pop("job", None)
    if job is not None:
        values = {**read_job_file(job), **values}
    for required in ("model", "input", "output"):
        if required not in values:
            raise ConfigError(f"Missing {_flag(required)}; give it on the command line or as "
                              f"`{required}` in a --job file.")
    parsed = parse_options(values)
    for name in PATH_OPTIONS:
        if name in parsed and not storage.is_url(parsed[name]):
            parsed[name] = os.path.abspath(os.path.expanduser(parsed[name]))
    config = RunConfig(**parsed)
    _check_outputs(config)
    _check_engine(config, parsed)
    _check_runtime(config)
    _check_paths(config)
    return config


def parse_options(values: dict[str, Any]) -> dict[str, Any]:
    """Each value checked and converted by its option; unknown names are refused."""
    unknown = sorted(set(values) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ConfigError(f"Unknown option(s) {', '.join(unknown)}; valid options are "
                          f"{', '.join(OPTIONS_BY_NAME)}.")
    parsed = {name: OPTIONS_BY_NAME[name].parse(name, value) for name, value in values.items()}
    return apply_preset(parsed)


def apply_preset(parsed: dict[str, Any]) -> dict[str, Any]:
    """The preset's values under the options given explicitly, then the preprocessing options
    checked against each other."""
    preset = parsed.get("preset")
    if preset is not None:
        explicit = set(parsed)
        parsed = {**PRESETS[preset], **parsed}
        if preset == "keras" and "scaled_decode" in explicit and parsed["scaled_decode"]:
            raise ConfigError("--scaled-decode does not apply to --preset keras, which decodes every "
                              "file at full size as Keras does; drop --scaled-decode.")
    if parsed.get("resize") == "pad" and parsed.get("crop_fraction", 1.0) < 1.0:
        raise ConfigError("--crop-fraction keeps only the centre of the image while --resize pad "
                          "keeps all of it; use --resize crop or stretch with --crop-fraction, or "
                          "drop --crop-fraction.")
    return parsed


def _check_outputs(config: RunConfig) -> None:
    """Which columns a run writes, checked before the model is loaded."""
    if config.embedding_key is not None and config.embedding_layer is not None:
        raise ConfigError("--embedding-key (a signature output) and --embedding-layer (a Keras layer) "
                          "each choose the embedding; give one of them.")
    wants_embedding = config.task == "embed" or config.embedding_key or config.embedding_layer
    if config.normalize_embeddings and not wants_embedding:
        raise ConfigError("--normalize-embeddings needs an embedding; add --embedding-key, "
                          "--embedding-layer or --task embed.")
    if config.task == "embed" and config.output_key is not None:
        raise ConfigError("--output-key chooses the class scores, which --task embed does not write; "
                          "drop it, or choose the vector with --embedding-key.")
    from .model_files import is_keras_path

    if config.embedding_layer is not None and not is_keras_path(config.model):
        raise ConfigError("--embedding-layer needs a Keras .keras or .h5 file, since a SavedModel keeps "
                          "no usable layers; pass the Keras file, or export a signature that returns "
                          "the features and use --embedding-key (batch-infer inspect MODEL shows how).")


def _check_engine(config: RunConfig, given: dict[str, Any]) -> None:
    if config.engine != "ray":
        for name in RAY_OPTIONS:
            if name in given:
                raise ConfigError(f"{_flag(name)} only applies to --engine ray; add --engine ray or "
                                  f"drop {_flag(name)}.")
        return
    if config.device == "gpu" and not config.num_gpus:
        raise ConfigError("--device gpu with --engine ray needs --num-gpus (GPUs per model actor), "
                          "e.g. --num-gpus 1.")
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--engine ray needs Ray, which is not installed; pip install "
                          "'batch-infer[ray]'.")


def _check_runtime(config: RunConfig) -> None:
    if config.runtime == "onnx" and not all(importlib.util.find_spec(name) for name in ("onnxruntime", "tf2onnx")):
        raise ConfigError("--runtime onnx needs ONNX Runtime and tf2onnx, which are not installed; pip "
                          "install 'batch-infer[onnx]', or drop --runtime onnx.")


def _check_paths(config: RunConfig) -> None:
    for name in ("model", "labels"):
        value = getattr(config, name)
        if value is not None and storage.is_url(value):
            raise ConfigError(f"{_flag(name)} must be a local path, as TensorFlow cannot read "
                              f"{storage.scheme(value)}:// itself; copy it to local disk first "
                              "(e.g. aws s3 sync, gcloud storage cp -r).")
    if storage.is_url(config.input):
        if not _reach(config.input):
            raise ConfigError(f"Input {config.input} does not exist or holds no objects; check --input.")
    elif config.input.lower().endswith(MANIFEST_SUFFIXES):
        if not os.path.isfile(config.input):
            raise ConfigError(f"Manifest {config.input} does not exist; check --input.")
    elif not os.path.isdir(config.input):
        raise ConfigError(f"Input directory {config.input} does not exist; check --input.")
    if not config.input.lower().endswith(MANIFEST_SUFFIXES):
        for name in ("path_column", "keep_columns"):
            if getattr(config, name) != RunConfig.__dataclass_fields__[name].default:
                raise ConfigError(f"{_flag(name)} only applies to a manifest --input (.csv, .tsv, "
                                  f".parquet, .jsonl or .txt); drop {_flag(name)}.")
    if storage.is_url(config.output):
        _reach(config.output)
        if not storage.container_exists(config.output):
            raise ConfigError(f"The bucket of --output {config.output} does not exist; create it "
                              "or fix its name.")
    elif os.path.exists(config.output) and not os.path.isdir(config.output):
        raise ConfigError(f"Output {config.output} exists and is not a directory; "
                          "choose a directory for --output.")
    if config.labels is not None and not os.path.isfile(config.labels):
        raise ConfigError(f"Labels file {config.labels} does not exist; check --labels.")


def _reach(url: str) -> bool:
    """Whether anything is stored under `url`, asked once up front, so a missing package, bucket
    or credential is one sentence now rather than a traceback in the middle of a run."""
    try:
        return storage.is_dir(url)
    except ImportError as error:
        extra = storage.EXTRAS.get(storage.scheme(url))
        hint = f"pip install 'batch-infer[{extra}]'" if extra else str(error).rstrip(".")
        raise ConfigError(f"{url} needs a package that is not installed; {hint}.") from None
    except Exception as error:  # each back end has its own errors for credentials and networks
        raise ConfigError(f"Could not reach {url} ({type(error).__name__}: {error}); check the URL "
                          "and the credentials in the environment or the client's config "
                          "files.") from None
