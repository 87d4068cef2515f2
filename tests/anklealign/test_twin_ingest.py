"""The ingest against the synthetic twin's ground truth (its SynthManifest), as a folder and as a zip."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import anklealign
from anklealign.ingest.decode import decode
from anklealign.twin.generator import SynthManifest

SCALE = 0.2


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthManifest]:
    out = tmp_path_factory.mktemp("twin-folder")
    return out, anklealign.synth(out, seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def twin_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthManifest]:
    out = tmp_path_factory.mktemp("twin-zip") / "anklealign.zip"
    return out, anklealign.synth(out, seed=0, scale=SCALE, as_zip=True)


@pytest.fixture(scope="module")
def loaded(twin: tuple[Path, SynthManifest], tmp_path_factory: pytest.TempPathFactory) -> anklealign.Dataset:
    return anklealign.load(twin[0], image_size=16, cache_dir=tmp_path_factory.mktemp("cache"))


def _reasons(ds: anklealign.Dataset) -> dict[str, str]:
    """Skipped image id (as the manifest names it) -> reason."""
    return {e["path"].removeprefix("anklealign/"): e["reason"] for e in ds.report.to_dict()["skipped"]}


def test_folder_and_zip_give_the_same_report(twin, twin_zip, loaded, tmp_path: Path) -> None:
    from_zip = anklealign.inspect(twin_zip[0], cache_dir=tmp_path).to_dict()
    from_folder = loaded.report.to_dict()
    assert from_zip.pop("source") != from_folder.pop("source")
    assert from_zip == from_folder
    assert twin_zip[1].images == twin[1].images


def test_counts_match_the_manifest(twin, loaded) -> None:
    m = twin[1]
    report = loaded.report.to_dict()
    decodable = {i for i, t in m.images.items() if t.decodable}
    test_side = set(m.consensus_ids) | set(m.consensus_duplicates)
    pictures = Counter(m.images[i].picture for i in decodable)
    assert report["kind"] == "anklealign" and report["synthetic"] is True and loaded.synthetic
    assert report["images_found"] == len(m.images)
    assert report["test"]["listed"] == m.consensus_listed
    assert report["test"]["images"] == len(m.consensus_ids)
    assert report["test"]["annotators"] == len(m.usable_annotators)
    assert report["label_tasks"] == m.tasks
    assert report["duplicate_groups"] == sum(n > 1 for n in pictures.values())
    assert report["leakage_removed"] == len(set(m.labels) & test_side)
    assert report["unlabelled"] == len(decodable - set(m.labels) - set(m.consensus_ids))
    assert report["agreement"]["mean_with_majority"] == pytest.approx(m.mean_agreement, abs=0.01)
    assert report["agreement"]["pairwise"] == pytest.approx(m.pairwise_agreement, abs=0.02)


def _expected_train(m: SynthManifest) -> dict[str, str]:
    """The training pool the rules give on the manifest's truth: test side out, group vote, one per exact set."""
    test_side = set(m.consensus_ids) | set(m.consensus_duplicates)
    by_picture: dict[int, list[str]] = {}
    for image_id in sorted(m.labels):
        by_picture.setdefault(m.images[image_id].picture, []).append(image_id)
    train = {}
    for members in by_picture.values():
        if test_side & {i for i, t in m.images.items() if t.picture == m.images[members[0]].picture}:
            continue
        votes = Counter(m.labels[i] for i in members).most_common()
        if len(votes) > 1 and votes[0][1] == votes[1][1]:
            continue   # tie: dropped
        kept_md5 = set()
        for image_id in members:
            if m.images[image_id].md5 not in kept_md5:
                kept_md5.add(m.images[image_id].md5)
                train[image_id] = votes[0][0]
    return train


def test_training_pool_matches_the_manifest(twin, loaded) -> None:
    m = twin[1]
    got = {i: loaded.classes[c] for i, c in zip(loaded.train.ids, loaded.train.labels.tolist(), strict=True)}
    assert got == _expected_train(m)
    counts = Counter(got.values())
    assert loaded.report.to_dict()["train"]["class_counts"] == {c: counts[c] for c in m.classes}


def test_no_test_image_or_duplicate_of_one_trains(twin, loaded) -> None:
    m = twin[1]
    assert not set(loaded.train.ids) & (set(m.consensus_ids) | set(m.consensus_duplicates))
    assert not set(loaded.train.groups.tolist()) & set(loaded.test.groups.tolist())
    reasons = _reasons(loaded)
    for image_id in m.consensus_duplicates:
        assert reasons[image_id].startswith("duplicate of test image")


def test_group_ids_are_the_manifest_pictures(twin, loaded) -> None:
    m = twin[1]
    ids = list(loaded.train.ids) + list(loaded.test.ids)
    groups = loaded.train.groups.tolist() + loaded.test.groups.tolist()
    by_group = {(g, m.images[i].picture) for i, g in zip(ids, groups, strict=True)}
    assert len({g for g, _ in by_group}) == len(by_group) == len({p for _, p in by_group})
    for members in (*m.exact_duplicate_sets, *m.near_duplicate_sets):
        assert len({g for i, g in zip(ids, groups, strict=True) if i in members}) <= 1


def test_consensus_matches_the_manifest(twin, loaded) -> None:
    """Exact for every image whose name is unique; for a name in two folders, a vote that cannot be
    placed (one task for two images) is left out, so those images get a subset of the true votes."""
    m = twin[1]
    clash = set(m.quirks["consensus_name_clash"])
    assert clash and loaded.test.ids == m.consensus_ids
    assert loaded.annotators == tuple(sorted(m.usable_annotators))
    for j, image_id in enumerate(loaded.test.ids):
        votes, truth = loaded.test_votes[j].tolist(), list(m.consensus_votes[image_id])
        if image_id in clash:
            assert all(v <= t for v, t in zip(votes, truth, strict=True)) and 2 * sum(votes) >= sum(truth)
            continue
        assert votes == truth
        assert bool(loaded.test_ties[j]) is (image_id in m.consensus_ties)
        if m.consensus_majority[image_id] is not None:
            assert loaded.classes[int(loaded.test.labels[j])] == m.consensus_majority[image_id]
    for a, code in enumerate(loaded.annotators):
        truth = [-1 if c is None else m.classes.index(c) for c in m.annotator_labels[code]]
        for j, (got, want) in enumerate(zip(loaded.test_annotator_labels[a].tolist(), truth, strict=True)):
            assert got == want or (got == -1 and m.consensus_ids[j] in clash)
    assert set(loaded.report.annotators_unusable) == set(m.annotators) - set(m.usable_annotators)


def test_every_image_is_used_or_explained(twin, loaded) -> None:
    m = twin[1]
    reasons = _reasons(loaded)
    used = set(loaded.train.ids) | set(loaded.test.ids)
    assert not used & set(reasons)
    assert set(m.images) <= used | set(reasons)
    assert all(reason.strip() for reason in reasons.values())
    report = loaded.report.to_dict()
    assert report["images_found"] == report["train"]["images"] + report["test"]["images"] + report["images_skipped"]


def test_every_quirk_is_handled(twin, loaded) -> None:
    m = twin[1]
    reasons = _reasons(loaded)
    report = loaded.report.to_dict()
    used = set(loaded.train.ids) | set(loaded.test.ids)
    for image_id in m.undecodable:
        assert reasons[image_id].startswith("undecodable")
    for image_id in m.non_image_files:
        assert reasons[image_id].startswith("not an image")
    for path in m.sample_files:
        assert reasons[path].startswith("not in a participant folder")
    participant_unmatched = {f"{u['file'].split('/')[1]}/{u['task']}" for u in report["unmatched_tasks"] if "file" in u}
    assert participant_unmatched == set(m.unmatched_json_names)
    for image_id in m.images_without_task:
        assert image_id in used or reasons[image_id].startswith(("no label: no task in", "duplicate of test"))
    for image_id, state in m.unlabelled_tasks.items():
        if image_id not in m.consensus_ids:
            expected = "has an empty result" if state == "empty_result" else "was cancelled"
            assert expected in reasons[image_id]
    for image_id, label in m.unknown_labels.items():
        assert f"unknown label {label!r}" in reasons[image_id]
    assert {u["label"] for u in report["unknown_labels"]} == set(m.unknown_labels.values())
    for code in m.folders_without_json:
        for image_id in (i for i in m.images if i.startswith(f"{code}/") and m.images[i].decodable):
            assert image_id in used or image_id in reasons
    for original, copy in m.conflicts:
        assert any(original in c["images"] and copy in c["images"] for c in report["conflicts"])
    for image_id in m.labels:   # every labelled picture (EXIF, BMP-as-.jpg, WebP, .JPG, sub-folders...)
        assert image_id in used or not reasons[image_id].startswith(("undecodable", "not an image", "no label"))


def test_exif_orientation_matches_the_truth(twin) -> None:
    out, m = twin
    for image_id in m.quirks["exif"]:
        truth = m.images[image_id]
        decoded = decode((out / "anklealign" / image_id).read_bytes())
        assert decoded.width / decoded.height == pytest.approx(truth.width / truth.height, rel=0.02)
