"""Rules for train/<class> folders that differ from the AnkleAlign archive's: a flip may change the class, the
folder is the label, and class names match whatever their case."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import anklealign
from anklealign import DataError
from tests.anklealign.conftest import encode, picture, write_tree


def _arrows(tmp_path: Path) -> Path:
    """left/right/up folders in which every 'right' picture is an exact mirror of a 'left' one."""
    files = {}
    for i in range(4):
        left = picture(100 + i)
        files[f"ds/train/left/{i}.png"] = encode(left, "PNG")
        files[f"ds/train/right/{i}.png"] = encode(left.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG")
        files[f"ds/train/up/{i}.png"] = encode(picture(200 + i), "PNG")
    files |= {f"ds/test/{c}/t.png": encode(picture(300 + k), "PNG") for k, c in enumerate(["left", "right", "up"])}
    return write_tree(tmp_path, files) / "ds"


def test_a_folder_whose_classes_a_flip_changes_keeps_every_image(tmp_path: Path, cache_dir: Path) -> None:
    ds = anklealign.load(_arrows(tmp_path), image_size=16, cache_dir=cache_dir)
    assert len(ds.train.ids) == 12  # no mirror pair merged, none dropped as a tie
    assert ds.report.mirror_duplicates is False and ds.report.conflicts == ()
    assert len(set(ds.train.groups.tolist())) == 12


def test_mirror_grouping_on_for_a_folder_reports_conflicts_and_relabels_nothing(tmp_path: Path,
                                                                              cache_dir: Path) -> None:
    """Asked to treat mirrors as duplicates, a folder keeps each picture with its own folder's label, in one group
    with its mirror (so no fold splits them), and reports the pair as a conflict."""
    ds = anklealign.load(_arrows(tmp_path), image_size=16, cache_dir=cache_dir, mirrors=True)
    assert len(ds.train.ids) == 12 and ds.report.mirror_duplicates is True
    assert len(ds.report.conflicts) == 4
    assert all("own folder labels" in c["resolution"] for c in ds.report.conflicts)
    labels = dict(zip(ds.train.ids, ds.train.labels.tolist(), strict=True))
    groups = dict(zip(ds.train.ids, ds.train.groups.tolist(), strict=True))
    for i in range(4):
        assert labels[f"train/left/{i}.png"] != labels[f"train/right/{i}.png"]
        assert groups[f"train/left/{i}.png"] == groups[f"train/right/{i}.png"]


def test_the_anklealign_archive_groups_mirrors() -> None:
    """The archive's rule is the other one (a flip keeps pronation, neutral and supination): documented here."""
    from anklealign.ingest import scan

    assert "on for the AnkleAlign archive" in scan.scan.__doc__


def test_class_folders_match_whatever_their_case(tmp_path: Path, cache_dir: Path) -> None:
    files = {f"ds/train/{c}/{i}.png": encode(picture(10 * k + i), "PNG") for k, c in enumerate(["Cat", "Dog"])
             for i in range(3)}
    files |= {"ds/test/cat/t1.png": encode(picture(50), "PNG"), "ds/test/DOG/t2.png": encode(picture(51), "PNG")}
    ds = anklealign.load(write_tree(tmp_path, files) / "ds", image_size=16, cache_dir=cache_dir)
    assert ds.classes == ("Cat", "Dog")
    assert dict(zip(ds.test.ids, ds.test.labels.tolist(), strict=True)) == {"test/cat/t1.png": 0, "test/DOG/t2.png": 1}


@pytest.mark.parametrize(("extra", "message"), [
    ("ds/train/cat/x.png", r"train/Cat/ and train/cat/ differ only in case"),
    ("ds/test/bird/x.png", r"test/bird/ has no training folder"),
])
def test_ambiguous_or_untrainable_class_folders_are_errors(tmp_path: Path, cache_dir: Path, extra: str,
                                                          message: str) -> None:
    files = {f"ds/train/{c}/{i}.png": encode(picture(10 * k + i), "PNG") for k, c in enumerate(["Cat", "Dog"])
             for i in range(3)}
    files |= {"ds/test/cat/t1.png": encode(picture(50), "PNG"), extra: encode(picture(60), "PNG")}
    with pytest.raises(DataError, match=message):
        anklealign.load(write_tree(tmp_path, files) / "ds", image_size=16, cache_dir=cache_dir)


def test_known_copies_finds_copies_of_training_and_test_images(tmp_path: Path, cache_dir: Path) -> None:
    root = _arrows(tmp_path)
    extra = write_tree(tmp_path / "x", {"copy.png": (root / "train/up/0.png").read_bytes(),
                                        "new.png": encode(picture(999), "PNG"),
                                        "mirror.png": (root / "train/right/1.png").read_bytes(),
                                        "test.png": (root / "test/up/t.png").read_bytes()})
    files = [extra / "copy.png", extra / "new.png", extra / "mirror.png", extra / "test.png"]
    found = anklealign.known_copies(root, files, cache_dir=cache_dir)
    assert found == {0: ("train", "train/up/0.png"), 2: ("train", "train/right/1.png"), 3: ("test", "test/up/t.png")}
