"""`batch-infer review` on a real labelled set: held-out digits the sample model never saw, with
labels flipped on purpose and copies planted, scored by the sample Keras file with its
penultimate layer as the embedding. Metrics are checked against scikit-learn on the same rows."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import train_test_split

from batch_infer import duplicates
from batch_infer.cli import main
from conftest import SAMPLE_MODEL, invoke, read_output

SAMPLE_KERAS = str(Path(SAMPLE_MODEL).parent / "digits.keras")
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FLIPPED, EXACT, NEAR = 15, 8, 8


def held_out_digits(count: int) -> list[tuple[Image.Image, int]]:
    """Digits of load_digits the sample model was not trained on, drawn as it was trained."""
    digits = load_digits()
    _, held_out = train_test_split(np.arange(len(digits.target)), test_size=0.25, random_state=0,
                                   stratify=digits.target)
    return [(Image.fromarray(np.round(digits.images[i] * (255 / 16)).astype(np.uint8), "L")
             .resize((32, 32), Image.BILINEAR), int(digits.target[i])) for i in held_out[:count]]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """(input, OUT, flipped paths, planted copy pairs, the copy whose folder differs)."""
    root = tmp_path_factory.mktemp("review")
    images, out = root / "images", root / "out"
    rng = np.random.default_rng(3)
    digits = held_out_digits(300)
    flip = set(rng.choice(len(digits), FLIPPED, replace=False).tolist())
    paths, flipped = [], set()
    for row, (image, digit) in enumerate(digits):
        label = NAMES[(digit + int(rng.integers(1, 10))) % 10] if row in flip else NAMES[digit]
        path = f"{label}/{row:04d}.png"
        (images / label).mkdir(parents=True, exist_ok=True)
        image.save(images / path)
        paths.append(path)
        if row in flip:
            flipped.add(path)
    pairs = set()
    originals = [row for row in rng.permutation(len(digits)) if row not in flip][:EXACT + NEAR]
    for n, row in enumerate(originals):
        if n < EXACT:
            copy = paths[row].replace(".png", "-copy.png")
            shutil.copy(images / paths[row], images / copy)
        else:  # resized and recompressed
            buffer = io.BytesIO()
            side = 48 if n % 2 else 24
            digits[row][0].resize((side, side), Image.BICUBIC).save(buffer, "JPEG", quality=70)
            copy = paths[row].replace(".png", "-near.jpg")
            (images / copy).write_bytes(buffer.getvalue())
        pairs.add(frozenset((paths[row], copy)))
    # One exact copy under another class's folder: a group whose given labels differ.
    source = paths[originals[0]]
    other = NAMES[(NAMES.index(source.split("/")[0]) + 1) % 10]
    mixed = f"{other}/{Path(source).stem}-elsewhere.png"
    shutil.copy(images / source, images / mixed)
    pairs |= {frozenset((source, mixed)), frozenset((f"{source[:-4]}-copy.png", mixed))}
    assert main(["run", "--model", SAMPLE_KERAS, "--input", str(images), "--output", str(out),
                 "--embedding-layer", "penultimate", "--quiet"]) == 0
    return images, out, flipped, pairs, mixed


@pytest.fixture(scope="module")
def reviewed(labelled, tmp_path_factory):
    """(review dir, summary) of `review --json --output`."""
    review_dir = tmp_path_factory.mktemp("reviewed") / "review"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["review", str(labelled[1]), "--truth", "folder", "--output", str(review_dir), "--json"]) == 0
    return review_dir, json.loads(stdout.getvalue())


def test_flipped_labels_rank_at_the_top(labelled, reviewed):
    _, _, flipped, _, _ = labelled
    review_dir, summary = reviewed
    suspects = pd.read_parquet(review_dir / "suspects.parquet")
    top = set(suspects[suspects["rank"] <= 0.1 * summary["rows"]].path)
    assert len(top & flipped) >= 0.8 * len(flipped)
    assert list(suspects["rank"]) == list(range(1, len(suspects) + 1))
    assert (suspects.doubt.diff().dropna() <= 0).all()
    assert (suspects.given != suspects.predicted).all()
    row = suspects.iloc[0]
    assert row.reason.startswith(f"predicted {row.predicted} at ")


def test_copies_are_grouped_exact_and_near(labelled, reviewed):
    _, _, _, planted, mixed = labelled
    review_dir, summary = reviewed
    found = pd.read_parquet(review_dir / "duplicates.parquet")
    assert list(found.columns[:4]) == ["group", "path", "kind", "similarity"]
    pairs = {frozenset(pair) for _, group in found.groupby("group")
             for pair in itertools.combinations(group.path, 2)}
    assert len(pairs & planted) >= 0.9 * len(planted)
    assert len(pairs - planted) <= len(pairs & planted)
    assert set(found[found.path.str.contains("-copy")].kind) == {"exact"}
    assert set(found[found.path.str.contains("-near")].kind) == {"near"}
    assert (found[found.kind == "exact"].similarity == 1.0).all()
    assert found[found.path == mixed].mixed_labels.all()
    assert summary["mixed_label_groups"] >= 1 and summary["near_threshold_source"] == "auto"


def test_metrics_equal_scikit_learns(labelled, reviewed):
    review_dir, summary = reviewed
    rows = read_output(str(labelled[1]))
    rows = rows[rows.status == "ok"]
    truth, predicted = rows.path.str.split("/").str[0], rows.label
    assert summary["accuracy"] == pytest.approx(float((truth == predicted).mean()), abs=1e-6)
    in_top = [given in list(top) for given, top in zip(truth, rows.top_k_labels)]
    assert summary["top_k_accuracy"] == pytest.approx(float(np.mean(in_top)), abs=1e-6)
    per_class = pd.read_parquet(review_dir / "per_class.parquet")
    labels = list(per_class.label)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels,
                                                                     zero_division=0)
    np.testing.assert_allclose(per_class.precision, precision, atol=1e-12)
    np.testing.assert_allclose(per_class.recall, recall, atol=1e-12)
    np.testing.assert_allclose(per_class.f1, f1, atol=1e-12)
    np.testing.assert_array_equal(per_class.support, support)
    confusion = pd.read_parquet(review_dir / "confusion.parquet")
    matrix = confusion.pivot_table(index="true", columns="predicted", values="count", fill_value=0)
    matrix = matrix.reindex(index=labels, columns=labels, fill_value=0)
    np.testing.assert_array_equal(matrix.to_numpy(), confusion_matrix(truth, predicted, labels=labels))


def test_review_files_read_in_duckdb_and_polars(reviewed):
    review_dir, summary = reviewed
    # "true" is an SQL keyword: quoted, it names the column.
    confused = duckdb.sql(f"""select "true", predicted, count from '{review_dir}/confusion.parquet'
                              where "true" <> predicted order by count desc, "true", predicted limit 1""").fetchall()
    first = summary["most_confused"][0]
    assert confused == [(first["true"], first["predicted"], first["count"])]
    suspects = pl.read_parquet(review_dir / "suspects.parquet")
    assert suspects.height == summary["suspects"] and suspects["rank"].min() == 1


def test_text_summary(labelled, capsys):
    assert main(["review", str(labelled[1]), "--truth", "folder"]) == 0
    text = capsys.readouterr().out
    assert "accuracy 0." in text and "suspects: " in text and "overconfident" in text
    assert "duplicates: " in text and "(auto)" in text


def test_embedding_pairs_that_look_different_by_phash_are_left_out(labelled, tmp_path):
    """At a loose --similarity the digits model pairs different digits of a class; those whose
    phash values differ in more than UNLIKE_BITS bits are left out and counted, the copies kept;
    with --phash-distance off the embedding alone decides, as before."""
    from batch_infer import findings, perceptual

    def review(*extra: str) -> tuple[dict, pd.DataFrame]:
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(["review", str(labelled[1]), "--truth", "folder", "--similarity", "0.95", "--json",
                         "--output", str(tmp_path / str(len(extra))), *extra]) == 0
        return json.loads(stdout.getvalue()), pd.read_parquet(tmp_path / str(len(extra)) / "duplicates.parquet")

    (both, found), (alone, _) = review(), review("--phash-distance", "off")
    assert both["pairs_unlike"]["embedding"] > 0
    assert (both["pairs_by_signal"]["embedding"] + both["pairs_unlike"]["embedding"]
            == alone["pairs_by_signal"]["embedding"])
    assert alone["pairs_unlike"] == {}
    rows = read_output(str(labelled[1])).set_index("path")
    for _, group in found[found.signal == "embedding"].groupby("group"):
        if len(group) == 2:  # a group of one embedding pair: its two fingerprints are alike
            codes = perceptual.from_text(rows.phash[group.path].tolist())[1]
            assert perceptual.distances(codes[0], codes[1]) <= findings.UNLIKE_BITS
    pairs = {frozenset(pair) for _, group in found.groupby("group") for pair in itertools.combinations(group.path, 2)}
    assert len(pairs & labelled[3]) >= 0.9 * len(labelled[3])


def test_unmatched_names_are_listed_and_loose_matches_shown(tmp_path, capsys):
    images = tmp_path / "images"
    for row, (image, digit) in enumerate(held_out_digits(40)):
        folder = "Seven_" if digit == 7 else ("mystery" if digit == 3 else NAMES[digit])
        (images / folder).mkdir(parents=True, exist_ok=True)
        image.save(images / folder / f"{row}.png")
    image.save(images / "at-the-top.png")
    assert main(["run", "--model", SAMPLE_MODEL, "--input", str(images), "--output", str(tmp_path / "out"),
                 "--quiet"]) == 0
    capsys.readouterr()
    code, summary, _ = invoke(capsys, "review", str(tmp_path / "out"), "--truth", "folder", "--json")
    assert code == 0
    assert summary["matched"]["Seven_"] == "seven"
    threes = sum(1 for _, digit in held_out_digits(40) if digit == 3)
    assert summary["unmatched"] == {"mystery": threes}
    assert summary["with_truth"] == summary["ok"] - threes - 1


def test_no_overlap_is_exit_2_naming_both_sides(tmp_path, capsys):
    images = tmp_path / "images"
    for row, (image, _) in enumerate(held_out_digits(6)):
        (images / ("cat" if row % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        image.save(images / ("cat" if row % 2 else "dog") / f"{row}.png")
    assert main(["run", "--model", SAMPLE_MODEL, "--input", str(images), "--output", str(tmp_path / "out"),
                 "--quiet"]) == 0
    capsys.readouterr()
    code, _, err = invoke(capsys, "review", str(tmp_path / "out"), "--truth", "folder")
    assert code == 2 and "cat, dog" in err and "zero" in err and len(err.strip().splitlines()) == 1
    code, _, err = invoke(capsys, "review", str(tmp_path / "out"), "--truth", "column:split")
    assert code == 2 and "--keep-columns split" in err


def test_sorted_folder_trap_is_warned(tmp_path, capsys):
    """Folders 1..10 and a labels file in numeric order, while the model numbers its classes as
    image_dataset_from_directory would: by sorted folder name (1, 10, 2, ...). The sample model's
    class j is the digit j, so digit j goes into the j-th folder name in sorted order."""
    folders = sorted(str(n) for n in range(1, 11))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(n) for n in range(1, 11)) + "\n")
    images = tmp_path / "images"
    for row, (image, digit) in enumerate(held_out_digits(60)):
        (images / folders[digit]).mkdir(parents=True, exist_ok=True)
        image.save(images / folders[digit] / f"{row}.png")
    assert main(["run", "--model", SAMPLE_MODEL, "--labels", str(labels), "--input", str(images),
                 "--output", str(tmp_path / "out"), "--quiet"]) == 0
    capsys.readouterr()
    code, summary, _ = invoke(capsys, "review", str(tmp_path / "out"), "--truth", "folder", "--json")
    assert code == 0 and summary["accuracy"] < 0.3
    [warning] = summary["warnings"]
    assert "sorted order (1, 10, 2, 3, ...)" in warning and "--labels" in warning


def test_truth_from_a_kept_manifest_column(labelled, tmp_path, capsys):
    images = labelled[0]
    files = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))[:30]
    manifest = tmp_path / "files.csv"
    pd.DataFrame({"path": [str(images / f) for f in files],
                  "given": [f.split("/")[0] for f in files]}).to_csv(manifest, index=False)
    assert main(["run", "--model", SAMPLE_MODEL, "--input", str(manifest), "--keep-columns", "given",
                 "--output", str(tmp_path / "out"), "--quiet"]) == 0
    capsys.readouterr()
    code, summary, _ = invoke(capsys, "review", str(tmp_path / "out"), "--truth", "column:given", "--json")
    assert code == 0 and summary["with_truth"] == 30 and summary["unmatched"] == {}
    assert summary["near_threshold"] is None  # no embedding: exact copies only


def test_report_with_truth_has_a_review_section_in_chromium(labelled, tmp_path, capsys):
    from support import browser

    images, out, flipped, _, mixed = labelled
    page = tmp_path / "report.html"
    code, summary, err = invoke(capsys, "report", str(out), "--input", str(images), "--truth", "folder",
                                "--html", str(page))
    assert code == 0 and err == ""
    text = page.read_text()
    assert "Review against the given labels (folder)" in text and 'aria-label="confusion matrix"' in text
    assert "different given labels" in text and html_escaped(mixed) in text
    first_suspect = min(flipped & set(pd.read_parquet(_suspects(out, tmp_path)).path.head(3)))
    assert html_escaped(first_suspect) in text
    rendered = browser.load(page, tmp_path)
    assert rendered.console == [] and rendered.requests == []
    assert "Likely wrong labels" in rendered.dom


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def _suspects(out, tmp_path) -> Path:
    assert main(["review", str(out), "--truth", "folder", "--output", str(tmp_path / "r")]) == 0
    return tmp_path / "r" / "suspects.parquet"


def test_label_studio_export_of_the_review(labelled, reviewed, tmp_path, capsys):
    out, (review_dir, summary) = labelled[1], reviewed
    dest = tmp_path / "tasks.json"
    code, line, err = invoke(capsys, "export", str(out), "--format", "label-studio", "--review",
                             str(review_dir), "--dest", str(dest))
    assert code == 0 and err == ""
    tasks = json.loads(dest.read_text())
    assert line["exported"] == len(tasks) == summary["suspects"] + summary["duplicate_files"]
    suspects = pd.read_parquet(review_dir / "suspects.parquet")
    first = tasks[0]
    assert first["data"]["review"] == "suspect" and first["data"]["path"] == suspects.path[0]
    given, model = first["predictions"]
    assert given["model_version"] == "given label"
    assert given["result"][0]["value"]["choices"] == [suspects.given_label[0]]
    assert model["result"][0]["value"]["choices"] == [suspects.predicted[0]]
    assert first["data"]["image"].endswith(suspects.path[0])
    groups = [task["data"]["group"] for task in tasks if task["data"]["review"] == "duplicate"]
    assert groups == sorted(groups) and len(set(groups)) == summary["duplicate_groups"]
    code, _, err = invoke(capsys, "export", str(out), "--format", "csv", "--review", str(review_dir),
                          "--dest", str(tmp_path / "x.csv"))
    assert code == 2 and "label-studio" in err


def test_embeddings_are_read_part_by_part_into_rows_by_path(tmp_path):
    """Two parts, error rows without an embedding, and a part committed after the rows were
    read (a path review does not know): each vector lands on its path's row, packed in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batch_infer.vectors import read_embeddings

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((7, 3)).astype(np.float32)
    valid = np.array([True, False, True, True, True, False, True])
    paths = [f"{i}.png" for i in range(7)]
    for name, rows in (("part-a.parquet", [4, 5, 6]), ("part-b.parquet", [0, 1, 2, 3])):
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors[rows].ravel()), 3)
        column = pa.array([v if valid[r] else None for r, v in zip(rows, column.to_pylist())], column.type)
        pq.write_table(pa.table({"path": [paths[r] for r in rows], "embedding": column}), tmp_path / name)
    pq.write_table(pa.table({"path": ["late.png"], "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(np.ones(3, np.float32)), 3)}), tmp_path / "part-c.parquet")
    numbers, got = read_embeddings(str(tmp_path), paths)
    np.testing.assert_array_equal(numbers, np.flatnonzero(valid))
    np.testing.assert_array_equal(got, vectors[valid])
    assert read_embeddings(str(tmp_path), paths[:0])[1].shape == (0, 3)


def test_embedding_search_finds_exactly_the_pairs_a_full_comparison_does():
    """Wide embeddings are first compared through a bound; it may only overstate a similarity,
    so the pairs found are those of the full product, including pairs just either side of the
    threshold."""
    rng = np.random.default_rng(0)
    rows, width = duplicates.BLOCK_COLUMNS + 3000, 1280
    classes = rng.standard_normal((10, 48), dtype=np.float32) * 3
    mixing = rng.standard_normal((48, width), dtype=np.float32)
    latent = classes[rng.integers(0, 10, rows)] + rng.standard_normal((rows, 48), dtype=np.float32)
    vectors = np.maximum(latent @ mixing + 2 * rng.standard_normal((rows, width), dtype=np.float32), 0)
    copies = len(vectors[1::40])
    noise = rng.uniform(0.5, 5, (copies, 1)).astype(np.float32)  # copies 0.91 to 0.999 alike
    vectors[1::40] = vectors[0::40][:copies] + noise * rng.standard_normal((copies, width), dtype=np.float32)
    unit = duplicates.unit_centred(vectors.copy())
    assert duplicates.bounded(unit) is not None
    full = unit @ unit.T
    for threshold in (0.95, 0.99):
        pairs, used, crowded = duplicates.near_pairs(vectors.copy(), threshold)
        first, second = np.nonzero(np.triu(full >= threshold, 1))
        expected = [(a, b) for a, b in zip(first.tolist(), second.tolist()) if not (crowded[a] or crowded[b])]
        planted = sum(1 for a, b in expected if a % 40 == 0 and b == a + 1)
        assert copies // 10 < planted < copies  # copies either side of the threshold
        assert sorted(zip(pairs.first.tolist(), pairs.second.tolist())) == expected
        np.testing.assert_allclose(pairs.similarity, full[pairs.first, pairs.second], atol=1e-5)
