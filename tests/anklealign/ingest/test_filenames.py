"""File-name rules: which disk file a Label Studio task names (docs/DATA.md "Label Studio JSON export")."""

from __future__ import annotations

import unicodedata

import pytest

from anklealign.ingest.filenames import NameIndex, ref_name

LONG = "barefoot-woman-standing-on-wooden-floor-rear-view-of-heels-and-ankles-white-stock-photo-1234567"
DISK = ["photo_01.jpg", "photo_02.jpeg", "IMG_1234.JPG", "sajat_reszvevo01_02.jpg", f"{LONG}.jpg",
        "lábfej hátulról 01.jpg", "x.jpg", "x_2.jpg", "normal/dup.jpg", "pronation/dup.jpg", "D6AE9F.png"]


@pytest.fixture(scope="module")
def index() -> NameIndex:
    return NameIndex(((name, name.rsplit("/", 1)[-1]) for name in DISK), codes=["D6AE9F"])


@pytest.mark.parametrize(("task_name", "expected", "rule"), [
    ("photo_01.jpg", "photo_01.jpg", "exact"),
    ("PHOTO_01.JPG", "photo_01.jpg", "exact"),                         # case-insensitive
    ("img_1234.jpg", "IMG_1234.JPG", "exact"),                         # upper-case extension on disk
    ("photo_02.jpg", "photo_02.jpeg", "exact"),                        # .jpeg = .jpg
    ("x_2.jpg", "x_2.jpg", "exact"),                                   # a real _2 file beats the suffix rule
    ("photo_01_D6AE9F.jpg", "photo_01.jpg", "code"),                   # code appended
    ("photo_01_d6ae9f.jpg", "photo_01.jpg", "code"),                   # ... in lower case
    ("photo_01_D6AE9F_D6AE9F.jpg", "photo_01.jpg", "code"),            # ... twice
    ("D6AE9F_photo_01.jpg", "photo_01.jpg", "code"),                   # code prefixed
    ("D6AE9F.png", "D6AE9F.png", "exact"),                             # a file named by the code keeps it
    ("photo_01_2.jpg", "photo_01.jpg", "dedup-suffix"),
    ("photo_01 (2).jpg", "photo_01.jpg", "dedup-suffix"),
    ("sajat_reszvevo01_02_2.jpg", "sajat_reszvevo01_02.jpg", "dedup-suffix"),
    ("photo_01_D6AE9F_2.jpg", "photo_01.jpg", "dedup-suffix"),
    (f"{LONG[:60]}_2wddlwB.jpg", f"{LONG}.jpg", "truncated"),          # Label Studio truncation
    ("photo_01_aB3dE9x.jpg", "photo_01.jpg", "truncated"),             # random suffix, no truncation
    (unicodedata.normalize("NFD", "lábfej hátulról 01.jpg"), "lábfej hátulról 01.jpg", "exact"),
    ("sajat_reszvevo01_03.jpg", None, "none"),                         # a sibling's number is not a suffix
    ("photo_01.png", None, "none"),                                    # the extension must agree
    ("photo_03.jpg", None, "none"),
    ("photo_1234567.jpg", None, "none"),                               # prefix "photo" too short to match
    ("dup.jpg", None, "exact"),                                        # ambiguous: two sub-folders
    ("photo_0_aB3dE9x.jpg", None, "truncated"),                        # ambiguous prefix
])
def test_task_name_matches_disk_name(index: NameIndex, task_name: str, expected: str | None, rule: str) -> None:
    found_rule, found = index.candidates(task_name)
    assert found_rule == rule
    if expected is None:
        assert len(found) != 1
    else:
        assert found == (expected,)


def test_ambiguous_reports_every_candidate(index: NameIndex) -> None:
    assert index.candidates("dup.jpg")[1] == ("normal/dup.jpg", "pronation/dup.jpg")


@pytest.mark.parametrize(("ref", "name"), [
    ("9d203653-photo_01.jpg", "photo_01.jpg"),                                   # upload hash prefix
    ("/data/upload/12/9D203653-photo_01.jpg", "photo_01.jpg"),
    ("/data/upload/3/0a1b2c3d-l%C3%A1bfej%20h%C3%A1tulr%C3%B3l%2001.jpg", "lábfej hátulról 01.jpg"),
    ("/data/local-files/?d=anklealign%5CD6AE9F%5Cphoto.jpg", "photo.jpg"),      # local storage, Windows path
    ("photo-with-dash.jpg", "photo-with-dash.jpg"),                              # no 8-hex prefix: kept
    ("deadbeefx-photo.jpg", "deadbeefx-photo.jpg"),
])
def test_ref_name(ref: str, name: str) -> None:
    assert ref_name(ref) == name
