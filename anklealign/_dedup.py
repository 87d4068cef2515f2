"""Duplicate groups: exact (same bytes or same decoded pixels) and near (perceptual hash, verified).

Near-duplicate rule: two images are near-duplicates when their 64-bit pHashes differ in at most
:data:`NEAR_BITS` bits (a loose pre-filter) *and* their 32x32 grayscale thumbnails differ by at most
:data:`NEAR_MEAN` on average and :data:`NEAR_MAX` at any pixel (0-255). Calibration (see the tests):
resized (down to 120 px wide) and re-encoded (JPEG quality 15-92, PNG, WebP) copies of photographs,
and the twin's resized/re-encoded copies, stay within 4 bits, mean 4 and max 34; different pictures
of the twin come as close as 4 bits but never below mean 10. The thumbnail check matters: a local change
such as a foot in another pose in front of the same background leaves a perceptual hash almost
unchanged but moves some thumbnail pixels by 60 or more, and such photos are different pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NEAR_BITS", "NEAR_MAX", "NEAR_MEAN", "Groups", "find_groups"]

NEAR_BITS = 12
NEAR_MEAN = 6.0
NEAR_MAX = 40
_ROWS = 512  # pairwise Hamming distances are computed this many rows at a time


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def labels(self) -> list[int]:
        """Component index per element, numbered by each component's first element (stable)."""
        numbering: dict[int, int] = {}
        return [numbering.setdefault(self.find(i), len(numbering)) for i in range(len(self.parent))]


@dataclass(frozen=True)
class Groups:
    """Component ids of images (given in a fixed order, e.g. sorted by id).

    Attributes:
        exact: (N,) component of identical files/pixels.
        group: (N,) component of exact *or* near duplicates (every exact component lies inside one).
    """

    exact: list[int]
    group: list[int]

    def members(self) -> dict[int, list[int]]:
        """Group id -> element indices."""
        out: dict[int, list[int]] = {}
        for index, gid in enumerate(self.group):
            out.setdefault(gid, []).append(index)
        return out

    def count_duplicate_groups(self) -> int:
        """Groups of two or more images."""
        return sum(len(m) > 1 for m in self.members().values())


def near_duplicate(phash_a: int, phash_b: int, thumb_a: np.ndarray, thumb_b: np.ndarray) -> bool:
    """The near-duplicate rule for one pair (see the module docstring)."""
    if (phash_a ^ phash_b).bit_count() > NEAR_BITS:
        return False
    diff = np.abs(thumb_a.astype(np.int16) - thumb_b.astype(np.int16))
    return bool(diff.mean() <= NEAR_MEAN and diff.max() <= NEAR_MAX)


def find_groups(sha256: Sequence[str], pixel_sha256: Sequence[str], phash: Sequence[int],
                thumbs: Sequence[np.ndarray]) -> Groups:
    """Union-find over all images: exact duplicates first, then verified near-duplicates."""
    n = len(sha256)
    exact = _UnionFind(n)
    for keys in (sha256, pixel_sha256):
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            exact.union(first.setdefault(key, index), index)
    near = _UnionFind(n)
    for index in range(n):
        near.union(exact.find(index), index)
    hashes = np.array(phash, dtype=np.uint64)
    for start in range(0, n, _ROWS):
        block = np.bitwise_count(hashes[start:start + _ROWS, None] ^ hashes[None, :])   # (rows, N)
        for row, col in np.argwhere(block <= NEAR_BITS):
            i, j = start + int(row), int(col)
            if i >= j or near.find(i) == near.find(j):
                continue
            if near_duplicate(phash[i], phash[j], thumbs[i], thumbs[j]):
                near.union(i, j)
    return Groups(exact=exact.labels(), group=near.labels())
