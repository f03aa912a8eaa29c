"""Near copies by perceptual fingerprint: pairs of 64-bit `phash` values that differ in at most
a few bits, found without comparing every pair.

Multi-index hashing: the 64 bits are cut into `max_bits + 1` chunks, and two fingerprints that
differ in at most `max_bits` bits agree exactly on at least one chunk (pigeonhole). So only rows
that share a chunk value are compared, chunk by chunk; a group of rows sharing a value is
compared in blocks, so memory stays at a block whatever the data (a folder of black frames
shares every chunk). At 100,000 rows of real photos the candidates are a few million, not five
billion.
"""

from __future__ import annotations

import numpy as np

from .duplicates import Pairs
from .perceptual import distances

BLOCK = 2048  # rows of a shared chunk value compared at a time: 4 MiB of distances


def chunks(max_bits: int) -> list[tuple[int, int]]:
    """(shift, width) of `max_bits + 1` chunks that cover the 64 bits, as even as can be."""
    count = max_bits + 1
    widths = [64 // count + (1 if n < 64 % count else 0) for n in range(count)]
    shifts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(shifts, widths))


def near_pairs(codes: np.ndarray, max_bits: int) -> Pairs:
    """Every pair of rows (`first < second`) whose uint64 `codes` differ in at most `max_bits`
    bits (0 to 63), with its similarity 1 - bits / 64."""
    codes = np.asarray(codes, np.uint64)
    found = []
    for shift, width in chunks(max_bits):
        keys = (codes >> np.uint64(shift)) & np.uint64(2**width - 1)
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts[ends - starts >= 2], ends[ends - starts >= 2]):
            found.append(_within(codes, np.sort(order[start:end]), max_bits))
    if not found:
        return Pairs.empty()
    first, second, bits = (np.concatenate(parts) for parts in zip(*found))
    unique = np.unique(first * len(codes) + second, return_index=True)[1]  # a pair may share several chunks
    return Pairs(first[unique], second[unique], (1.0 - bits[unique] / 64.0).astype(np.float32))


def _within(codes: np.ndarray, rows: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, bits) of the pairs among `rows` (ascending) within `max_bits`, in blocks."""
    parts = []
    for top in range(0, len(rows), BLOCK):
        for left in range(top, len(rows), BLOCK):
            bits = distances(codes[rows[top:top + BLOCK], None], codes[None, rows[left:left + BLOCK]])
            i, j = np.nonzero(bits <= max_bits)
            keep = top + i < left + j
            i, j = i[keep], j[keep]
            parts.append((rows[top + i], rows[left + j], bits[i, j]))
    return tuple(np.concatenate(part) for part in zip(*parts))
