"""The commands as Python calls: the same option table as the flags, data back, ConfigError where
the command exits 2; and the one label-matching rule that review, report and inspect --against
share."""

from __future__ import annotations

import shutil

import pytest

import batch_infer
from batch_infer.labels import match_labels
from conftest import SAMPLE_IMAGES, SAMPLE_MODEL

# Two labels differing only by case, and one with a sharp s: the cases where the two rules that
# `match_labels` replaced disagreed.
LABELS = ["Cat", "cat", "Straße", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.parametrize("name, label", [
    ("cat", "cat"),          # exact wins over the loose match with Cat
    ("Cat", "Cat"),
    ("CAT", None),           # fits Cat and cat: ambiguous, so neither
    ("Straße", "Straße"),
    ("STRAßE_", "Straße"),   # case and separators only
    ("STRASSE", None),       # ß is not ss: no case folding
    ("Seven-", "seven"),
    ("mystery", None),
])
def test_one_label_matching_rule(name, label):
    matching = match_labels({name: 3}, LABELS)
    assert matching.label_of.get(name) == label
    assert matching.unmatched == ({} if label else {name: 3})
    assert (name in matching.loose) == (label is not None and label != name)


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    """(model with LABELS, folders CAT, cat, STRASSE, STRAßE_ of sample images, its OUT)."""
    root = tmp_path_factory.mktemp("api")
    model = root / "model"
    shutil.copytree(SAMPLE_MODEL, model)
    (model / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    images = root / "images"
    for folder, source in [("CAT", "zero"), ("cat", "one"), ("STRASSE", "two"), ("STRAßE_", "two")]:
        shutil.copytree(f"{SAMPLE_IMAGES}/{source}", images / folder)
    summary = batch_infer.score(str(model), str(images), str(root / "out"), quiet=True)
    assert summary["errors"] == 0
    return str(model), str(images), str(root / "out")


def test_review_and_inspect_against_match_the_same_folders(renamed):
    model, images, out = renamed
    reviewed = batch_infer.review(out, truth="folder")
    assert reviewed["matched"] == {"STRAßE_": "Straße", "cat": "cat"}
    assert set(reviewed["unmatched"]) == {"CAT", "STRASSE"}
    compared = batch_infer.inspect(model, against=images, sample=8)
    assert compared["matched_folders"] == {"STRAßE_": 2, "cat": 1}
    assert compared["unmatched_folders"] == ["CAT", "STRASSE"]


def test_calls_return_what_the_commands_print(renamed, tmp_path):
    model, images, out = renamed
    assert batch_infer.inspect(model, preset="imagenet")["run"]["resize"]["mode"] == "crop"
    page = batch_infer.report(out, html=str(tmp_path / "page.html"), input=images, truth="folder")
    assert page == str(tmp_path / "page.html") and "<html" in (tmp_path / "page.html").read_text()
    written = batch_infer.export(out, format="imagefolder", dest=str(tmp_path / "sorted"),
                                 input=images, link="copy")
    assert written["exported"] + written["below_min_score"] == len(list((tmp_path / "sorted").rglob("*.*")))
    assert written["errors_skipped"] == 0


@pytest.mark.parametrize("call, message", [
    (lambda out: batch_infer.review(out, truth="labels"), "--truth must be folder or column:NAME"),
    (lambda out: batch_infer.review(out, truth="folder", similarity=2), "--similarity must be"),
    (lambda out: batch_infer.review(out, truth="folder", simlarity=0.9), "review takes no option(s) simlarity"),
    (lambda out: batch_infer.export(out, format="xml", dest="x"), "--format must be one of"),
    (lambda out: batch_infer.export(out, format="csv", dest="x", min_score="high"), "--min-score must be"),
    (lambda out: batch_infer.report(out, html="x.html", input="/no/such/dir"), "--input /no/such/dir is not"),
    (lambda out: batch_infer.inspect(out, sample=0), "--sample must be a positive whole number"),
])
def test_bad_options_raise_config_error_with_the_commands_sentence(renamed, call, message):
    with pytest.raises(batch_infer.ConfigError) as raised:
        call(renamed[2])
    assert message in str(raised.value)
