"""The twin's difficulty knob, its known ceiling, twin.json and the evaluation draw."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

import anklealign
from anklealign.ingest.decode import decode
from anklealign.ingest.dedup import find_groups
from anklealign.twin.ceiling import Mixture, ceiling, chance_macro_f1
from anklealign.twin.difficulty import Difficulty, parse_difficulty
from anklealign.twin.generator import synth

SCALE = 0.2


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> anklealign.SynthManifest:
    return synth(tmp_path_factory.mktemp("twin"), seed=5, scale=SCALE, eval_n=40)


def test_difficulty_levels_and_bad_values() -> None:
    easy, realistic, hard = (parse_difficulty(n) for n in ("easy", "Realistic ", "hard"))
    assert (easy.level, realistic.level, hard.level) == (0.0, 0.5, 1.0)
    assert parse_difficulty("0.25") == Difficulty.at(0.25) and Difficulty.at(0.25).name == "0.25"
    # Harder: a weaker drawn signal, noisier labels, stronger nuisance.
    assert easy.tilt_gain > realistic.tilt_gain > hard.tilt_gain
    assert easy.label_noise < realistic.label_noise < hard.label_noise
    assert easy.texture < realistic.texture < hard.texture
    for bad in ("medium", "1.5", -0.1, float("nan"), True):
        with pytest.raises(ValueError, match="difficulty must be easy"):
            parse_difficulty(bad)


def test_ceiling_has_known_answers() -> None:
    mix = Mixture(weights=(0.4, 0.48, 0.12), ranges=((-20.0, -6.0), (-6.0, 6.0), (6.0, 20.0)))
    assert mix.class_prior() == pytest.approx([0.4, 0.48, 0.12])
    clean = ceiling(mix, presentation_noise=1e-6, reading_noise=None, n=20_000)
    assert clean["vs_true"]["accuracy"]["value"] == 1.0 and "vs_labels" not in clean
    # A shown tilt blurred by 2 degrees: only tilts within a few degrees of the two class edges (+-6)
    # can be misread. The exact error of the Bayes rule at an edge between two uniform densities
    # a and b (a > b) is integral of min(a N(x), b N(-x)) ... checked here against a direct simulation.
    noisy = ceiling(mix, presentation_noise=2.0, reading_noise=3.0, n=100_000, seed=1)
    rng = np.random.default_rng(2)
    t, _ = mix.sample(rng, 200_000)
    r = t + 2.0 * rng.standard_normal(len(t))
    truth = np.digitize(t, [-6.0, 6.0])
    # The Bayes classifier of r here: the class whose band holds r, except where the prior jump moves
    # the boundary (the neutral band's higher density pushes both edges outward by a fraction of a degree).
    simple = np.digitize(r, [-6.0, 6.0])
    acc = noisy["vs_true"]["accuracy"]
    assert acc["value"] >= float((simple == truth).mean()) - 3 * acc["se"]   # Bayes beats any other rule
    assert acc["value"] < 1.0 and 0.0 < noisy["label_noise"] < 0.5
    assert noisy["vs_labels"]["accuracy"]["value"] < acc["value"]   # noisy labels lower the ceiling
    assert chance_macro_f1([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == pytest.approx(1 / 3, abs=1e-4)


def test_ceiling_falls_with_difficulty() -> None:
    from anklealign.twin.summary import expected_summary

    values = [expected_summary(Difficulty.at(level))["splits"]["eval_train_prior"]["ceiling"]["vs_true"]
              ["macro_f1"]["value"] for level in (0.0, 0.5, 1.0)]
    assert values[0] > values[1] > values[2] > 1 / 3


def test_twin_json_marker_and_inspect_agree(twin: anklealign.SynthManifest, tmp_path: Path) -> None:
    beside = twin.root.parent
    written = json.loads((beside / "twin.json").read_text())
    assert written == json.loads(json.dumps(twin.twin))
    assert set(written["splits"]) == {"train", "test", "eval_train_prior", "eval_test_prior"}
    for split in written["splits"].values():
        assert math.isclose(sum(split["class_prior"].values()), 1.0, abs_tol=1e-3)
        for block in split["ceiling"].values():
            assert 0 < block["macro_f1"]["se"] < 0.01 and 0 < block["accuracy"]["value"] <= 1
    # What the twin holds: the train labels' noise rate is near the expected one.
    for split in ("train", "test"):   # few images at this scale: a wide tolerance
        assert abs(written["realised"][split]["label_noise"] - written["splits"][split]["label_noise"]) < 0.15
    report = anklealign.inspect(twin.root, cache_dir=tmp_path / "cache")
    assert report.twin["splits"] == written["splits"] and report.twin["difficulty"]["name"] == "realistic"
    assert "ceiling macro-F1" in report.summary()


def test_eval_draw_is_new_pictures_labelled_by_true_class(twin: anklealign.SynthManifest) -> None:
    folder = twin.root.parent / "eval"
    files = {c: sorted((folder / c).glob("*.png")) for c in anklealign.CLASSES}
    assert sum(map(len, files.values())) == 40 == twin.twin["eval"]["images"]
    assert {c: len(v) for c, v in files.items()} == twin.twin["eval"]["class_counts"]
    # No evaluation picture is in the archive, not even as a resized or mirrored copy.
    archive = [twin.root / i for i, t in twin.images.items() if t.decodable]
    decoded = [decode(p.read_bytes()) for p in archive] + [decode(p.read_bytes()) for v in files.values() for p in v]
    fields = ("sha256", "pixel_sha256", "phash", "thumb")
    mirrors = {"mirror_pixel_sha256": [d.mirror_pixel_sha256 for d in decoded],
               "mirror_phash": [d.mirror_phash for d in decoded], "mirror_thumbs": [d.mirror_thumb for d in decoded]}
    groups = find_groups(*([getattr(d, f) for d in decoded] for f in fields), **mirrors)
    assert not set(groups.group[:len(archive)]) & set(groups.group[len(archive):])


def test_eval_draw_leaves_the_archive_unchanged(tmp_path: Path) -> None:
    plain = synth(tmp_path / "a", seed=2, scale=0.05, as_zip=True)
    with_eval = synth(tmp_path / "b", seed=2, scale=0.05, as_zip=True, eval_n=5, eval_prior="test")
    digest = [hashlib.sha256(m.root.read_bytes()).hexdigest() for m in (plain, with_eval)]
    assert digest[0] == digest[1]
    assert not (tmp_path / "a" / "eval").exists() and (tmp_path / "b" / "eval").is_dir()
    # The consensus prior has no supination at all.
    assert not list((tmp_path / "b" / "eval" / "supination").glob("*.png"))
    assert with_eval.twin["eval"]["prior"] == "test"
    with zipfile.ZipFile(plain.root) as archive:
        marker = archive.read("anklealign/SYNTHETIC_TWIN.txt").decode()
    assert "difficulty realistic" in marker and '"vs_labels"' in marker


def test_difficulty_changes_pictures_and_labels_not_the_layout(tmp_path: Path) -> None:
    easy = synth(tmp_path / "easy", seed=4, scale=0.05, difficulty="easy")
    hard = synth(tmp_path / "hard", seed=4, scale=0.05, difficulty=1.0)
    def by_file(m: anklealign.SynthManifest) -> dict[tuple[str, str], float]:  # a class sub-folder follows the label
        return {(i.split("/")[0], Path(i).name): t.tilt for i, t in m.images.items()}

    assert by_file(easy) == by_file(hard) and easy.participants == hard.participants
    assert any(easy.images[i].md5 != hard.images[i].md5 for i in easy.images)
    assert hard.twin["realised"]["train"]["label_noise"] > easy.twin["realised"]["train"]["label_noise"]


def test_an_existing_eval_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    with pytest.raises(FileExistsError, match="eval"):
        synth(tmp_path, seed=0, scale=0.05, eval_n=3)
    assert not (tmp_path / "anklealign").exists()


def test_inspect_of_other_data_has_no_twin_figures(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for k, cls in enumerate(("cat", "dog")):
            (tmp_path / "d" / split / cls).mkdir(parents=True)
            for i in range(3):
                colour = (40 * i + 10 * k, 80 * k, 30)
                Image.new("RGB", (20, 20), colour).save(tmp_path / "d" / split / cls / f"{i}.png")
    report = anklealign.inspect(tmp_path / "d", cache_dir=tmp_path / "cache")
    assert report.twin == {} and not report.synthetic and "ceiling" not in report.summary()


def test_selected_pictures_ceiling_matches_a_simulation() -> None:
    # Consensus-like: neutral tilts whose pictures were chosen to show at most 4.5 degrees.
    mix = Mixture(weights=(0.2, 0.8), ranges=((-15.0, -8.0), (-3.0, 2.5)), shown_within=(None, 4.5))
    t, r = mix.sample_shown(np.random.default_rng(0), 50_000, 4.5)
    assert np.abs(r[(t > -3.0)]).max() <= 4.5 and np.abs(r[t < -8.0]).max() > 4.5
    est = ceiling(mix, presentation_noise=4.5, reading_noise=None, n=50_000)["vs_true"]["accuracy"]
    # Brute force: the Bayes rule from a fine histogram of (r, class) pairs of a separate simulation.
    t2, r2 = mix.sample_shown(np.random.default_rng(1), 400_000, 4.5)
    bins = np.linspace(-30, 30, 241)
    which = np.digitize(r2, bins)
    truth2 = np.digitize(t2, [-6.0, 6.0])
    rule = np.array([np.bincount(truth2[which == b], minlength=3).argmax() for b in range(len(bins) + 1)])
    simulated = float((rule[np.digitize(r, bins)] == np.digitize(t, [-6.0, 6.0])).mean())
    assert abs(est["value"] - simulated) < 0.01


def test_consensus_ceiling_against_labels_matches_a_brute_force_rule() -> None:
    # Labels: majority of 16 readings, a supination majority ends as neutral (as the generator does).
    # Noisy readers: the vote then differs from one reading's most probable class (the old mistake,
    # merging the probabilities before the argmax, scored 0.776 here against the right rule's 0.831).
    mix = Mixture(weights=(0.3, 0.7), ranges=((-14.0, -4.0), (-3.0, 9.0)))
    est = ceiling(mix, presentation_noise=4.0, reading_noise=16.0, readers=16, relabel={2: 1}, n=100_000, seed=3)
    rng = np.random.default_rng(4)
    t, r = mix.sample_shown(rng, 400_000, 4.0)
    reads = np.digitize(r[:, None] + 16.0 * rng.standard_normal((len(r), 16)), [-6.0, 6.0])
    counts = np.stack([(reads == c).sum(1) for c in range(3)], axis=1) + rng.random((len(r), 3)) * 0.5
    labels = counts.argmax(1)
    labels[labels == 2] = 1
    bins = np.linspace(-30, 30, 301)
    which = np.digitize(r, bins)
    rule = np.array([np.bincount(labels[which == b], minlength=3).argmax() for b in range(len(bins) + 1)])
    brute = float((rule[which] == labels).mean())
    assert abs(est["vs_labels"]["accuracy"]["value"] - brute) < 0.01
    assert est["label_prior"][2] == 0.0


def test_a_failed_eval_draw_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anklealign.twin.eval_draw as eval_draw

    calls = []

    def failing(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    real = eval_draw.picture_image
    monkeypatch.setattr(eval_draw, "picture_image", failing)
    with pytest.raises(OSError, match="disk full"):
        synth(tmp_path, seed=0, scale=0.05, eval_n=5)
    assert list(tmp_path.iterdir()) == []   # no archive, no twin.json, no partial eval folder
    monkeypatch.setattr(eval_draw, "picture_image", real)
    assert synth(tmp_path, seed=0, scale=0.05, eval_n=5).twin["eval"]["images"] == 5   # the same call again


def test_malformed_marker_figures_are_ignored() -> None:
    from anklealign.ingest.layout import MARKER_JSON, twin_figures

    good = json.dumps({"difficulty": {"name": "hard"}, "splits": {}})
    assert twin_figures(f"text\n{MARKER_JSON}\n{good}") == json.loads(good)
    for bad in ('{"splits": {"train": {}}}', '{"difficulty": "hard", "splits": {}}', "[1, 2]", "{not json",
                '{"difficulty": {"name": "x"}, "splits": {"train": {"ceiling": {"vs_labels": 3}}}}'):
        assert twin_figures(f"text\n{MARKER_JSON}\n{bad}") == {}
    assert twin_figures("a marker from an older generator, without figures") == {}


def test_a_development_seed_is_named_as_such_in_every_twin_sentence() -> None:
    """Figures on the twins the defaults were chosen on flatter the defaults: the report and table say so."""
    from anklealign.report import twin_brief, twin_sentence

    twin = {"seed": 0, "difficulty": {"name": "realistic"},
            "splits": {"train": {"label_noise": 0.23, "chance_macro_f1": 0.33,
                                 "ceiling": {"vs_labels": {"macro_f1": {"value": 0.89}, "accuracy": {"value": 0.9}}}}}}
    dev = twin_sentence({"synthetic": True, "twin": twin_brief(twin)})
    held_out = twin_sentence({"synthetic": True, "twin": twin_brief({**twin, "seed": 100})})
    assert "development seed" in dev and "held-out" in dev
    assert "development seed" not in held_out and "ceiling 0.890" in held_out


def test_a_twins_generator_seed_reaches_its_report(tmp_path: Path) -> None:
    import anklealign

    anklealign.synth(tmp_path / "t", seed=7, scale=0.1)
    ds = anklealign.load(tmp_path / "t", image_size=16, cache_dir=tmp_path / "cache")
    assert ds.report.twin["seed"] == 7
