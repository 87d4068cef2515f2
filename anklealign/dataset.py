"""The public entry points: :func:`load` (tensors ready for training) and :func:`inspect` (the report).

They join the two halves of the package: :mod:`anklealign.ingest` reads a source, and
:mod:`anklealign.twin` generates the synthetic twin that ``source=None`` stands for.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anklealign.errors import DataError
from anklealign.ingest import cache as _cache
from anklealign.ingest.decode import Target, decode
from anklealign.ingest.scan import decode_all, scan
from anklealign.ingest.source import Source, open_source
from anklealign.report import QualityReport
from anklealign.twin.generator import GENERATOR_VERSION, synth

if TYPE_CHECKING:
    import torch

__all__ = ["Dataset", "Split", "decode_image", "inspect", "load", "known_copies"]

_log = logging.getLogger(__name__)

COLORS = ("gray", "rgb")
RESIZES = ("stretch", "letterbox")
TWIN_LABEL = "synthetic twin (seed 0, scale 1.0, difficulty realistic)"
_TWIN_DONE = "twin.complete"  # next to twin/, written once the twin is complete


@dataclass(frozen=True)
class Split:
    """Images of one side with their labels and duplicate-group ids.

    Attributes:
        images: (N, C, H, W) uint8, C = 1 (gray) or 3 (rgb).
        labels: (N,) int64 class ids.
        groups: (N,) int64 duplicate-group ids (equal id = same or near-duplicate content).
        ids: stable identity ``"<PARTICIPANT>/<relative file path>"`` (image folders: ``"<split>/<class>/<file>"``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    """A labelled, de-duplicated, decoded data set (see docs/INGEST.md).

    Attributes:
        train: the training pool (test images and their duplicates removed).
        test: the consensus/test set; labels are the majority labels.
        test_votes: (M, K) int64 votes per class (soft label = votes / votes.sum(1)).
        test_ties: (M,) bool, the majority was a tie (decided by the documented tie rule).
        test_annotator_labels: (A, M) int64, -1 where the annotator gave no label.
        annotators: the A annotator codes.
        classes: class names; index = label id.
        kind: ``"anklealign"`` or ``"imagefolder"``.
        synthetic: True for the synthetic twin (marker file ``SYNTHETIC_TWIN.txt``).
        source: the resolved path, or ``"synthetic twin (seed 0, scale 1.0, difficulty realistic)"``.
        fingerprint: sha256 of the labelled content (file hashes, labels, split); size-independent.
        image_size, color, resize: how the images were decoded.
        report: the quality report (``report.to_dict()`` is ``inspect --json``).
    """

    train: Split
    test: Split
    test_votes: torch.Tensor
    test_ties: torch.Tensor
    test_annotator_labels: torch.Tensor
    annotators: tuple[str, ...]
    classes: tuple[str, ...]
    kind: str
    synthetic: bool
    source: str
    fingerprint: str
    image_size: int
    color: str
    resize: str
    report: QualityReport


def load(source: str | Path | None = None, *, image_size: int = 64, color: str = "gray",
         resize: str = "stretch", cache_dir: Path | None = None, mirrors: bool | None = None) -> Dataset:
    """Load a data set as uint8 tensors, decoding each image once and caching the result on disk.

    Args:
        source: ``anklealign.zip`` (read in place), its unzipped folder, a ``train/<class>/`` +
            ``test/<class>/`` folder, or ``None`` for the synthetic twin (generated once into
            ``<cache_dir>/twin/``).
        image_size: side of the square images, in pixels.
        color: ``"gray"`` (1 channel) or ``"rgb"`` (3 channels).
        resize: ``"stretch"`` (each side to ``image_size``) or ``"letterbox"`` (aspect ratio kept,
            padded with the picture's mean colour).
        cache_dir: where decoded tensors and scans are kept; default ``$ANKLEALIGN_CACHE`` or
            ``~/.cache/anklealign``.
        mirrors: whether a horizontally mirrored copy is a duplicate of its original; None = on for the
            AnkleAlign archive (a flip keeps its classes), off for ``train/<class>`` folders (a flip may not).

    Raises:
        DataError: the source is missing, empty, corrupt, unsafe, of no known layout, or holds no
            usable labelled image.
        ValueError: a bad ``image_size``, ``color`` or ``resize``.
    """
    target = _target(image_size, color, resize)
    cache = Path(cache_dir) if cache_dir is not None else _cache.default_cache_dir()
    started = time.perf_counter()
    path, label = _resolve(source, cache)
    with open_source(path) as src:
        fingerprint = _scan_key(src.fingerprint(cache), mirrors)
        result, arrays = _scanned(src, fingerprint, cache, target, mirrors)
        if not result["train"]["ids"] and not result["test"]["ids"]:
            raise DataError(f"{label}: no usable labelled image ({result['report']['images_found']} images "
                            "found); run `python -m anklealign inspect` on it to see why")
        images = _images(src, fingerprint, cache, target, result, arrays)
    dataset = _dataset(result, images, label=label, target=target)
    _log.info("loaded %s: %d train, %d test images in %.2f s", label, len(dataset.train.ids),
              len(dataset.test.ids), time.perf_counter() - started)
    return dataset


def decode_image(data: bytes, *, image_size: int = 64, color: str = "gray", resize: str = "stretch") -> np.ndarray:
    """Decode one image file's bytes exactly as :func:`load` decodes the data set (for prediction).

    Content decides the format, the EXIF orientation is applied, then the same resize as in
    :func:`load`. Needs numpy and PIL only (no torch).

    Returns:
        (C, image_size, image_size) uint8 array, C = 1 (gray) or 3 (rgb).

    Raises:
        DataError: the bytes are not a decodable image; the message is the reason.
        ValueError: a bad ``image_size``, ``color`` or ``resize``.
    """
    result = decode(data, target=_target(image_size, color, resize), hashes=False)
    if result.array is None:
        raise DataError(f"cannot use this image: {result.reason}")
    return result.array


def _target(image_size: int, color: str, resize: str) -> Target:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be an int in [8, 1024], got {image_size!r}")
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, got {color!r}")
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
    return Target(image_size, color, resize)


def inspect(source: str | Path | None = None, *, cache_dir: Path | None = None,
            mirrors: bool | None = None) -> QualityReport:
    """Scan a source (or reuse its cached scan) and return its quality report, decoding no tensors.

    Raises:
        DataError: as for :func:`load`, except that a source without usable images still gets a report.
    """
    cache = Path(cache_dir) if cache_dir is not None else _cache.default_cache_dir()
    path, label = _resolve(source, cache)
    with open_source(path) as src:
        result, _ = _scanned(src, _scan_key(src.fingerprint(cache), mirrors), cache, None, mirrors)
    return QualityReport.from_dict(result["report"], source=label, fingerprint=result["fingerprint"])


def _resolve(source: str | Path | None, cache: Path) -> tuple[Path, str]:
    """The path to read and the name to report; generates the twin on first use."""
    if source is not None:
        path = Path(source).expanduser().resolve()
        return path, str(path)
    twin, done = cache / "twin", cache / _TWIN_DONE
    stamp = f"generator {GENERATOR_VERSION}, seed 0, scale 1.0, difficulty realistic\n"

    def ready() -> bool:
        return twin.is_dir() and done.is_file() and done.read_text() == stamp

    if ready():
        return twin, TWIN_LABEL
    cache.mkdir(parents=True, exist_ok=True)
    # Several processes (workers started together) may find no twin: one generates, the others wait.
    with open(cache / "twin.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready():
            _log.info("generating the synthetic twin into %s (once per generator version)", twin)
            staging = Path(tempfile.mkdtemp(dir=cache, prefix=".twin-"))
            try:
                synth(staging / "twin", seed=0, scale=1.0, difficulty="realistic")
                done.unlink(missing_ok=True)
                shutil.rmtree(twin, ignore_errors=True)
                (staging / "twin").replace(twin)
                done.write_text(stamp)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return twin, TWIN_LABEL


def _scan_key(fingerprint: str, mirrors: bool | None) -> str:
    """The cache key of a scan: the source's fingerprint, and the mirror rule when it is not the layout's own."""
    return fingerprint if mirrors is None else f"{fingerprint}-mirrors-{'on' if mirrors else 'off'}"


def _scanned(src: Source, fingerprint: str, cache: Path, target: Target | None,
             mirrors: bool | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """The cached scan, or a fresh one (which also yields the arrays for ``target``)."""
    result = _cache.load_scan(cache, fingerprint)
    if result is not None:
        return result, None
    result, arrays = scan(src, target=target, mirrors=mirrors)
    result["fingerprint_source"] = fingerprint
    _cache.save_scan(cache, fingerprint, result)
    return result, arrays if target is not None else None


def _images(src: Source, fingerprint: str, cache: Path, target: Target, result: dict[str, Any],
            arrays: dict[str, np.ndarray] | None) -> torch.Tensor:
    """(N, C, H, W) uint8 of the train then test images: from the cache, the scan's decode, or decoded now."""
    import torch  # imported on use, so that `inspect` starts fast

    key = {"image_size": target.size, "color": target.color, "resize": target.resize}
    members: dict[str, str] = result["members"]   # id -> path, train ids then test ids
    blob = _cache.load_images(cache, fingerprint, **key)
    channels = 1 if target.color == "gray" else 3
    shape = (len(members), channels, target.size, target.size)
    if blob is not None and list(blob.get("ids", [])) == list(members):
        if tuple(blob["images"].shape) == shape and blob["images"].dtype == torch.uint8:
            return blob["images"]
        _log.warning("ignoring a cache file of %s whose tensor is %s %s, not uint8 %s: decoding again", src.path,
                     blob["images"].dtype, tuple(blob["images"].shape), shape)
    if arrays is None:
        decoded = decode_all(src, list(members.values()), target=target, hashes=False)
        failed = [(i, d.reason) for i, d in zip(members, decoded, strict=True) if d.reason]
        if failed:
            raise DataError(f"{src.path}: {failed[0][0]} no longer decodes ({failed[0][1]}); "
                            "the source changed while it was read")
        arrays = {i: d.array for i, d in zip(members, decoded, strict=True)}
    stack = torch.from_numpy(np.stack([arrays[i] for i in members])) if members else \
        torch.zeros((0, channels, target.size, target.size), dtype=torch.uint8)
    _cache.save_images(cache, fingerprint, {"ids": list(members), "images": stack}, **key)
    return stack


def _dataset(result: dict[str, Any], images: torch.Tensor, *, label: str, target: Target) -> Dataset:
    import torch

    def split(part: dict[str, Any], rows: torch.Tensor) -> Split:
        return Split(images=rows.clone(), labels=torch.tensor(part["labels"], dtype=torch.int64).reshape(-1),
                     groups=torch.tensor(part["groups"], dtype=torch.int64).reshape(-1), ids=tuple(part["ids"]))

    train, test = result["train"], result["test"]
    num_train, num_test, num_classes = len(train["ids"]), len(test["ids"]), len(result["classes"])
    return Dataset(
        train=split(train, images[:num_train]), test=split(test, images[num_train:]),
        test_votes=torch.tensor(test["votes"], dtype=torch.int64).reshape(num_test, num_classes),
        test_ties=torch.tensor(test["ties"], dtype=torch.bool).reshape(num_test),
        test_annotator_labels=torch.tensor(test["annotator_labels"], dtype=torch.int64).reshape(
            len(result["annotators"]), num_test),
        annotators=tuple(result["annotators"]), classes=tuple(result["classes"]), kind=result["kind"],
        synthetic=bool(result["synthetic"]), source=label, fingerprint=result["fingerprint"],
        image_size=target.size, color=target.color, resize=target.resize,
        report=QualityReport.from_dict(result["report"], source=label, fingerprint=result["fingerprint"]))


def known_copies(source: str | Path | None, files: list[Path], *, cache_dir: Path | None = None,
                 mirrors: bool | None = None) -> dict[int, tuple[str, str]]:
    """Which of ``files`` duplicate an image of ``source``'s training or test split, by the ingest's own rules.

    Exact (same bytes or pixels), near (perceptual hash, verified) and, where the source's mirror rule is on,
    mirrored copies count, as they do between training and test images during ingest. A model scored on a
    copy of a picture it trained on is not scored on new data; scoring copies of the test images is a read of
    the test set.

    Returns:
        index into ``files`` -> (``"train"`` or ``"test"``, the id of the image it duplicates; a training image
        where both match). Files that cannot be decoded are left out here; the caller reports them.

    Raises:
        DataError: the source cannot be read.
    """
    from anklealign.ingest.dedup import find_groups

    cache = Path(cache_dir) if cache_dir is not None else _cache.default_cache_dir()
    path, _ = _resolve(None if source == TWIN_LABEL else source, cache)
    with open_source(path) as src:
        result, _ = _scanned(src, _scan_key(src.fingerprint(cache), mirrors), cache, None, mirrors)
        known = [(split, i) for split in ("train", "test") for i in result[split]["ids"]]
        decoded = [decode(src.read(result["members"][i]), hashes=True) for _, i in known]
    new = [decode(Path(f).read_bytes(), hashes=True) for f in files]
    usable = [j for j, d in enumerate(new) if not d.reason]
    both = [*decoded, *(new[j] for j in usable)]
    mirrored = result["report"].get("mirror_duplicates", result["kind"] == "anklealign")
    extra = ({"mirror_pixel_sha256": [d.mirror_pixel_sha256 for d in both],
              "mirror_phash": [d.mirror_phash for d in both], "mirror_thumbs": [d.mirror_thumb for d in both]}
             if mirrored else {})
    groups = find_groups([d.sha256 for d in both], [d.pixel_sha256 for d in both], [d.phash for d in both],
                         [d.thumb for d in both], **extra).group
    first: dict[int, tuple[str, str]] = {}
    for g, item in zip(groups[:len(known)], known, strict=True):
        first.setdefault(int(g), item)  # training images come first: a match with both reports training
    return {j: first[int(groups[len(known) + n])] for n, j in enumerate(usable) if int(groups[len(known) + n]) in first}
