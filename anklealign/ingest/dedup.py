"""Duplicate groups: exact (same bytes or same decoded pixels), near (perceptual hash, verified) and mirrored.

Near-duplicate rule: two images are near-duplicates when their 64-bit pHashes differ in at most
:data:`NEAR_BITS` bits (a loose pre-filter) *and* their 32x32 grayscale thumbnails differ by at most
:data:`NEAR_MEAN` on average and :data:`NEAR_MAX` at any pixel (0-255). Calibration (see the tests):
resized (down to 120 px wide) and re-encoded (JPEG quality 15-92, PNG, WebP) copies of photographs,
and the twin's resized/re-encoded copies, stay within 4 bits, mean 4 and max 34; different pictures
of the twin come as close as 4 bits but never below mean 10. The thumbnail check matters: a local change
such as a foot in another pose in front of the same background leaves a perceptual hash almost
unchanged but moves some thumbnail pixels by 60 or more, and such photos are different pictures.

Mirror rule: a horizontally mirrored copy is a duplicate too (in the test set it would be leakage).
Image B is a near-duplicate of image A when B's pHash and thumbnail match, by the rule above, those of
A itself *or those of A's horizontally mirrored picture*; and B is an exact mirror of A when B's pixel
sha256 equals that of A's mirrored pixels. Mirrored pairs, exact mirrors included, count as *near*
duplicates: they join one group (so cross-validation folds never split them and a mirrored copy of a
test image never trains) but not one exact set (both stay in training, as other near copies do).
On the twin, which flips no picture, different pictures never come closer to each other's mirror than
mean 10 (seeds 0-3 at scale 1.0), like the plain rule.

Groups are the connected components (:func:`scipy.sparse.csgraph.connected_components`) of the graph
whose edges are these pairs, numbered by each component's first element in the given order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

__all__ = ["NEAR_BITS", "NEAR_MAX", "NEAR_MEAN", "Groups", "find_groups"]

NEAR_BITS = 12
NEAR_MEAN = 6.0
NEAR_MAX = 40
_ROWS = 512     # pairwise Hamming distances are computed this many rows at a time
_PAIRS = 4096   # candidate pairs whose thumbnails are compared at a time


@dataclass(frozen=True)
class Groups:
    """Component ids of images (given in a fixed order, e.g. sorted by id).

    Ids are numbered by each component's first element in that order: 0, 1, 2, ...

    Attributes:
        exact: (N,) component of identical files/pixels.
        group: (N,) component of exact, near *or mirrored* duplicates (every exact component lies inside one).
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


def find_groups(sha256: Sequence[str], pixel_sha256: Sequence[str], phash: Sequence[int],
                thumbs: Sequence[np.ndarray], *, mirror_pixel_sha256: Sequence[str] | None = None,
                mirror_phash: Sequence[int] | None = None,
                mirror_thumbs: Sequence[np.ndarray] | None = None) -> Groups:
    """Exact sets and duplicate groups of N images, as connected components of their duplicate pairs.

    Args:
        sha256: (N,) hex digests of the files' bytes.
        pixel_sha256: (N,) digests of the decoded pixels.
        phash: (N,) 64-bit pHashes of the 32x32 grayscale thumbnails.
        thumbs: (N,) the (32, 32) uint8 thumbnails.
        mirror_pixel_sha256, mirror_phash, mirror_thumbs: the same of each horizontally mirrored
            picture (:class:`anklealign.ingest.decode.Decoded`'s ``mirror_*`` fields); give all three or
            none. Without them, mirrored copies are not looked for.
    """
    n = len(sha256)
    mirrors = (mirror_pixel_sha256, mirror_phash, mirror_thumbs)
    if any(m is None for m in mirrors) and not all(m is None for m in mirrors):
        raise ValueError("give all three mirror_* arguments or none")
    if any(len(seq) != n for seq in (pixel_sha256, phash, thumbs, *(m for m in mirrors if m is not None))):
        raise ValueError("every argument needs one entry per image")
    if n == 0:
        return Groups(exact=[], group=[])
    exact_edges = [_same_key(sha256), _same_key(pixel_sha256)]
    exact = _components(n, exact_edges)
    hashes = np.array(phash, dtype=np.uint64)
    pictures = np.stack(thumbs)
    edges = [*exact_edges, _verified(*_close_hashes(hashes, hashes, upper=True), pictures, pictures, exact)]
    if mirror_phash is not None:
        edges.append(_same_as_mirror(pixel_sha256, mirror_pixel_sha256))
        flipped = np.stack(mirror_thumbs)
        edges.append(_verified(*_close_hashes(np.array(mirror_phash, dtype=np.uint64), hashes, upper=False),
                               flipped, pictures, exact))
    return Groups(exact=exact.tolist(), group=_components(n, edges).tolist())


_Edges = tuple[np.ndarray, np.ndarray]


def _same_key(keys: Sequence[str]) -> _Edges:
    """Edges from each element to the first element with the same key."""
    _, first, inverse = np.unique(np.asarray(keys), return_index=True, return_inverse=True)
    return first[inverse.ravel()], np.arange(len(keys))


def _same_as_mirror(pixel_sha256: Sequence[str], mirror_pixel_sha256: Sequence[str]) -> _Edges:
    """Edges (a, b): b's pixels are a's mirrored pixels (exact mirror)."""
    by_pixels: dict[str, list[int]] = {}
    for index, key in enumerate(pixel_sha256):
        by_pixels.setdefault(key, []).append(index)
    pairs = [(a, b) for a, key in enumerate(mirror_pixel_sha256) for b in by_pixels.get(key, ()) if a != b]
    rows, cols = np.array(pairs, dtype=np.intp).reshape(-1, 2).T
    return rows, cols


def _close_hashes(left: np.ndarray, right: np.ndarray, *, upper: bool) -> _Edges:
    """Pairs (i, j), i != j, with ``left[i]`` and ``right[j]`` within NEAR_BITS bits (i < j if ``upper``)."""
    rows, cols = [], []
    for start in range(0, len(left), _ROWS):
        block = np.bitwise_count(left[start:start + _ROWS, None] ^ right[None, :])   # (rows, N)
        row, col = np.nonzero(block <= NEAR_BITS)
        row += start
        keep = row < col if upper else row != col
        rows.append(row[keep])
        cols.append(col[keep])
    return np.concatenate(rows), np.concatenate(cols)


def _verified(rows: np.ndarray, cols: np.ndarray, left: np.ndarray, right: np.ndarray,
              exact: np.ndarray) -> _Edges:
    """The candidate pairs whose thumbnails ``left[i]`` and ``right[j]`` pass the near-duplicate check.

    Pairs inside one exact set are already joined and are not compared.
    """
    keep = exact[rows] != exact[cols]
    rows, cols = rows[keep], cols[keep]
    ok = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), _PAIRS):
        a, b = rows[start:start + _PAIRS], cols[start:start + _PAIRS]
        diff = np.abs(left[a].astype(np.int16) - right[b].astype(np.int16))   # (pairs, 32, 32)
        ok[start:start + _PAIRS] = (diff.mean(axis=(1, 2)) <= NEAR_MEAN) & (diff.max(axis=(1, 2)) <= NEAR_MAX)
    return rows[ok], cols[ok]


def _components(n: int, edges: Sequence[_Edges]) -> np.ndarray:
    """Connected components of the undirected graph on ``n`` nodes, numbered by their first node."""
    rows = np.concatenate([e[0] for e in edges])
    cols = np.concatenate([e[1] for e in edges])
    graph = coo_array((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.ravel()]
