"""`batch-infer review`: how well it finds planted label errors and copies, and what it costs.

    python benchmarks/review.py quality [PHOTOS]   # planted errors and copies, several datasets and models
    python benchmarks/review.py fingerprint PHOTOS # phash bits between images and their copies
    python benchmarks/review.py scale              # time and peak RSS on 20,000 and 100,000 rows

quality: (0) with a folder PHOTOS, crops of its photos at random places and scales, labelled by
photo, scored by a small CNN trained here on other crops of them, with its 64-d penultimate
layer; (1) the 450 held-out digits of scikit-learn's load_digits (the sample model never saw
them), scored by sample_data/digits.keras with its 32-d penultimate layer as the embedding;
(2) 1,000 drawn shapes (circle, square, triangle, cross; random sizes, places and colours on
random backgrounds), scored by a small CNN trained here on 3,000 others, with its 64-d
penultimate layer; (3) 400 crops of scikit-learn's two photos at random places and scales,
scored by an untrained MobileNetV2 with its 1,280-d pooled features. Into each: 5 % of labels
flipped to another class (not the photos), 20 exact copies, and 40 near copies (1.5x or 0.75x
bicubic, then JPEG quality 70).
Prints the share of flipped files among the top 10 % of rows by doubt, and for copies the pairs
found and the false pairs: by the embedding alone (automatic and fixed thresholds) and by phash
and embedding together.

fingerprint: crops of the photos in PHOTOS, drawn shapes and held-out digits, each with one copy
(resized, recompressed or cropped); the phash bits that differ between an image and its copy,
and between different images.

scale: an OUT of N rows with 1,280-d embeddings and phash values (random, with 1 % planted near
pairs), written
as the run writes it; `batch-infer review` timed in a fresh process, peak RSS from wait4.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FIXED = (0.9, 0.95, 0.98, 0.99, 0.995)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batch_infer", *args], cwd=REPO, check=True,
                          capture_output=True, text=True)


def digit_images() -> list[tuple[Image.Image, str]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, held_out = train_test_split(np.arange(len(digits.target)), test_size=0.25, random_state=0,
                                   stratify=digits.target)
    return [(Image.fromarray(np.round(digits.images[i] * (255 / 16)).astype(np.uint8), "L")
             .resize((32, 32), Image.BILINEAR).convert("RGB"), DIGITS[digits.target[i]]) for i in held_out]


def photo_crops(count: int = 400) -> list[tuple[Image.Image, str]]:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    photos = load_sample_images()
    crops = []
    for n in range(count):
        which = n % 2
        image = Image.fromarray(photos.images[which])
        side = int(rng.integers(120, 300))
        left, top = int(rng.integers(0, image.width - side)), int(rng.integers(0, image.height - side))
        crops.append((image.crop((left, top, left + side, top + side)), str(which)))  # as the model labels its classes
    return crops


SHAPES = ["circle", "square", "triangle", "cross"]


def shape(kind: str, rng: np.random.Generator) -> Image.Image:
    from PIL import ImageDraw

    width, height = (int(v) for v in rng.integers(80, 200, 2))
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw, colour = ImageDraw.Draw(image), tuple(int(v) for v in rng.integers(0, 255, 3))
    side = int(rng.integers(20, min(width, height) - 10))
    x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    if kind == "circle":
        draw.ellipse((x, y, x + side, y + side), fill=colour)
    elif kind == "square":
        draw.rectangle((x, y, x + side, y + side), fill=colour)
    elif kind == "triangle":
        draw.polygon([(x, y + side), (x + side, y + side), (x + side // 2, y)], fill=colour)
    else:
        draw.rectangle((x + side // 3, y, x + 2 * side // 3, y + side), fill=colour)
        draw.rectangle((x, y + side // 3, x + side, y + 2 * side // 3), fill=colour)
    return image


def small_cnn(path: str, training: list[tuple[Image.Image, str]], classes: list[str]) -> str:
    """A small CNN trained on `training` (64x64 inputs; 40 epochs), saved with its labels."""
    import keras

    keras.utils.set_random_seed(0)
    pixels = np.stack([np.asarray(image.convert("RGB").resize((64, 64), Image.BILINEAR), np.float32)
                       for image, _ in training])
    targets = np.array([classes.index(label) for _, label in training])
    model = keras.Sequential([
        keras.Input((64, 64, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(64, activation="relu"), keras.layers.Dense(len(classes), activation="softmax")])
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(pixels, targets, epochs=40, batch_size=64, verbose=0)
    model.save(path)
    with open(path.replace(".keras", ".labels.txt"), "w") as handle:
        handle.write("\n".join(classes) + "\n")
    return path


def shapes_model(path: str) -> tuple[str, list[tuple[Image.Image, str]]]:
    """(a CNN trained on 3,000 drawn shapes, saved with its labels; 1,000 new drawn shapes)."""
    rng = np.random.default_rng(0)
    training = [(shape(SHAPES[n % 4], rng), SHAPES[n % 4]) for n in range(3000)]
    return small_cnn(path, training, SHAPES), [(shape(SHAPES[n % 4], rng), SHAPES[n % 4]) for n in range(1000)]


def plant(images: list[tuple[Image.Image, str]], root: str, classes: list[str], flip: float,
          seed: int = 1) -> tuple[set[str], set[frozenset[str]]]:
    """Writes the images as PNGs under root/<given label>/, flipping a share `flip` of labels
    and adding 20 exact and 40 near copies; (flipped paths, planted copy pairs)."""
    rng = np.random.default_rng(seed)
    flipped_rows = set(rng.choice(len(images), int(flip * len(images)), replace=False).tolist())
    paths, flipped, pairs = [], set(), set()
    for row, (image, label) in enumerate(images):
        if row in flipped_rows:
            label = str(rng.choice([name for name in classes if name != label]))
        path = f"{label}/{row:05d}.png"
        if row in flipped_rows:
            flipped.add(path)
        os.makedirs(os.path.join(root, label), exist_ok=True)
        image.save(os.path.join(root, path))
        paths.append(path)
    originals = rng.choice(len(images), 60, replace=False)
    for n, row in enumerate(originals):
        source = paths[row]
        if n < 20:
            copy = source.replace(".png", "_exact.png")
            shutil.copy(os.path.join(root, source), os.path.join(root, copy))
        else:
            image = images[row][0]
            scale = 1.5 if n % 2 else 0.75
            buffer = io.BytesIO()
            image.resize((int(image.width * scale), int(image.height * scale)), Image.BICUBIC).save(
                buffer, "JPEG", quality=70)
            copy = source.replace(".png", "_near.jpg")
            with open(os.path.join(root, copy), "wb") as handle:
                handle.write(buffer.getvalue())
        pairs.add(frozenset((source, copy)))
    return flipped, pairs


def found_pairs(duplicates: pd.DataFrame) -> set[frozenset[str]]:
    return {frozenset(pair) for _, group in duplicates.groupby("group")
            for pair in itertools.combinations(sorted(group.path), 2)}


def quality_of(name: str, model: str, embedding: list[str], images, classes, flip: float) -> None:
    """Plants errors and copies, scores, and reviews: near copies by the embedding alone (as
    before the phash column), by phash and embedding (the default), and by the embedding alone
    at fixed thresholds."""
    from batch_infer import perceptual

    work = tempfile.mkdtemp(prefix="bench-review-")
    try:
        root, out = os.path.join(work, "images"), os.path.join(work, "out")
        flipped, planted = plant(images, root, classes, flip)
        cli("run", "--model", model, "--input", root, "--output", out, "--quiet", *embedding)
        print(f"\n## {name}: {sum(len(f) for _, _, f in os.walk(root))} files, {len(flipped)} flipped "
              f"labels, {len(planted)} planted copy pairs")
        colour = pd.read_parquet(out, columns=["path", "mean_colour"]).set_index("path").mean_colour
        first, second = zip(*(sorted(pair) for pair in planted))
        apart = perceptual.colour_distances(perceptual.colours_from_text(colour[list(first)].tolist())[1],
                                            perceptual.colours_from_text(colour[list(second)].tolist())[1])
        print(f"mean colours of the planted copy pairs, levels apart: median {np.median(apart):.0f}, max {apart.max()}")
        reviews = [("embedding only", ["--phash-distance", "off"]), ("phash and embedding", []),
                   ("phash within 4 bits and embedding", ["--phash-distance", "4"]),
                   ("phash within 2 bits and embedding", ["--phash-distance", "2"])]
        reviews += [("embedding only", ["--phash-distance", "off", "--similarity", str(s)]) for s in FIXED]
        for number, (signals, extra) in enumerate(reviews):
            review_dir = os.path.join(work, f"review-{number}")
            summary = json.loads(cli("review", out, "--truth", "folder", "--output", review_dir, "--json",
                                     *extra).stdout)
            pairs = found_pairs(pd.read_parquet(os.path.join(review_dir, "duplicates.parquet")))
            line = (f"{signals}, threshold {summary['near_threshold']} ({summary['near_threshold_source']}): "
                    f"copy pairs found {len(pairs & planted)}/{len(planted)}, false pairs {len(pairs - planted)}, "
                    f"pairs by signal {summary['pairs_by_signal']}, crowded rows {summary['crowded']}")
            if number == 1 and flip:
                suspects = pd.read_parquet(os.path.join(review_dir, "suspects.parquet"))
                top = set(suspects[suspects["rank"] <= 0.1 * summary["rows"]].path)
                line = (f"accuracy {summary['accuracy']:.3f}; flipped among the top 10 % by doubt: "
                        f"{len(top & flipped)}/{len(flipped)}\n{line}")
            print(line, flush=True)
    finally:
        shutil.rmtree(work)


def quality(photos: str | None) -> None:
    import corpora

    if photos:
        work = tempfile.mkdtemp(prefix="bench-review-photos-")
        try:
            training, held_out = photo_folder_crops(photos, 60, seed=1), photo_folder_crops(photos, 20, seed=2)
            classes = sorted({label for _, label in training})
            model = small_cnn(os.path.join(work, "photos.keras"), training, classes)
            quality_of(f"crops of the photos in {os.path.basename(os.path.normpath(photos))}, labelled by photo, "
                       "a small CNN trained on other crops, penultimate (64-d)", model,
                       ["--embedding-layer", "penultimate"], held_out, classes, flip=0.05)
        finally:
            shutil.rmtree(work)
    quality_of("held-out digits, digits.keras penultimate (32-d)", os.path.join(REPO, "sample_data", "digits.keras"),
               ["--embedding-layer", "penultimate"], digit_images(), DIGITS, flip=0.05)
    work = tempfile.mkdtemp(prefix="bench-review-shapes-")
    try:
        model, images = shapes_model(os.path.join(work, "shapes.keras"))
        quality_of("drawn shapes, a small CNN's penultimate layer (64-d)", model,
                   ["--embedding-layer", "penultimate"], images, SHAPES, flip=0.05)
    finally:
        shutil.rmtree(work)
    quality_of("photo crops, untrained MobileNetV2 features (1,280-d)", corpora.make_mobilenet_features(),
               ["--output-key", "probs", "--embedding-key", "features"], photo_crops(), [], flip=0.0)


TRANSFORMS = {  # name: what makes a copy of an image
    "resized 0.5x": lambda image, rng: _resized(image, 0.5),
    "resized 0.75x": lambda image, rng: _resized(image, 0.75),
    "resized 1.5x": lambda image, rng: _resized(image, 1.5),
    "resized 2x": lambda image, rng: _resized(image, 2.0),
    "JPEG q50": lambda image, rng: _jpeg(image, 50),
    "JPEG q70": lambda image, rng: _jpeg(image, 70),
    "JPEG q95": lambda image, rng: _jpeg(image, 95),
    "0.75x then JPEG q70": lambda image, rng: _jpeg(_resized(image, 0.75), 70),
    "crop 95 %": lambda image, rng: _cropped(image, 0.95, rng),
    "crop 90 %": lambda image, rng: _cropped(image, 0.90, rng),
}


def _resized(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _cropped(image: Image.Image, keep: float, rng: np.random.Generator) -> Image.Image:
    """A box of `keep` of each side at a random place."""
    width, height = round(image.width * keep), round(image.height * keep)
    left, top = int(rng.integers(0, image.width - width + 1)), int(rng.integers(0, image.height - height + 1))
    return image.crop((left, top, left + width, top + height))


def photo_folder_crops(folder: str, per_photo: int = 12, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """`per_photo` random square crops (a third to nine tenths of the short side) of each photo
    in `folder`, labelled by photo: different images that share content, the hard case for a
    fingerprint."""
    rng = np.random.default_rng(seed)
    crops = []
    for name in sorted(os.listdir(folder)):
        try:
            photo = Image.open(os.path.join(folder, name)).convert("RGB")
        except OSError:
            continue
        if min(photo.size) < 200:
            continue
        for _ in range(per_photo):
            side = int(rng.integers(min(photo.size) // 3, min(photo.size) * 9 // 10))
            left, top = int(rng.integers(0, photo.width - side)), int(rng.integers(0, photo.height - side))
            crops.append((photo.crop((left, top, left + side, top + side)), os.path.splitext(name)[0]))
    return crops


def fingerprint(photos: str) -> None:
    """Bits that differ between the phash of an image and of each kind of copy, and between
    different images: random crops of the photos in `photos`, drawn shapes and held-out digits.
    Every file goes through `batch-infer run` (the digits model: its 32x32 input makes JPEGs
    decode at an eighth, the coarsest case), and the phash column is read back."""
    from batch_infer import perceptual

    rng = np.random.default_rng(0)
    sets = {"photo crops": photo_folder_crops(photos),
            "drawn shapes": [(shape(SHAPES[n % 4], rng), SHAPES[n % 4]) for n in range(400)],
            "held-out digits": digit_images()[:400]}
    work = tempfile.mkdtemp(prefix="bench-fingerprint-")
    try:
        root, out = os.path.join(work, "images"), os.path.join(work, "out")
        copies = []  # (set, transform, original path, copy path)
        for set_name, images in sets.items():
            os.makedirs(os.path.join(root, set_name))
            for row, (image, _) in enumerate(images):
                path = f"{set_name}/{row:04d}.png"
                image.save(os.path.join(root, path))
                transform = list(TRANSFORMS)[row % len(TRANSFORMS)]
                copy = f"{set_name}/{row:04d}-copy{row % len(TRANSFORMS)}.png"
                TRANSFORMS[transform](image, rng).save(os.path.join(root, copy))
                copies.append((set_name, transform, path, copy))
        cli("run", "--model", os.path.join(REPO, "sample_data", "digits.keras"), "--input", root,
            "--output", out, "--quiet")
        rows = pd.read_parquet(out, columns=["path", "phash"]).set_index("path").phash
        value = {path: int(text, 16) for path, text in rows.items()}
        codes = {path: np.uint64(value) for path, value in value.items()}
        table = pd.DataFrame([(s, t, int(perceptual.distances(codes[a], codes[b]))) for s, t, a, b in copies],
                             columns=["set", "transform", "bits"])
        within = (2, 4, 6, 8)
        print("\n## phash bits (of 64) that differ between an image and its copy\n\n| copy | pairs | median | "
              "90th percentile | max | " + " | ".join(f"within {t}" for t in within) + " |\n" + "|---" * 9 + "|")
        for transform, group in table.groupby("transform", sort=False):
            print(f"| {transform} | {len(group)} | {group.bits.median():.0f} | {group.bits.quantile(0.9):.0f} | "
                  f"{group.bits.max()} | " + " | ".join(f"{(group.bits <= t).mean():.0%}" for t in within) + " |")
        print("\n## phash bits that differ between different images (every pair of originals in a set)\n\n"
              "| set | images | pairs | 1st percentile | " + " | ".join(f"pairs within {t}" for t in within)
              + " |\n" + "|---" * 8 + "|")
        for set_name, images in sets.items():
            originals = np.array([codes[f"{set_name}/{row:04d}.png"] for row in range(len(images))], np.uint64)
            apart = perceptual.distances(originals[:, None], originals[None, :])[np.triu_indices(len(originals), 1)]
            print(f"| {set_name} | {len(originals)} | {len(apart):,} | {np.percentile(apart, 1):.0f} | "
                  + " | ".join(str(int((apart <= t).sum())) for t in within) + " |", flush=True)
    finally:
        shutil.rmtree(work)


def synthetic_out(out: str, rows: int, width: int = 1280, part_rows: int = 5000) -> None:
    """N rows in the run's schema: 10 classes, random embeddings and phash values, each with
1 % near pairs."""
    rng = np.random.default_rng(0)
    os.makedirs(out)
    labels = np.array(DIGITS)
    for first in range(0, rows, part_rows):
        n = min(part_rows, rows - first)
        vectors = rng.standard_normal((n, width), dtype=np.float32)
        vectors[1::100] = vectors[0::100][:len(vectors[1::100])] + 0.05 * rng.standard_normal(
            (len(vectors[1::100]), width), dtype=np.float32)
        scores = rng.dirichlet(np.ones(10), n).astype(np.float32)
        order = np.argsort(-scores, axis=1)[:, :5]
        top = np.take_along_axis(scores, order, axis=1)
        given = labels[rng.integers(0, 10, n)]
        phash = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
        phash[1::100] = phash[0::100][:len(phash[1::100])] ^ np.uint64(0b101)  # 2 bits apart
        table = pa.table({
            "path": [f"{g}/{first + i:07d}.jpg" for i, g in enumerate(given)],
            "status": ["ok"] * n, "error": pa.nulls(n, pa.string()),
            "label": labels[order[:, 0]], "score": top[:, 0],
            "top_k_labels": labels[order].tolist(), "top_k_indices": order.astype(np.int32).tolist(),
            "top_k_scores": top.tolist(),
            "content_hash": [f"{first + i:016x}" for i in range(n)],
            "phash": [f"{int(value):016x}" for value in phash],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), width)},
            metadata={b"batch_infer.labels": json.dumps(DIGITS).encode()})
        pq.write_table(table, os.path.join(out, f"part-{first:08d}.parquet"))


def scale() -> None:
    print("| rows | review s | peak RSS MB | duplicate groups |\n|---|---|---|---|")
    for rows in (20_000, 100_000):
        work = tempfile.mkdtemp(prefix="bench-review-")
        try:
            out = os.path.join(work, "out")
            synthetic_out(out, rows)
            started = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-m", "batch_infer", "review", out, "--truth", "folder",
                                        "--output", os.path.join(work, "review"), "--json"],
                                       cwd=REPO, stdout=subprocess.PIPE, text=True)
            stdout = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - started
            assert os.waitstatus_to_exitcode(status) == 0
            summary = json.loads(stdout)
            print(f"| {rows:,} | {seconds:.1f} | {usage.ru_maxrss / 1024:.0f} | {summary['duplicate_groups']} |",
                  flush=True)
        finally:
            shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("quality", "scale", "fingerprint"))
    parser.add_argument("photos", nargs="?", help="a folder of photos (JPEG or PNG), for fingerprint (needed) "
                                                  "and quality (a further dataset of their crops)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores", flush=True)
    if args.what == "fingerprint":
        fingerprint(args.photos)
    else:
        quality(args.photos) if args.what == "quality" else scale()


if __name__ == "__main__":
    main()
