"""Loading sources: layouts, zips read in place, bad sources, the Dataset object and the cache."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import anklealign
import anklealign.dataset
import anklealign.ingest.scan
from anklealign import DataError

from .conftest import LABELS, MINI_EXPECTED, encode, export, jpeg, mini_files, picture, task, write_tree, write_zip


def _counts(report: anklealign.QualityReport) -> dict:
    data = report.to_dict()
    return {key: data[key] for key in MINI_EXPECTED}


@pytest.mark.parametrize("layout", ["folder", "zip", "doubled folder", "doubled zip", "bare folder"])
def test_every_layout_gives_the_same_counts(tmp_path: Path, cache_dir: Path, layout: str) -> None:
    prefix = {"bare folder": ""}.get(layout, "anklealign/anklealign/" if "doubled" in layout else "anklealign/")
    files = mini_files(prefix)
    source = write_zip(tmp_path / "a.zip", files) if "zip" in layout else write_tree(tmp_path / "d", files)
    report = anklealign.inspect(source, cache_dir=cache_dir)
    assert _counts(report) == MINI_EXPECTED
    assert report.source == str(source.resolve())


def test_every_file_is_accounted_for(mini_tree: Path, cache_dir: Path) -> None:
    report = anklealign.inspect(mini_tree, cache_dir=cache_dir).to_dict()
    skipped = {e["path"].removeprefix("anklealign/"): e["reason"] for e in report["skipped"]}
    assert skipped == {
        "A1B2C3/notes.ipynb": "not an image (.ipynb)",
        "A1B2C3/p4.jpg": "no label: no task in a1b2c3_labels.json",
        "D4E5F6/d2.jpg": "no label: the folder has no usable label file",
        "consensus/EEE444.json": "label file ignored: empty file",
        "sample/s.jpg": "not in a participant folder (in sample/)",
    }
    assert report["images_found"] == report["train"]["images"] + report["test"]["images"] + report["images_skipped"]
    assert report["unlabelled"] == 2
    assert report["unmatched_tasks"] == [{"file": "anklealign/A1B2C3/a1b2c3_labels.json", "task": "missing.jpg",
                                          "reason": "no such image in A1B2C3/"}]
    assert report["annotators_usable"] == ["AAA111", "BBB222", "CCC333"]
    assert report["annotators_unusable"] == {"EEE444": "label file ignored: empty file"}


def test_dataset_object(mini_tree: Path, cache_dir: Path) -> None:
    ds = anklealign.load(mini_tree, image_size=24, color="rgb", resize="letterbox", cache_dir=cache_dir)
    assert ds.classes == ("pronation", "neutral", "supination") and ds.kind == "anklealign"
    assert ds.train.ids == ("A1B2C3/p1.jpg", "A1B2C3/p3.jpg", "G7H8I9/normal/g1.jpg", "G7H8I9/pronation/g2.jpg")
    assert ds.train.labels.tolist() == [0, 2, 1, 0]              # g2: from its sub-folder
    assert ds.train.images.shape == (4, 3, 24, 24) and ds.train.images.dtype == torch.uint8
    assert ds.train.groups.dtype == ds.train.labels.dtype == torch.int64
    assert ds.test.ids == ("D4E5F6/d1.jpg", "A1B2C3/p2.jpg")      # list order
    assert ds.test_votes.tolist() == [[2, 1, 0], [0, 3, 0]] and ds.test.labels.tolist() == [0, 1]
    assert ds.test_ties.tolist() == [False, False]
    assert ds.annotators == ("AAA111", "BBB222", "CCC333")
    assert ds.test_annotator_labels.tolist() == [[0, 1], [0, 1], [1, 1]]
    assert (ds.image_size, ds.color, ds.resize, ds.synthetic) == (24, "rgb", "letterbox", False)
    assert len(ds.fingerprint) == 64


def test_fingerprint_is_size_independent_and_content_dependent(tmp_path: Path, cache_dir: Path) -> None:
    root = write_tree(tmp_path / "d", mini_files())
    a = anklealign.load(root, image_size=16, cache_dir=cache_dir).fingerprint
    assert anklealign.load(root, image_size=32, color="rgb", cache_dir=cache_dir).fingerprint == a
    (root / "anklealign/A1B2C3/p1.jpg").write_bytes(jpeg(42))
    assert anklealign.load(root, image_size=16, cache_dir=cache_dir).fingerprint != a


def test_second_load_decodes_nothing(mini_tree: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = anklealign.load(mini_tree, image_size=20, cache_dir=cache_dir)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an image on a cached load")

    monkeypatch.setattr(anklealign.ingest.scan, "decode", refuse)
    monkeypatch.setattr(Image, "open", refuse)
    second = anklealign.load(mini_tree, image_size=20, cache_dir=cache_dir)
    assert torch.equal(first.train.images, second.train.images) and first.test.ids == second.test.ids
    assert anklealign.inspect(mini_tree, cache_dir=cache_dir).to_dict() == first.report.to_dict()


@pytest.mark.parametrize("damage", ["truncated", "other shape"])
def test_a_damaged_image_cache_is_rebuilt_never_trusted(mini_tree: Path, cache_dir: Path, damage: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    first = anklealign.load(mini_tree, image_size=20, cache_dir=cache_dir)
    [cached] = [p for p in cache_dir.rglob("*") if p.is_file() and p.suffix == ".pt"]
    if damage == "truncated":
        cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    else:  # right ids, wrong tensor: e.g. written by another version under the same key
        blob = torch.load(cached, weights_only=True)
        torch.save({**blob, "images": blob["images"][:, :, :10, :10].contiguous()}, cached)
    with caplog.at_level("WARNING"):
        again = anklealign.load(mini_tree, image_size=20, cache_dir=cache_dir)
    assert torch.equal(first.train.images, again.train.images) and torch.equal(first.test.images, again.test.images)
    assert any("ignoring" in r.getMessage() for r in caplog.records)
    assert torch.equal(anklealign.load(mini_tree, image_size=20, cache_dir=cache_dir).train.images,
                       first.train.images)  # and the rebuilt file is whole again


def test_new_size_reuses_the_scan(mini_tree: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    anklealign.inspect(mini_tree, cache_dir=cache_dir)
    monkeypatch.setattr(anklealign.dataset, "scan", lambda *a, **k: pytest.fail("scanned twice"))
    ds = anklealign.load(mini_tree, image_size=12, cache_dir=cache_dir)
    assert ds.train.images.shape == (4, 1, 12, 12)


def test_same_pixels_whichever_path_decodes(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "d", mini_files())
    cold = anklealign.load(root, image_size=20, cache_dir=tmp_path / "c1")      # scan + tensors together
    anklealign.inspect(root, cache_dir=tmp_path / "c2")
    split = anklealign.load(root, image_size=20, cache_dir=tmp_path / "c2")    # tensors after the scan
    assert torch.equal(cold.train.images, split.train.images)


def test_imagefolder_layout(tmp_path: Path, cache_dir: Path) -> None:
    files = {f"ds/train/{c}/{i}.png": encode(picture(10 * k + i), "PNG")
             for k, c in enumerate(["dog", "cat"]) for i in range(3)}
    files |= {"ds/test/cat/t1.png": encode(picture(50), "PNG"), "ds/test/dog/t2.jpg": jpeg(51),
              "ds/test/dog/t3.png": files["ds/train/cat/0.png"], "ds/README.txt": b"hello"}
    ds = anklealign.load(write_tree(tmp_path, files) / "ds", image_size=16, cache_dir=cache_dir)
    assert ds.kind == "imagefolder" and ds.classes == ("cat", "dog")
    assert ds.test.ids == ("test/cat/t1.png", "test/dog/t2.jpg", "test/dog/t3.png")
    assert ds.test.labels.tolist() == [0, 1, 1]
    assert ds.test_votes.tolist() == [[1, 0], [0, 1], [0, 1]]
    assert ds.test_annotator_labels.shape == (0, 3) and ds.annotators == ()
    assert "train/cat/0.png" not in ds.train.ids and len(ds.train.ids) == 5    # duplicate of t3 removed
    report = ds.report.to_dict()
    assert report["leakage_removed"] == 1 and report["train"]["class_counts"] == {"cat": 2, "dog": 3}
    assert {"path": "README.txt", "reason": "not in train/<class>/ or test/<class>/"} in report["skipped"]


def _zip_with(tmp_path: Path, name: str) -> Path:
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("anklealign/A1B2C3/p1.jpg", jpeg(1))
        archive.writestr(zipfile.ZipInfo(name), b"x")
    return tmp_path / "evil.zip"


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "nope.zip", "no such file or folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no files"),
    (lambda d: write_zip(d / "other.zip", {"docs/readme.txt": b"hi", "pics/a.jpg": jpeg(1)}),
     "not an AnkleAlign dataset"),
    (lambda d: write_tree(d, {"bad.zip": b"PK\x03\x04 definitely not a zip"}) / "bad.zip", "not a readable zip"),
    (lambda d: _zip_with(d, "../escape.jpg"), "points outside the archive"),
    (lambda d: _zip_with(d, "anklealign/../../escape.jpg"), "points outside the archive"),
    (lambda d: _zip_with(d, "/etc/passwd"), "points outside the archive"),
    (lambda d: write_tree(d / "t", {"anklealign/A1B2C3/p.jpg": jpeg(1)}), "no usable labelled image"),
    (lambda d: write_tree(d / "z", {"anklealign.zip": b"PK"}), "to read anklealign.zip, pass the zip itself"),
])
def test_bad_sources_raise_one_line_naming_the_path(tmp_path: Path, cache_dir: Path, make, message: str) -> None:
    source = make(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        anklealign.load(source, cache_dir=cache_dir)
    text = str(info.value)
    assert "\n" not in text and str(Path(source).resolve()) in text


def test_nothing_is_extracted_from_a_zip(tmp_path: Path, cache_dir: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", mini_files())
    anklealign.load(archive, image_size=16, cache_dir=cache_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "cache"]
    assert not list(cache_dir.rglob("*.jpg"))


def test_unmatched_and_unknown_labels_and_cancelled_tasks(tmp_path: Path, cache_dir: Path) -> None:
    files = mini_files()
    files["anklealign/J1K2L3/a.jpg"] = jpeg(60)
    files["anklealign/J1K2L3/b.JPG"] = jpeg(61)
    files["anklealign/J1K2L3/c.webp"] = encode(picture(62), "WEBP")
    files["anklealign/J1K2L3/d.jpg"] = encode(picture(63), "BMP")          # a BMP named .jpg
    files["anklealign/J1K2L3/e.jpg"] = b"\xff\xd8 not really"              # unreadable
    files["anklealign/J1K2L3/j.json"] = export(task("a.jpg", "4_Egyeb"), task("b.jpg", LABELS[0], cancelled=True),
                                               task("c.webp", None), task("d.jpg", LABELS[2]),
                                               task("e.jpg", LABELS[1]))
    report = anklealign.inspect(write_tree(tmp_path / "d", files), cache_dir=cache_dir).to_dict()
    skipped = {e["path"].removeprefix("anklealign/J1K2L3/"): e["reason"] for e in report["skipped"]}
    assert skipped["a.jpg"] == "no label: its task in j.json has an unknown label '4_Egyeb'"
    assert skipped["b.JPG"] == "no label: its task in j.json was cancelled"
    assert skipped["c.webp"] == "no label: its task in j.json has an empty result"
    assert skipped["e.jpg"].startswith("undecodable")
    assert "d.jpg" not in skipped and report["train"]["class_counts"]["supination"] == 2
    assert report["unknown_labels"] == [{"file": "anklealign/J1K2L3/j.json", "task": "a.jpg", "label": "4_Egyeb"}]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="color must be one of"):
        anklealign.load(Path("."), color="grey")
    with pytest.raises(ValueError, match="resize must be one of"):
        anklealign.load(Path("."), resize="crop")
    with pytest.raises(ValueError, match="image_size must be an int"):
        anklealign.load(Path("."), image_size=2)


def test_decode_image_matches_the_training_tensors(mini_tree: Path, cache_dir: Path) -> None:
    ds = anklealign.load(mini_tree, image_size=24, color="rgb", resize="letterbox", cache_dir=cache_dir)
    data = (mini_tree / "anklealign" / ds.train.ids[0]).read_bytes()
    array = anklealign.decode_image(data, image_size=24, color="rgb", resize="letterbox")
    assert torch.equal(torch.from_numpy(array), ds.train.images[0])
    with pytest.raises(DataError, match="cannot use this image: not an image"):
        anklealign.decode_image(b"hello")


def test_consensus_list_problems_and_os_clutter(tmp_path: Path, cache_dir: Path) -> None:
    files = mini_files()
    files["anklealign/consensus/anklealign-consensus.txt"] += (
        b"anklealign\\D4E5F6\\nothere.jpg\r\nanklealign\\ZZZZZ9\\d1.jpg\r\nanklealign\\d4e5f6\\D1.JPG\r\n")
    files["__MACOSX/anklealign/A1B2C3/._p1.jpg"] = b"\0\5\26\7 AppleDouble"
    report = anklealign.inspect(write_zip(tmp_path / "a.zip", files), cache_dir=cache_dir).to_dict()
    assert [(p["line"].rsplit(":", 1)[1], p["problem"]) for p in report["consensus_problems"]] == [
        ("3", "no such image"), ("4", "names no participant folder"), ("5", "listed twice")]
    assert report["test"]["listed"] == 5 and report["test"]["images"] == 2
    assert not any("MACOSX" in entry["path"] for entry in report["skipped"])
