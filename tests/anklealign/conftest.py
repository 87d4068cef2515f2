"""Hand-made AnkleAlign fixtures: tiny PIL pictures, hand-written Label Studio JSON, folders and zips."""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

LABELS = ("1_Pronacio", "2_Neutralis", "3_Szupinacio")


def picture(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A smooth random picture: different seeds give unrelated pictures (far apart in dHash)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8), "RGB")
    return small.resize(size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" and not kwargs else kwargs))
    return buffer.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(picture(seed, size))


# Label Studio numbers tasks in upload order, and the loader pairs an annotator's same-named tasks with
# images in that order: ids come from a counter (tasks made earlier were uploaded earlier), never from
# hash(), which Python salts per process (a test's pairing would change from run to run).
_task_ids = itertools.count(1)


def task(name: str, label: str | None, *, prefix: str = "9d203653", cancelled: bool = False) -> dict:
    """One Label Studio task as the standard JSON export writes it; ids increase with each call."""
    upload = f"{prefix}-{name}" if prefix else name
    result = [] if label is None else [{"type": "choices", "from_name": "choice", "to_name": "image",
                                         "value": {"choices": [label]}}]
    return {"id": next(_task_ids), "file_upload": upload,
            "data": {"image": f"/data/upload/7/{upload}"},
            "annotations": [{"id": 1, "was_cancelled": cancelled, "result": result}]}


def export(*tasks: dict) -> bytes:
    return json.dumps(list(tasks), ensure_ascii=False).encode("utf-8")


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def mini_files(prefix: str = "anklealign/") -> dict[str, bytes]:
    """A tiny archive with one instance of the main rules; expected outcome in MINI_EXPECTED."""
    p = prefix
    consensus_list = "\ufeffanklealign\\D4E5F6\\d1.jpg\r\nanklealign\\A1B2C3\\p2.jpg\r\n".encode()
    return {
        f"{p}A1B2C3/p1.jpg": jpeg(1),
        f"{p}A1B2C3/p2.jpg": jpeg(2),
        f"{p}A1B2C3/p3.jpg": jpeg(3),
        f"{p}A1B2C3/p4.jpg": jpeg(4),                     # no task: unlabelled
        f"{p}A1B2C3/notes.ipynb": b'{"cells": []}',       # not an image
        f"{p}A1B2C3/a1b2c3_labels.json": export(
            task("p1.jpg", LABELS[0]), task("p2_A1B2C3.jpg", LABELS[1]), task("p3.jpg", "3_Szupináló "),
            task("missing.jpg", LABELS[0])),
        f"{p}D4E5F6/d1.jpg": jpeg(5),                     # folder without JSON; in the consensus
        f"{p}D4E5F6/d2.jpg": jpeg(6),                     # unlabelled
        f"{p}G7H8I9/normal/g1.jpg": jpeg(7),              # label from the JSON
        f"{p}G7H8I9/pronation/g2.jpg": jpeg(8),           # label from the sub-folder only
        f"{p}G7H8I9/export.json": export(task("g1.jpg", "neutral")),
        f"{p}sample/s.jpg": jpeg(9),
        f"{p}consensus/anklealign-consensus.txt": consensus_list,
        f"{p}consensus/AAA111.json": export(task("d1.jpg", LABELS[0]), task("p2.jpg", LABELS[1])),
        f"{p}consensus/bbb222.json": export(task("d1.jpg", LABELS[0]), task("p2.jpg", LABELS[1])),
        f"{p}consensus/CCC333.json": export(task("d1.jpg", LABELS[1]), task("p2.jpg", LABELS[1])),
        f"{p}consensus/EEE444.json": b"",
    }


MINI_EXPECTED = {
    "kind": "anklealign", "synthetic": False, "images_found": 8,
    "train": {"images": 4, "class_counts": {"pronation": 2, "neutral": 1, "supination": 1}},
    "test": {"listed": 2, "images": 2, "majority_counts": {"pronation": 1, "neutral": 1, "supination": 0},
             "ties": 0, "annotators": 3},
    "duplicate_groups": 0, "leakage_removed": 1,
}


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def mini_tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "data", mini_files())
