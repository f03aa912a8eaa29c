"""`batch-infer inspect MODEL --against LABELLED_DIR`: which preprocessing the model was trained
with, measured on labelled data rather than guessed.

A seeded sample of LABELLED_DIR (one folder per class, spread evenly over the classes) is scored
under every candidate that applies to the signature: each resize mode, with and without
antialias, times each pixel scaling (float inputs; uint8 inputs take raw only, and models that
take encoded bytes prepare images themselves, so they have one candidate). Each file is decoded
once and resized once per resize, and the pixels are reused for every scaling, so the cost is
the model calls: one per candidate and batch of files. Most candidates are clearly wrong after a
few dozen files, so they race (`_score`): those far behind the leader stop early, and only the
ones that may still win are scored on the whole sample.

Candidates are ranked by top-1 accuracy (then mean top-1 score). Whether the best is really
better than the others is McNemar's test on the files where two candidates disagree; the number
of files that would separate them is the usual sample-size estimate for that test.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, replace

import numpy as np

from . import parallel, scaling
from .config import DEFAULT_EXTENSIONS, ConfigError, RunConfig
from .decode.geometry import resized, scaled, to_channels
from .decode.graph import checked, pixels, plan_batch
from .decode.options import DecodeOptions, Resize
from .decode.plan import Plan, scale_target
from .heads import Classification
from .labels import match_labels
from .listing import list_images
from .model import load_model
from .tf_import import tf

SEED = 0
BATCH = 32
DECODING = DecodeOptions.from_config(RunConfig(model="", input="", output=""))  # `run`'s defaults
PRUNE_P = 0.001  # a candidate this far behind the leader stops being scored (see `_score`)
Z_ALPHA, Z_POWER = 1.96, 0.8416  # two-sided 5 % level, 80 % power


@dataclass(frozen=True)
class Candidate:
    resize: Resize | None  # None: the model decodes the bytes itself
    preprocess: str

    def flags(self) -> str:
        words = [self.resize.flags()] if self.resize is not None else []
        words.append(f"--preprocess {self.preprocess}")
        return " ".join(word for word in words if word)

    def as_dict(self) -> dict:
        return {"flags": self.flags(), "preprocess": self.preprocess,
                **({"resize": self.resize.mode, "antialias": self.resize.antialias,
                    "interpolation": self.resize.interpolation,
                    "crop_fraction": self.resize.crop_fraction} if self.resize is not None else {})}


def match_folders(folders: list[str], labels: list[str]) -> tuple[dict[str, int], list[str]]:
    """({folder: class index}, folders matching no label), by `labels.match_labels`."""
    index = {}
    for position, label in enumerate(labels):
        index.setdefault(label, position)
    matching = match_labels(dict.fromkeys(folders, 0), labels)
    return ({folder: index[label] for folder, label in matching.label_of.items()},
            list(matching.unmatched))


def sample_files(by_folder: dict[str, list], count: int) -> list:
    """Up to `count` files, seeded, taken from the folders in turn so each class gets its share."""
    rng = np.random.default_rng(SEED)
    queues = {folder: [files[i] for i in rng.permutation(len(files))]
              for folder, files in sorted(by_folder.items()) if files}
    chosen = []
    while len(chosen) < count and any(queues.values()):
        for folder in sorted(queues):
            if queues[folder] and len(chosen) < count:
                chosen.append((folder, queues[folder].pop()))
    return chosen


def resizes(base: Resize, spec) -> list[Resize]:
    """Each resize mode, with and without antialias where the filter has one; --crop-fraction
    applies to stretch and crop (pad keeps the whole image)."""
    choices = []
    for mode in ("stretch", "crop", "pad"):
        fraction = 1.0 if mode == "pad" else base.crop_fraction
        for antialias in ((True,) if base.interpolation in ("area", "nearest") else (True, False)):
            choices.append(Resize(mode, fraction, base.interpolation, antialias))
    return choices


def compare(model_path: str, labelled_dir: str, sample: int = 200, signature: str = "serving_default",
            input_key: str | None = None, output_key: str | None = None,
            image_size: tuple[int, int] | None = None, base: Resize = Resize(),
            labels: str | None = None) -> dict:
    """The comparison as one JSON-ready dict; ConfigError for a missing or empty folder."""
    if not os.path.isdir(labelled_dir):
        raise ConfigError(f"--against {labelled_dir} is not a directory; pass a folder with one "
                          "sub-folder of images per class.")
    plan = parallel.configure("cpu")
    model = load_model(model_path, signature, input_key, image_size, "raw")  # each scaling is tried
    head = Classification.for_model(model, output_key, labels=labels)
    by_folder: dict[str, list] = {}
    for item in list_images(labelled_dir, DEFAULT_EXTENSIONS):
        if "/" in item.path and item.problem is None:
            by_folder.setdefault(item.path.split("/", 1)[0], []).append(item)
    if not by_folder:
        raise ConfigError(f"--against {labelled_dir} has no images in sub-folders; put each class's "
                          "images in a folder named as its label.")
    matched, unmatched = match_folders(sorted(by_folder), [str(label) for label in head.labels])
    labelled = bool(matched)
    pool = {folder: files for folder, files in by_folder.items() if folder in matched or not labelled}
    chosen = sample_files(pool, sample)
    truth = np.array([matched.get(folder, -1) for folder, _ in chosen])

    spec = model.spec
    if spec.encoded:
        candidates = [Candidate(None, spec.preprocess)]
        geometries = [None]
    else:
        geometries = resizes(base, spec)
        candidates = [Candidate(resize, preprocess) for resize in geometries for preprocess in scaling.candidates(spec)]
    top1, confidence, scored, decoded = _score(model, head, [item for _, item in chosen], geometries,
                                               candidates, truth, labelled, plan)
    return _summarise(model_path, labelled_dir, candidates, top1, confidence, scored, truth[decoded], labelled,
                      matched, unmatched, len(chosen), len(by_folder))


def _decoded(files, spec, geometries, plan):
    """Batches of (sample positions, pixels per geometry) in sample order, files that fail to
    decode left out. Geometries that want the same JPEG scale (`scale_target`) share one decode,
    so each file is decoded once (twice when --crop-fraction sets stretch and crop apart from
    pad) and resized once per geometry: the inputs `run` gives, one decode graph, cheap to trace."""
    options = {}
    for resize in geometries:
        if resize is not None:
            options.setdefault(scale_target(spec, resize), replace(DECODING, resize=resize))

    def load(index, path):
        data = tf.io.read_file(path)
        if spec.encoded:
            return index, (checked(data, planned(data, DECODING)),)
        upright = {target: to_channels(pixels(data, planned(data, decoding), spec, decoding), spec.channels)
                   for target, decoding in options.items()}
        return index, tuple(resized(upright[scale_target(spec, resize)], spec.image_size, resize)
                            for resize in geometries)

    def planned(data, decoding):
        return Plan(*tf.unstack(plan_batch(data[None], spec, decoding)[0][0]))

    paths = np.array([item.fs_path for item in files], dtype=object)
    threading = tf.data.Options()
    threading.autotune.enabled = False  # as in `pipeline`
    threading.threading.private_threadpool_size = plan.decode
    threading.threading.max_intra_op_parallelism = 1
    return (tf.data.Dataset.from_tensor_slices((np.arange(len(files)), paths))
            .map(load, num_parallel_calls=plan.decode, deterministic=True)
            .ignore_errors().batch(BATCH).prefetch(plan.streams + 1).with_options(threading))


def _score(model, head, files, geometries, candidates, truth, labelled, plan):
    """(top-1 class [candidates, decoded files], top-1 score, files each candidate was scored on,
    sample positions of the files that decoded), racing the candidates.

    Every candidate scores the first batch; each time the files scored double (32, 64, 128, ...)
    the candidates clearly behind the leader (`_behind`) stop, so only those that may still win
    get the whole sample. Each candidate's files are thus the first ones of the sample, which is
    spread over the classes at any length. A model call is one batch under one candidate, and
    the streams run calls of different candidates side by side.
    """
    spec = model.spec
    batches = iter(_decoded(files, spec, geometries, plan))
    top1 = np.zeros((len(candidates), len(files)), np.int64)
    confidence = np.zeros((len(candidates), len(files)))
    scored = np.zeros(len(candidates), np.int64)
    decoded: list[int] = []
    active = list(range(len(candidates)))

    def predict(job):
        (_, per_geometry), candidate = job
        pixels = per_geometry[geometries.index(candidates[candidate].resize)]
        batch = pixels if spec.encoded else scaled(pixels, replace(spec, preprocess=candidates[candidate].preprocess))
        scores = head.scores(model.predict(batch))
        return scores.argmax(axis=1), scores.max(axis=1)

    def jobs(count):
        for batch in itertools.islice(batches, count):
            yield from ((batch, candidate) for candidate in active)

    while True:
        before = len(decoded)
        for ((index, _), candidate), (classes, scores) in parallel.in_order(predict, jobs(max(1, before // BATCH)),
                                                                            plan.streams):
            if candidate == active[0]:
                decoded.extend(index.numpy())
            end = len(decoded)
            top1[candidate, end - len(classes):end], confidence[candidate, end - len(classes):end] = classes, scores
            scored[candidate] = end
        if len(decoded) == before or len(decoded) == len(files):
            break
        seen = truth[decoded]
        leader = _ranked(active, top1, confidence, seen, scored, labelled, candidates)[0]
        active = [i for i in active if not _behind(leader, i, top1, confidence, seen, labelled)]
    if not decoded:
        raise ConfigError("None of the sampled files could be decoded; check the --against folder.")
    return top1[:, :len(decoded)], confidence[:, :len(decoded)], scored, np.array(decoded)


def _ranked(indices, top1, confidence, truth, scored, labelled, candidates) -> list[int]:
    """`indices` best first: the most files scored, then top-1 accuracy and mean top-1 score on
    them (the score alone when no folder matches a label); exact ties go to the candidate closest
    to the defaults (fewest flags)."""
    def key(i):
        files = slice(0, scored[i])
        accuracy = float((top1[i, files] == truth[files]).mean()) if labelled else 0.0
        return -scored[i], -accuracy, -float(confidence[i, files].mean()), len(candidates[i].flags().split())

    return sorted(indices, key=key)


def _behind(leader, other, top1, confidence, truth, labelled) -> bool:
    """Whether `other` is so far behind `leader` on the files both were scored on that it cannot
    be expected to catch up: p < PRUNE_P in the test that says "within noise" at 5 %."""
    if other == leader:
        return False
    files = slice(0, len(truth))
    if labelled:
        p, _ = mcnemar(top1[leader, files] == truth, top1[other, files] == truth)
    else:
        p, _ = paired(confidence[leader, files], confidence[other, files])
    return p < PRUNE_P


def mcnemar(best_right: np.ndarray, other_right: np.ndarray) -> tuple[float, int | None]:
    """(two-sided exact p-value, files needed to separate them at 5 % with 80 % power, None when
    they never disagree in outcome) for two candidates scored on the same files."""
    b = int(np.sum(best_right & ~other_right))
    c = int(np.sum(~best_right & other_right))
    n = b + c
    if n == 0:
        return 1.0, None
    tail = sum(math.comb(n, k) for k in range(0, min(b, c) + 1)) / 2.0**n
    p = min(1.0, 2 * tail)
    if b == c:
        return p, None
    discordant, difference = n / len(best_right), abs(b - c) / len(best_right)
    return p, math.ceil((Z_ALPHA + Z_POWER) ** 2 * discordant / difference**2)


def paired(best: np.ndarray, other: np.ndarray) -> tuple[float, int | None]:
    """The same for mean top-1 confidence: a paired z-test on the per-file differences."""
    differences = best - other
    spread = float(differences.std(ddof=1)) if len(differences) > 1 else 0.0
    mean = float(differences.mean())
    if spread == 0.0:
        return (1.0 if mean == 0.0 else 0.0), None if mean == 0.0 else len(differences)
    z = mean / (spread / math.sqrt(len(differences)))
    p = math.erfc(abs(z) / math.sqrt(2))
    return p, (math.ceil(((Z_ALPHA + Z_POWER) * spread / mean) ** 2) if mean else None)


def _summarise(model_path, labelled_dir, candidates, top1, confidence, scored, truth, labelled, matched,
               unmatched, sampled, folders) -> dict:
    """Each candidate's figures on the files it was scored on, compared with the best on the same
    files; the candidates that were stopped early come after those scored on every file."""
    files = top1.shape[1]
    right = top1 == truth[None, :]
    order = _ranked(range(len(candidates)), top1, confidence, truth, scored, labelled, candidates)
    best = order[0]
    rows = []
    for i in order:
        mine = slice(0, scored[i])
        if i == best:
            p, needed = 1.0, None
        elif labelled:
            p, needed = mcnemar(right[best, mine], right[i, mine])
        else:
            p, needed = paired(confidence[best, mine], confidence[i, mine])
        rows.append({**candidates[i].as_dict(), "scored": int(scored[i]),
                     "top1_accuracy": float(right[i, mine].mean()) if labelled else None,
                     "mean_top1_score": float(confidence[i, mine].mean()),
                     "agreement_with_best": float((top1[i, mine] == top1[best, mine]).mean()),
                     "p_value_vs_best": p, "files_to_separate": needed})
    close = [row for row in rows[1:] if row["p_value_vs_best"] > 0.05]
    # The lead is over the best candidate that gave a different outcome somewhere, on its files.
    runner_up = next((row for row in rows[1:] if row["files_to_separate"] is not None
                      or row["p_value_vs_best"] < 1.0), None)
    if runner_up is None:
        lead = None
    else:
        mine = slice(0, runner_up["scored"])
        best_figure = right[best, mine].mean() if labelled else confidence[best, mine].mean()
        lead = float(best_figure - runner_up["top1_accuracy" if labelled else "mean_top1_score"])
    test = "McNemar's exact test" if labelled else "a paired z-test on per-file top-1 confidence"
    return {
        "model": model_path, "against": labelled_dir, "files_sampled": sampled, "files_scored": files,
        "seed": SEED, "folders": folders, "matched_folders": dict(sorted(matched.items())),
        "unmatched_folders": unmatched,
        "signal": "top-1 accuracy" if labelled else "mean top-1 confidence (no folder matches a label: a weak signal)",
        "candidates": rows, "best": rows[0],
        "runner_up": runner_up, "lead": lead,
        "within_noise": [row["flags"] for row in close],
        "test": ("McNemar's exact test on the files where two candidates disagree" if labelled
                 else "a paired z-test on per-file top-1 confidence") + "; files to separate at the "
                "5 % level with 80 % power",
        "stopped_early": sum(row["scored"] < files for row in rows),
        "stopping_rule": f"a candidate behind the leader at p < {PRUNE_P:g} ({test}) when the files scored "
                         f"reach {BATCH}, {2 * BATCH}, {4 * BATCH}, ... is scored no further",
    }


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def format_comparison(result: dict) -> str:
    labelled = result["candidates"][0]["top1_accuracy"] is not None
    lines = [f"{result['files_scored']} files of {result['against']} (seeded sample, "
             f"{len(result['matched_folders']) or result['folders']} classes)"]
    if not labelled:
        lines.append("no folder matches a label of the model: ranking by mean top-1 confidence, a weak "
                     "signal (a wrong preprocessing can be confidently wrong)")
    elif result["unmatched_folders"]:
        lines.append("folders matching no label (not sampled): " + ", ".join(result["unmatched_folders"]))
    lines.append("")
    width = max(len(row["flags"]) for row in result["candidates"])
    lines.append(f"{'candidate':<{width}}  {'files':>6}  {'top-1':>7}  {'mean score':>10}  {'agrees with best':>16}")
    for row in result["candidates"]:
        accuracy = _percent(row["top1_accuracy"]) if labelled else "-"
        files = f"{row['scored']}{'*' if row['scored'] < result['files_scored'] else ' '}"
        lines.append(f"{row['flags']:<{width}}  {files:>6}  {accuracy:>7}  {row['mean_top1_score']:>10.3f}  "
                     f"{_percent(row['agreement_with_best']):>16}")
    if result["stopped_early"]:
        lines.append(f"* stopped early: {result['stopping_rule']}; its figures and its comparison with the "
                     "best are on the files it was scored on.")
    best = result["best"]
    lines.append("")
    lines.append(f"best: {best['flags']}")
    if result["lead"] is not None:
        runner_up = result["runner_up"]
        lead = (f"{100 * result['lead']:.1f} points of top-1" if labelled
                else f"{result['lead']:.3f} of mean top-1 score")
        lines.append(f"leads {runner_up['flags']} by {lead} (p = {runner_up['p_value_vs_best']:.2g})")
    if result["within_noise"]:
        needed = [row["files_to_separate"] for row in result["candidates"][1:]
                  if row["flags"] in result["within_noise"]]
        known = [n for n in needed if n is not None]
        how_many = (f"about {max(known)} files would separate them" if known and len(known) == len(needed)
                    else (f"about {max(known)} files would separate some of them; the others did as "
                          "well on every file, so no number of files like these would" if known else
                          "they did as well on every file, so no number of files like these would "
                          "separate them"))
        lines.append(f"warning: within noise of the best ({len(needed)} candidate"
                     f"{'s' if len(needed) != 1 else ''}: " + "; ".join(result["within_noise"][:6])
                     + ("; ..." if len(needed) > 6 else "") + f"); {how_many} ({result['test']}).")
    return "\n".join(lines)
