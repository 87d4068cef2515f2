"""The scan: one pass from a source to labels, splits, groups and the quality report.

The scan decodes every image once (hashes for duplicates and, when a target is given, the model's
array in the same decode) and returns a plain-JSON result that :mod:`anklealign.dataset` caches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import zipfile
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from anklealign.errors import DataError
from anklealign.ingest.consensus import Listed, Tally, annotator_labels, parse_list, tally
from anklealign.ingest.decode import Decoded, Target, decode
from anklealign.ingest.dedup import find_groups
from anklealign.ingest.filenames import NameIndex
from anklealign.ingest.labels import CLASSES
from anklealign.ingest.layout import Layout, find_layout, twin_figures
from anklealign.ingest.participants import Item, LabelNotes, label_participants, read_export
from anklealign.ingest.sides import Sides, build_sides
from anklealign.ingest.source import Source

__all__ = ["decode_all", "scan"]

_log = logging.getLogger(__name__)
_PROGRESS_EVERY = 100
_MAX_WORKERS = 8
_SERIAL_BELOW = 24   # fewer files than this are decoded without worker processes
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic"}


@dataclass
class _TestSide:
    """The test side of a scan: listed images, who voted, and what could not be used."""

    side: list[str]            # every decodable test-side image (their groups never train)
    ids: list[str]             # those in the test split (at least one vote)
    tally: Tally
    labels: np.ndarray         # (A, M) annotator labels of the split's images
    listed: int                # lines of the consensus list (image folders: test images found)
    annotators: list[str] = field(default_factory=list)
    unusable: dict[str, str] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    unvoted: list[str] = field(default_factory=list)
    order_paired: int = 0


def _read(source: Source, path: str) -> bytes | Decoded:
    try:
        return source.read(path)
    except (OSError, KeyError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        return Decoded(reason=f"unreadable ({exc})")


def decode_all(source: Source, paths: Sequence[str], *, target: Target | None, hashes: bool) -> list[Decoded]:
    """Read files here and decode them in worker processes (one per core, at most 8), keeping the order.

    Threads do not help: decoding holds the GIL for most of its time (measured slower than serial on
    two cores). At most a few files per worker are in flight, so a 500 MB zip is never held in memory.
    Small jobs, and jobs in a daemonic process, are decoded in this process.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cores, _MAX_WORKERS) if len(paths) > _SERIAL_BELOW else 1
    if mp.current_process().daemon:   # a daemonic process may not start children
        workers = 1
    results: list[Decoded] = []

    def collect(result: Decoded) -> None:
        results.append(result)
        if len(results) % _PROGRESS_EVERY == 0 or len(results) == len(paths):
            _log.info("decoded %d/%d files", len(results), len(paths))

    if workers == 1:
        for path in paths:
            data = _read(source, path)
            collect(data if isinstance(data, Decoded) else decode(data, target=target, hashes=hashes))
        return results
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    pending: deque[Future[Decoded] | Decoded] = deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for path in paths:
            data = _read(source, path)
            pending.append(data if isinstance(data, Decoded) else
                           pool.submit(decode, data, target=target, hashes=hashes))
            while len(pending) > 4 * workers:
                item = pending.popleft()
                collect(item if isinstance(item, Decoded) else item.result())
        while pending:
            item = pending.popleft()
            collect(item if isinstance(item, Decoded) else item.result())
    return results


def scan(source: Source, *, target: Target | None,
         mirrors: bool | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Scan a source: the JSON-able scan result and, if ``target`` is given, the used images' arrays.

    ``mirrors``: whether a horizontally mirrored copy counts as a duplicate (joins its original's group). None
    = by layout: on for the AnkleAlign archive, whose classes a flip keeps (a left foot's pronation mirrored is a
    right foot's pronation, and students photographed both feet), off for ``train/<class>`` folders, whose classes
    a flip may change (left/right arrows, text). In folders the class folder is the label: images of one
    duplicate group with different folders are reported as a conflict and kept with their own labels (never
    relabelled by majority or dropped); their shared group keeps them in one fold.

    Raises:
        DataError: the source has no recognisable layout.
    """
    layout = find_layout(source.files, str(source.path))
    if layout.kind == "anklealign":
        items, notes = label_participants(layout, source.read)
        classes = CLASSES
    else:
        items, test_labels, classes = _imagefolder_items(layout)
        notes = LabelNotes()
    order = sorted(items)
    _log.info("%s: %d candidate files; decoding", source.path, len(order))
    decoded = dict(zip(order, decode_all(source, [items[i].path for i in order], target=target, hashes=True),
                       strict=True))
    ids = [i for i in order if not decoded[i].reason]
    mirrors = layout.kind == "anklealign" if mirrors is None else bool(mirrors)
    mirrored = ({"mirror_pixel_sha256": [decoded[i].mirror_pixel_sha256 for i in ids],
                 "mirror_phash": [decoded[i].mirror_phash for i in ids],
                 "mirror_thumbs": [decoded[i].mirror_thumb for i in ids]} if mirrors else {})
    groups = find_groups([decoded[i].sha256 for i in ids], [decoded[i].pixel_sha256 for i in ids],
                         [decoded[i].phash for i in ids], [decoded[i].thumb for i in ids], **mirrored)
    group_of = dict(zip(ids, groups.group, strict=True))
    if layout.kind == "anklealign":
        test = _consensus(layout, source, items, decoded, notes, group_of)
    else:
        test = _imagefolder_test(test_labels, ids, len(classes))
    sides = build_sides(items, ids, groups, test.side, classes=classes, relabel=layout.kind == "anklealign")
    result = _result(layout, items, decoded, test, sides, notes, classes, _twin(source, layout))
    result["report"]["mirror_duplicates"] = mirrors
    arrays = {i: decoded[i].array for i in result["members"] if decoded[i].array is not None}
    return result, arrays


def _imagefolder_items(layout: Layout) -> tuple[dict[str, Item], dict[str, int], tuple[str, ...]]:
    """Train images labelled by their class folder (own labels); test images and their labels apart.

    Class folders match case-insensitively (``train/Cat`` and ``test/cat`` are one class, named as in
    ``train/``). Two training folders that differ only in case, or a test class with no training folder, are
    errors: the first is ambiguous, the second a class the model can never predict.
    """
    train = layout.splits.get("train", {})
    by_key: dict[str, str] = {}
    for name in sorted(train):
        if name.casefold() in by_key:
            raise DataError(f"{layout.root or '.'}: train/{by_key[name.casefold()]}/ and train/{name}/ differ only in "
                            "case: merge them into one class folder or rename one")
        by_key[name.casefold()] = name
    only_test = sorted({n for n in layout.splits.get("test", {}) if n.casefold() not in by_key})
    if only_test:
        raise DataError(f"{layout.root or '.'}: test/{only_test[0]}/ has no training folder (classes in train/: "
                        f"{', '.join(sorted(train)) or 'none'}); a model cannot learn a class it never sees: add "
                        f"train/{only_test[0]}/ or remove the test folder")
    classes = tuple(sorted(by_key.values()))
    items, test_labels = {}, {}
    for split, per_class in layout.splits.items():
        for name, paths in per_class.items():
            label = classes.index(by_key[name.casefold()])
            for path in paths:
                rel = path[len(layout.root):]
                items[rel] = Item(id=rel, path=path, folder=split)
                if split == "train":
                    items[rel].labels = [label]
                else:
                    test_labels[rel] = label
    return items, test_labels, classes


def _imagefolder_test(test_labels: dict[str, int], ids: list[str], num_classes: int) -> _TestSide:
    """The test folder's labels as one vote each (one-hot votes, no ties, no annotators)."""
    test_ids = [i for i in ids if i in test_labels]
    labels = np.array([test_labels[i] for i in test_ids], dtype=np.int64).reshape(1, -1)
    return _TestSide(side=test_ids, ids=test_ids, tally=tally(labels, num_classes),
                     labels=np.zeros((0, len(test_ids)), np.int64), listed=len(test_ids))


def _listed(layout: Layout, source: Source, items: dict[str, Item],
            notes: LabelNotes) -> tuple[list[str], int, list[dict[str, str]]]:
    """Resolve the consensus list's lines to image ids (list order, no repeats)."""
    folders = {f.casefold(): f for f in layout.participants}
    by_id = {i.casefold(): i for i in items}
    indexes: dict[str, NameIndex] = {}
    listed: list[str] = []
    problems, lines = [], 0
    for path in sorted(layout.consensus_lists):
        try:
            entries = parse_list(source.read(path))
        except OSError as exc:
            notes.skipped.append((path, f"consensus list ignored: unreadable ({exc})"))
            continue
        for number, parts in entries:
            lines += 1
            where, text = f"{path}:{number}", "\\".join(parts)
            at = next((k for k, p in enumerate(parts[:-1]) if p.casefold() in folders), None)
            if at is None:
                problems.append({"line": where, "text": text, "problem": "names no participant folder"})
                continue
            folder = folders[parts[at].casefold()]
            image = by_id.get(f"{folder}/{'/'.join(parts[at + 1:])}".casefold())
            if image is None:  # the same name rules as for label files
                index = indexes.setdefault(folder, NameIndex(
                    ((i, PurePosixPath(i).name) for i in items if items[i].folder == folder), [folder]))
                found = index.candidates(parts[-1])[1]
                image = found[0] if len(found) == 1 else None
            if image is None:
                problems.append({"line": where, "text": text, "problem": "no such image"})
            elif image in listed:
                problems.append({"line": where, "text": text, "problem": "listed twice"})
            else:
                listed.append(image)
    return listed, lines, problems


def _consensus(layout: Layout, source: Source, items: dict[str, Item], decoded: dict[str, Decoded],
               notes: LabelNotes, group_of: dict[str, int]) -> _TestSide:
    listed, lines, problems = _listed(layout, source, items, notes)
    side = [i for i in listed if not decoded[i].reason]
    exports, unusable, files = {}, {}, {}
    for path in sorted(layout.consensus_exports):
        code = PurePosixPath(path).stem.upper()
        files[code] = path
        tasks, reason = read_export(path, source.read, notes)
        if tasks is None:
            unusable[code] = reason
        else:
            exports[code] = tasks
    votes = annotator_labels([Listed(i, PurePosixPath(i).name, items[i].folder) for i in side], exports,
                             codes=[*layout.participants, *exports],
                             same_content=lambda ids: len({group_of[i] for i in ids}) == 1)
    for code, reason in votes.unusable.items():
        unusable[code] = reason
        notes.skipped.append((files[code], f"annotator file not counted: {reason}"))
    voted = (votes.labels >= 0).any(axis=0)   # (M,)
    return _TestSide(side=side, ids=[i for i, ok in zip(side, voted, strict=True) if ok],
                     tally=tally(votes.labels[:, voted], len(CLASSES)), labels=votes.labels[:, voted],
                     listed=lines, annotators=votes.annotators, unusable=unusable, problems=problems,
                     notes=votes.notes, unvoted=[i for i, ok in zip(side, voted, strict=True) if not ok],
                     order_paired=votes.order_paired)


def _skipped(layout: Layout, items: dict[str, Item], decoded: dict[str, Decoded], test: _TestSide,
             sides: Sides, notes: LabelNotes) -> tuple[list[dict[str, str]], int, int]:
    """Every file not used, with its reason; also the number of image files found and skipped."""
    entries = [*layout.other, *notes.skipped]
    found = skipped_images = 0
    for item_id, item in items.items():
        result = decoded[item_id]
        is_image = result.is_image or PurePosixPath(item.path).suffix.lower() in _IMAGE_SUFFIXES
        found += is_image
        if result.reason:
            skipped_images += is_image
            suffix = PurePosixPath(item.path).suffix or "no extension"
            if result.is_image:
                entries.append((item.path, result.reason))
            elif is_image:
                entries.append((item.path, f"undecodable: not in a known image format despite its {suffix} name"))
            else:
                entries.append((item.path, f"not an image ({suffix})"))
    for item_id, reason in sides.skipped:
        entries.append((items[item_id].path, reason))
    for item_id in test.unvoted:
        entries.append((items[item_id].path, "listed in the consensus, but no annotator's label matches it"))
    skipped_images += len(sides.skipped) + len(test.unvoted)
    return [{"path": p, "reason": r} for p, r in sorted(entries)], found, skipped_images


def _twin(source: Source, layout: Layout) -> dict[str, Any]:
    """A synthetic twin's own figures (priors, label noise, ceiling) from its marker file; {} for other data."""
    if layout.marker is None:
        return {}
    try:
        return twin_figures(source.read(layout.marker).decode("utf-8", errors="replace"))
    except (OSError, zipfile.BadZipFile):
        return {}


def _result(layout: Layout, items: dict[str, Item], decoded: dict[str, Decoded], test: _TestSide,
            sides: Sides, notes: LabelNotes, classes: Sequence[str], twin: dict[str, Any]) -> dict[str, Any]:
    tallied = test.tally
    train_ids = [i for i, _ in sides.train]
    train_labels = [label for _, label in sides.train]
    skipped, found, skipped_images = _skipped(layout, items, decoded, test, sides, notes)
    counts = dict.fromkeys(classes, 0)
    for label in train_labels:
        counts[classes[label]] += 1
    majority = dict.fromkeys(classes, 0)
    for label in tallied.majority.tolist():
        majority[classes[label]] += 1
    report = {
        "kind": layout.kind, "synthetic": layout.synthetic, "twin": twin, "images_found": found,
        "train": {"images": len(train_ids), "class_counts": counts},
        "test": {"listed": test.listed, "images": len(test.ids), "majority_counts": majority,
                 "ties": int(tallied.ties.sum()), "annotators": len(test.annotators)},
        "duplicate_groups": sides.duplicate_groups, "leakage_removed": sides.leakage_removed,
        "skipped": skipped,
        "images_skipped": skipped_images,
        "unlabelled": sum(1 for i in sides.group if not items[i].labels and i not in test.side),
        "agreement": tallied.agreement if layout.kind == "anklealign" else {},
        "annotators_usable": list(test.annotators),
        "annotators_unusable": dict(sorted(test.unusable.items())),
        "order_paired_votes": test.order_paired,
        "label_tasks": notes.tasks,
        "unmatched_tasks": notes.unmatched_tasks + test.notes,
        "unknown_labels": notes.unknown_labels,
        "conflicts": notes.conflicts + sides.conflicts,
        "consensus_problems": test.problems,
    }
    split = {
        "train": {"ids": train_ids, "labels": train_labels, "groups": [sides.group[i] for i in train_ids]},
        "test": {"ids": test.ids, "labels": tallied.majority.tolist(),
                 "groups": [sides.group[i] for i in test.ids], "votes": tallied.votes.tolist(),
                 "ties": tallied.ties.tolist(), "annotator_labels": test.labels.tolist()},
    }
    identity = {"kind": layout.kind, "classes": list(classes),
                "train": [[i, decoded[i].sha256, lab, g] for i, lab, g in
                          zip(train_ids, train_labels, split["train"]["groups"], strict=True)],
                "test": [[i, decoded[i].sha256, v]
                         for i, v in zip(test.ids, split["test"]["votes"], strict=True)]}
    return {"kind": layout.kind, "synthetic": layout.synthetic, "classes": list(classes),
            "annotators": list(test.annotators),
            "members": {i: items[i].path for i in [*train_ids, *test.ids]},
            "fingerprint": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
            **split, "report": report}
