"""The synthetic twin: layout, Label Studio format, every quirk class of docs/DATA.md, determinism, drawing."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zipfile
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image, ImageOps

from anklealign.twin.difficulty import Difficulty
from anklealign.twin.draw import Foot, Scene, heel_angle, mirror, random_scene, render, tilt_class
from anklealign.twin.generator import SynthManifest, synth
from anklealign.twin.plan import build_plan

CODE = re.compile(r"^[A-Z0-9]{6}$")
UPLOAD = re.compile(r"^[0-9a-f]{8}-(.+)$")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    return synth(tmp_path_factory.mktemp("small"), seed=7, scale=0.25)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    return synth(tmp_path_factory.mktemp("full"), seed=0)


def _tasks(m: SynthManifest, path: str) -> list[dict]:
    data = (m.root / path).read_bytes()
    return json.loads(data) if data else []


def _uploads(m: SynthManifest, code: str) -> list[str]:
    """File names the participant's JSON uploads (Label Studio prefix removed)."""
    return [UPLOAD.match(t["file_upload"]).group(1) for t in _tasks(m, m.participant_json[code])]


def _class(raw: str) -> str:
    """The test's own reading of a label string (accents, number prefix, spaces, language)."""
    text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode().strip().lower()
    stem = re.sub(r"^\d+_", "", text)[:4]
    return {"pron": "pronation", "neut": "neutral", "szup": "supination", "supi": "supination"}[stem]


def _choices(m: SynthManifest) -> set[str]:
    paths = list(m.participant_json.values()) + list(m.annotator_files.values())
    return {r["value"]["choices"][0] for p in paths for t in _tasks(m, p) for r in t["annotations"][0]["result"]}


# ---------------------------------------------------------------- determinism, zip vs folder


def test_zip_holds_the_same_members_and_bytes_as_the_folder(tmp_path: Path, small: SynthManifest) -> None:
    packed = synth(tmp_path / "twin.zip", seed=7, scale=0.25, as_zip=True)
    assert packed.root == tmp_path / "twin.zip" and packed.as_zip
    tree = {f"anklealign/{p.relative_to(small.root).as_posix()}": p for p in small.root.rglob("*") if p.is_file()}
    with zipfile.ZipFile(packed.root) as archive:
        assert sorted(archive.namelist()) == sorted(tree)
        assert all(archive.read(name) == path.read_bytes() for name, path in tree.items())  # a second run
    assert packed.images == small.images and packed.labels == small.labels


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    first = synth(tmp_path / "a", seed=3, scale=0.05, as_zip=True)
    second = synth(tmp_path / "b", seed=3, scale=0.05, as_zip=True)
    assert second.root == tmp_path / "b" / "anklealign.zip"
    assert hashlib.sha256(first.root.read_bytes()).digest() == hashlib.sha256(second.root.read_bytes()).digest()
    realistic = Difficulty.at(0.5)
    assert build_plan(4, 0.05, False, realistic).folders[0].code not in \
        {f.code for f in build_plan(3, 0.05, False, realistic).folders}


def test_never_overwrites_and_validates(tmp_path: Path, small: SynthManifest) -> None:
    with pytest.raises(FileExistsError, match="already exists"):
        synth(small.root.parent, scale=0.25)
    for bad in ({"scale": 0.0}, {"scale": 5.0}, {"seed": -1}):
        with pytest.raises(ValueError, match="must be"):
            synth(tmp_path, **bad)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- layout and format


@pytest.mark.parametrize("fixture", ["small", "full"])
def test_layout(fixture: str, request: pytest.FixtureRequest) -> None:
    m: SynthManifest = request.getfixturevalue(fixture)
    top = sorted(p.name for p in m.root.iterdir())
    assert "SYNTHETIC_TWIN.txt" in top and "sample" in top and "consensus" in top
    marker = (m.root / "SYNTHETIC_TWIN.txt").read_text()
    assert "SYNTHETIC" in marker and f"seed {m.seed}" in marker and f"scale {m.scale:g}" in marker
    codes = [name for name in top if CODE.match(name)]
    assert codes == sorted(m.participants) and len(codes) == 15
    assert any("O" in c for c in codes) and any("0" in c for c in codes)
    assert len(m.participant_json) == 13 and len(m.folders_without_json) == 2
    for code in m.folders_without_json:
        assert not list((m.root / code).glob("*.json")) and list((m.root / code).glob("*.*"))
    assert len(_tasks(m, "sample/sample_tasks.json")) == 2 and len(m.sample_files) == 3
    assert not any(i.startswith("sample/") for i in m.images)
    everything = b"".join(p.read_bytes() for p in m.root.rglob("*.json"))
    assert b"true_class" not in everything and b"tilt" not in everything  # the answers stay out


def test_label_studio_export_format(small: SynthManifest) -> None:
    states = Counter()
    for path in small.participant_json.values():
        tasks = _tasks(small, path)
        assert isinstance(tasks, list) and tasks
        for task in tasks:
            assert UPLOAD.match(task["file_upload"])
            assert task["data"]["image"] == f"/data/upload/{task['project']}/{task['file_upload']}"
            annotation = task["annotations"][0]
            states["cancelled"] += annotation["was_cancelled"]
            states["empty"] += not annotation["result"]
            for result in annotation["result"]:
                assert result["type"] == "choices" and result["from_name"] and result["to_name"]
                assert len(result["value"]["choices"]) == 1
    assert states["cancelled"] >= 1 and states["empty"] >= 1


# ---------------------------------------------------------------- every quirk class, at small scale


QUIRKS = ("exif", "bmp_as_jpg", "truncated_file", "empty_file", "html_as_jpg", "non_image", "subfolder",
          "untasked", "code_appended", "code_twice", "code_prefixed", "dedup_2", "truncated", "percent",
          "long_name", "cancelled", "cancelled_with_result", "empty_result", "unknown_label", "exact_copy",
          "near_copy", "conflict", "consensus", "consensus_duplicate", "consensus_name_clash",
          "name_repeats_across_folders", "task_missing_file", "folder_without_json", "annotator_empty_file",
          "annotator_no_labels", "annotator_lowercase_name", "code_with_letter_O", "code_with_digit_0",
          "json_name_code", "json_name_lower", "json_name_labels", "json_name_project", "json_name_hf",
          "vocab_std", "vocab_std_space", "vocab_english", "vocab_accented", "vocab_accented_space",
          "ext.jpg", "ext.jpeg", "ext.png", "ext.webp", "ext.JPG")


def test_every_quirk_class_is_present(small: SynthManifest) -> None:
    missing = [q for q in QUIRKS if not small.quirks.get(q)]
    assert not missing
    for quirk, items in small.quirks.items():
        if quirk not in ("task_missing_file", "folder_without_json") and not quirk.startswith("code_with"):
            assert all((small.root / item).exists() for item in items), quirk


def test_file_quirks_are_in_the_bytes(small: SynthManifest) -> None:
    root = small.root
    [bmp] = small.quirks["bmp_as_jpg"]
    assert bmp.endswith(".jpg") and (root / bmp).read_bytes()[:2] == b"BM"
    for item in small.quirks["exif"]:
        with Image.open(root / item) as img:
            orientation = img.getexif()[0x0112]
            upright = ImageOps.exif_transpose(img)
            truth = small.images[item]
            assert orientation in (3, 6, 8) and upright.size == (truth.width, truth.height)
            assert (img.size != upright.size) == (orientation in (6, 8))
    for item in small.undecodable:
        with pytest.raises(OSError), Image.open(root / item) as img:
            img.load()
    assert {Path(p).suffix for p in small.non_image_files} >= {".ipynb", ".txt"}
    sub = {Path(i).parts[1] for i in small.quirks["subfolder"]}
    assert sub == {"normal", "pronation", "supination"}
    assert small.participant_json[small.quirks["subfolder"][0].split("/")[0]]


def test_json_names_differ_from_disk_names_by_each_rule(small: SynthManifest) -> None:
    patterns = {"code_appended": "{stem}_{code}{ext}", "code_twice": "{stem}_{code}_{code}{ext}",
                "code_prefixed": "{code}_{stem}{ext}", "dedup_2": "{stem}_2{ext}"}
    for quirk, pattern in patterns.items():
        for item in small.quirks[quirk]:
            code, path = item.split("/", 1)
            stem, ext = Path(path).stem, Path(path).suffix
            assert pattern.format(stem=stem, code=code, ext=ext) in _uploads(small, code)
    for item in small.quirks["truncated"]:
        code, path = item.split("/", 1)
        cut = [u for u in _uploads(small, code) if Path(path).stem.startswith(Path(u).stem[:-8])
               and re.search(r"_[A-Za-z0-9]{7}\.\w+$", u)]
        assert cut and len(cut[0]) < len(path)
    for item in small.quirks["percent"]:
        code, path = item.split("/", 1)
        assert quote(Path(path).name) in _uploads(small, code)
    for item in small.unmatched_json_names:
        code, name = item.split("/", 1)
        assert name in _uploads(small, code) and not (small.root / code / name).exists()
    for item in small.images_without_task:
        code, path = item.split("/", 1)
        assert Path(path).name not in _uploads(small, code)


def test_label_vocabularies_and_the_unknown_label(small: SynthManifest, full: SynthManifest) -> None:
    choices, every = _choices(small), _choices(full)
    for labels in (("1_Pronacio", "2_Neutralis", "3_Szupinacio"), ("pronation", "neutral", "supination"),
                   ("1_Pronáló", "2_Neutrális", "3_Szupináló")):
        assert set(labels) & choices   # each vocabulary at any scale; a folder of a few photos may lack a class
        assert set(labels) <= every    # every label of each at scale 1
    assert any(c.endswith(" ") for c in choices) and "4_Egyeb" in choices
    assert list(small.unknown_labels.values()) == ["4_Egyeb"]


def test_duplicates_are_real(small: SynthManifest) -> None:
    md5 = {i: t.md5 for i, t in small.images.items()}
    for group in small.exact_duplicate_sets:
        assert len({md5[i] for i in group}) == 1 and len({i.split("/")[0] for i in group}) > 1
    for group in small.near_duplicate_sets:
        assert len({small.images[i].picture for i in group}) == 1 and len({md5[i] for i in group}) > 1
    for original, copy in small.conflicts:
        assert md5[original] == md5[copy] and small.labels[original] != small.labels[copy]
    names = Counter(Path(i).name for i in small.images)
    assert names["sajat_reszvevo01_01.jpg"] >= 2


# ---------------------------------------------------------------- the full-scale twin


def test_counts_at_scale_one(full: SynthManifest) -> None:
    # The manifest's figures are checked against the files on disk, not against the plan that made both.
    on_disk = {str(p.relative_to(full.root)): hashlib.md5(p.read_bytes()).hexdigest()
               for code in full.participants for p in (full.root / code).rglob("*") if p.is_file()}
    images = {i: md5 for i, md5 in on_disk.items() if not i.endswith((".json", ".ipynb"))}
    assert set(full.images) == set(images) - set(full.non_image_files)
    assert all(full.images[i].md5 == images[i] for i in full.images)
    assert full.tasks == sum(len(_tasks(full, path)) for path in full.participant_json.values())
    by_md5: dict[str, list[str]] = {}
    for i in full.images:
        by_md5.setdefault(images[i], []).append(i)
    exact = sorted(tuple(sorted(v)) for v in by_md5.values() if len(v) > 1)
    assert sorted(tuple(sorted(s)) for s in full.exact_duplicate_sets) == exact
    assert 400 <= len(full.images) <= 430 and 300 <= full.tasks <= 340 and 300 <= len(full.labels) <= 335
    assert len(exact) == 11 and len(full.near_duplicate_sets) >= 11
    assert len(full.conflicts) == 5 and len(full.consensus_duplicates) >= 4
    for original, copy in full.conflicts:
        assert images[original] == images[copy]
    with Image.open(full.root / max(full.images, key=lambda i: full.images[i].width)) as widest:
        assert max(ImageOps.exif_transpose(widest).size) <= 1008  # the small default sizes


def test_class_proportions_at_scale_one(full: SynthManifest) -> None:
    counts = Counter(full.labels.values())
    share = {c: counts[c] / len(full.labels) for c in full.classes}
    for cls, target in zip(full.classes, (0.41, 0.43, 0.16), strict=True):
        assert abs(share[cls] - target) < 0.07, share
    truth = Counter(full.true_classes[i] for i in full.labels)
    assert sum(full.labels[i] == full.true_classes[i] for i in full.labels) / len(full.labels) > 0.6
    assert min(truth.values()) > 20


def test_consensus_at_scale_one(full: SynthManifest) -> None:
    raw = (full.root / "consensus" / "anklealign-consensus.txt").read_bytes()
    lines = raw.decode().split("\r\n")[:-1]
    assert len(lines) == 57 and all(re.match(r"^anklealign\\[A-Z0-9]{6}\\[^\\]+$", line) for line in lines)
    names = Counter(line.rsplit("\\", 1)[1] for line in lines)
    assert len(names) == 53 and sorted(names.values()).count(2) == 4
    assert [line.replace("anklealign\\", "").replace("\\", "/") for line in lines] == list(full.consensus_ids)
    sources = {i.split("/")[0] for i in full.consensus_ids}
    labelled_by = {i.split("/")[0] for i in full.labelled_consensus}
    assert len(sources) == 3 and len(labelled_by) == 2 and (sources - labelled_by) <= set(full.folders_without_json)
    files = {code: (full.root / path).read_bytes() for code, path in full.annotator_files.items()}
    assert len(files) == 21 and sum(not data for data in files.values()) == 2
    assert len(full.usable_annotators) == 18 and len(full.annotators_without_folder) >= 5
    labelled = Counter()
    for code, data in files.items():
        for task in json.loads(data) if data else []:
            annotation = task["annotations"][0]
            labelled[code] += bool(annotation["result"]) and not annotation["was_cancelled"]
    assert sorted(c for c, n in labelled.items() if n) == sorted(full.usable_annotators)
    votes = list(full.consensus_votes.values())
    assert sum(map(sum, votes)) == sum(labelled.values()) and all(15 <= sum(v) <= 18 for v in votes)
    # Each annotator's tasks follow the txt order, so the k-th task with a name is its k-th line.
    lines_of: dict[str, list[int]] = {}
    for index, image in enumerate(full.consensus_ids):
        lines_of.setdefault(image.split("/", 1)[1], []).append(index)
    for code in full.usable_annotators:
        seen, got = Counter(), [None] * 57
        for task in sorted(json.loads(files[code]), key=lambda t: t["id"]):
            name = UPLOAD.match(task["file_upload"]).group(1)
            index = lines_of[name][seen[name]]
            seen[name] += 1
            annotation = task["annotations"][0]
            if annotation["result"] and not annotation["was_cancelled"]:
                got[index] = _class(annotation["result"][0]["value"]["choices"][0])
        assert tuple(got) == full.annotator_labels[code]
    majority = Counter(full.consensus_majority.values())
    assert majority["supination"] == 0 and majority["neutral"] / 57 > 0.78 and majority["pronation"] >= 3
    assert full.consensus_ties and 0.65 < full.mean_agreement < 0.8 and 0.5 < full.pairwise_agreement < 0.65


# ---------------------------------------------------------------- the drawing


def _scene(tilt: float, side: int) -> Scene:
    foot = Foot(side=side, tilt=tilt, x=0.5, y=0.35, size=0.2, lean=0.0, skin=(1.0, 1.0, 1.0))
    black = (0.0, 0.0, 0.0)
    return Scene((foot,), black, black, black, (), 0.99, 0.0, 0.0, 0.0, False)


def _heel_shift(img: Image.Image) -> float:
    """Centroid x of the heel rows minus that of the leg rows, in pixels (bright = skin)."""
    a = np.asarray(img.convert("L"), dtype=np.float64)
    cols = np.arange(a.shape[1])
    leg, heel = a[10:40], a[95:115]  # the calf (ankle at y = 70) and the heel above the forefoot
    return float((heel * cols).sum() / heel.sum() - (leg * cols).sum() / leg.sum())


@pytest.mark.parametrize("tilt", [-15.0, 0.0, 15.0])
def test_flip_preserves_the_class(tilt: float) -> None:
    rng = np.random.default_rng(int(tilt) + 20)
    for feet in (1, 2):
        scene = random_scene(rng, tilt=tilt, feet=feet, aspect=1.3)
        flipped = mirror(scene)
        assert [tilt_class(f.tilt) for f in flipped.feet] == [tilt_class(f.tilt) for f in scene.feet]
        assert [f.side for f in flipped.feet] == [-f.side for f in reversed(scene.feet)]
        assert sorted(heel_angle(f) for f in flipped.feet) == sorted(-heel_angle(f) for f in scene.feet)
        a = np.asarray(render(scene, 160, 120), dtype=np.int16)[:, ::-1]
        b = np.asarray(render(flipped, 160, 120), dtype=np.int16)
        assert np.abs(a - b).max() <= 1  # the mirrored scene is the flipped picture
    # Pronation swings the heel laterally: to the viewer's left for a left foot, right for a right one.
    left, right = render(_scene(tilt, -1), 200, 200), render(_scene(tilt, +1), 200, 200)
    assert np.sign(round(_heel_shift(left))) == np.sign(tilt)
    assert np.sign(round(_heel_shift(right))) == -np.sign(tilt)
    assert _heel_shift(left.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) == pytest.approx(_heel_shift(right), abs=0.5)


def test_tilt_classes() -> None:
    assert [tilt_class(t) for t in (-20, -6.01, -6, 0, 6, 6.01, 20)] == [0, 0, 1, 1, 1, 2, 2]
