"""Duplicate groups: exact copies by content hash, near copies by embedding similarity.

Near copies are pairs whose embeddings, centred on the dataset's mean and scaled to unit length,
are closer than a threshold. Centring matters: pooled ReLU features are all non-negative, so
without it any two images of a dataset look alike (cosine 0.6 to 0.9). No fixed threshold
suits every model, though: a small classifier's penultimate layer puts two different images of
a class as close as a recompressed copy is to its original in a large model's features. So by
default the threshold comes from the data: a pair is a near copy when its distance (1 - cosine)
is under AUTO_FACTOR times the median distance from an image to its nearest other image,
measured on a sample. `--similarity S` fixes it instead.

A model also maps some images it cannot tell apart (low contrast, nothing it was trained to
see) to one point, and there dozens of different images pass any threshold and chain into one
false group. So a row with more than CROWD neighbours above the threshold is left out of near
pairs (and counted): copies come in pairs or small groups, and a crowd of exact copies is still
found by its hash.

The search is exact (no pair above the threshold is missed) and runs in blocks of matrix
products, so memory stays at a few blocks whatever the row count. Wide embeddings are first
compared in PROJECTED dimensions with a bound that can only overstate a similarity (`bounded`),
and only the pairs that pass it are compared in full: at 100,000 rows of 1,280 floats that is a
fifth of the arithmetic. Pairs of both kinds are joined into connected components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUTO_FACTOR = 0.1  # measured: see README "Reviewing a labelled dataset"
AUTO_SAMPLE = 2000
CROWD = 8
BLOCK_ROWS, BLOCK_COLUMNS = 2048, 8192  # 64 MiB of float32 similarities at a time
PROJECTED = 256  # dimensions of the first, bounded comparison of wider embeddings
PROJECTION_SAMPLE = 4096  # rows whose principal directions the projection keeps
# A block in which more than this share of pairs pass the bound is compared in full: checking a
# pair alone reads two rows, which costs more than its share of one matrix product beyond it.
DENSE = 0.005
VERIFY_PAIRS = 4096  # pairs checked in full at a time (two 20 MiB gathers at 1,280-d)
SLACK = 1e-4  # float32 rounding in the bound is far below this


@dataclass(frozen=True)
class Pairs:
    """Edges between row numbers: `first < second`, with their similarity."""
    first: np.ndarray
    second: np.ndarray
    similarity: np.ndarray

    @classmethod
    def empty(cls) -> "Pairs":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def exact_pairs(hashes: list[str | None]) -> Pairs:
    """Each row with a hash seen before is joined to the first row with that hash (enough for
    the components); rows without a hash (never read) join nothing."""
    first_seen: dict[str, int] = {}
    first, second = [], []
    for row, value in enumerate(hashes):
        if value is None:
            continue
        seen = first_seen.setdefault(value, row)
        if seen != row:
            first.append(seen)
            second.append(row)
    return Pairs(np.array(first, np.int64), np.array(second, np.int64), np.ones(len(first), np.float32))


def unit_centred(vectors: np.ndarray) -> np.ndarray:
    """float32 rows centred on their mean and scaled to unit length, in place and a block of
    rows at a time: at 100,000 rows of 1,280 floats a copy is half a gigabyte (np.linalg.norm
    over the whole array makes one). A row equal to the mean stays zero."""
    mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
    for top in range(0, len(vectors), BLOCK_ROWS):
        block = vectors[top:top + BLOCK_ROWS]
        block -= mean
        block /= np.maximum(np.sqrt(np.einsum("ij,ij->i", block, block))[:, None], np.float32(1e-12))
    return vectors


def nearest_similarity(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each of `rows`' highest similarity to any other row of `vectors`."""
    best = np.full(len(rows), -np.inf, np.float32)
    for left in range(0, len(vectors), BLOCK_COLUMNS):
        similarity = vectors[rows] @ vectors[left:left + BLOCK_COLUMNS].T
        own = rows - left
        inside = np.flatnonzero((own >= 0) & (own < similarity.shape[1]))
        similarity[inside, own[inside]] = -np.inf
        best = np.maximum(best, similarity.max(axis=1))
    return best


def auto_threshold(vectors: np.ndarray, seed: int = 0) -> float:
    """The similarity above which a pair counts as a near copy: AUTO_FACTOR of the median
    nearest-neighbour distance of a seeded sample of rows, against all rows."""
    if len(vectors) < 2:
        return 1.0
    sample = np.random.default_rng(seed).choice(len(vectors), min(AUTO_SAMPLE, len(vectors)), replace=False)
    median_distance = float(np.median(1.0 - nearest_similarity(vectors, np.sort(sample))))
    return round(1.0 - AUTO_FACTOR * median_distance, 6)


def near_pairs(vectors: np.ndarray, threshold: float | None = None) -> tuple[Pairs, float, np.ndarray]:
    """(every pair of rows whose centred cosine similarity is at least `threshold` and neither of
    which is crowded, the threshold used: `auto_threshold` when None, which rows are crowded),
    by blocked products over the upper triangle only. `vectors` (float32) are centred and scaled
    in place."""
    vectors = unit_centred(vectors)
    rows = len(vectors)
    if threshold is None:
        threshold = auto_threshold(vectors)
    bound = bounded(vectors)
    found = []
    for top in range(0, rows, BLOCK_ROWS):
        for left in range(top, rows, BLOCK_COLUMNS):
            columns = slice(left, left + BLOCK_COLUMNS)
            block = slice(top, top + BLOCK_ROWS)
            if bound is not None:
                i, j = _above(bound[block] @ bound[columns].T, threshold - SLACK, top, left)
                if len(i) <= DENSE * BLOCK_ROWS * BLOCK_COLUMNS:
                    found.append(_verified(vectors, i, j, threshold))
                    continue
            similarity = vectors[block] @ vectors[columns].T
            i, j = _above(similarity, threshold, top, left)
            found.append((i, j, similarity[i - top, j - left]))
    if not found:
        return Pairs.empty(), threshold, np.zeros(rows, bool)
    pairs, crowded = without_crowds(Pairs(*(np.concatenate(parts) for parts in zip(*found))), rows)
    return pairs, threshold, crowded


def bounded(vectors: np.ndarray) -> np.ndarray | None:
    """Unit rows as PROJECTED + 1 columns whose dot products bound their similarities from above:
    the projection on a sample's principal directions, and the length of what it leaves out
    (the left-out parts' dot product is at most their lengths' product). None for embeddings
    too narrow for it to save much."""
    rows, width = vectors.shape
    if width < 2 * PROJECTED or rows <= BLOCK_COLUMNS:
        return None
    sample = vectors[np.random.default_rng(0).choice(rows, min(PROJECTION_SAMPLE, rows), replace=False)]
    basis = np.linalg.svd(sample, full_matrices=False)[2][:PROJECTED].T.copy()
    bound = np.empty((rows, PROJECTED + 1), np.float32)
    for top in range(0, rows, BLOCK_COLUMNS):
        block = vectors[top:top + BLOCK_COLUMNS]
        projected = bound[top:top + BLOCK_COLUMNS, :PROJECTED]
        np.matmul(block, basis, out=projected)
        left_out = np.einsum("ij,ij->i", block, block) - np.einsum("ij,ij->i", projected, projected)
        bound[top:top + BLOCK_COLUMNS, PROJECTED] = np.sqrt(np.maximum(left_out, 0))
    return bound


def _above(similarity: np.ndarray, threshold: float, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of a block's entries at or above `threshold`, as row numbers with row <
    column; only rows whose maximum passes are searched, which spares a full scan."""
    hot = np.flatnonzero(similarity.max(axis=1) >= threshold)
    i, j = np.nonzero(similarity[hot] >= threshold)
    i, j = hot[i] + top, j + left
    keep = i < j
    return i[keep], j[keep]


def _verified(vectors: np.ndarray, first: np.ndarray, second: np.ndarray, threshold: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs whose full similarity is at least `threshold`, with it."""
    similarity = np.empty(len(first), np.float32)
    for start in range(0, len(first), VERIFY_PAIRS):
        chunk = slice(start, start + VERIFY_PAIRS)
        similarity[chunk] = np.einsum("ij,ij->i", vectors[first[chunk]], vectors[second[chunk]])
    keep = similarity >= threshold
    return first[keep], second[keep], similarity[keep]


def without_crowds(pairs: Pairs, rows: int) -> tuple[Pairs, np.ndarray]:
    """(the pairs neither of whose rows has more than CROWD neighbours, which rows have)."""
    neighbours = np.bincount(pairs.first, minlength=rows) + np.bincount(pairs.second, minlength=rows)
    crowded = neighbours > CROWD
    keep = ~(crowded[pairs.first] | crowded[pairs.second])
    return Pairs(pairs.first[keep], pairs.second[keep], pairs.similarity[keep]), crowded


def components(rows: int, *pairs: Pairs) -> np.ndarray:
    """A component id per row (union-find with path halving); rows in no pair are their own."""
    parent = np.arange(rows)

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for edges in pairs:
        for a, b in zip(edges.first.tolist(), edges.second.tolist()):
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(node) for node in range(rows)])


def best_similarity(rows: int, *pairs: Pairs) -> np.ndarray:
    """Each row's highest similarity to any row it is paired with (0 when in no pair)."""
    best = np.zeros(rows, np.float32)
    for edges in pairs:
        np.maximum.at(best, edges.first, edges.similarity)
        np.maximum.at(best, edges.second, edges.similarity)
    return best
