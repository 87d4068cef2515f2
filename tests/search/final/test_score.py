"""``search score RUN_DIR FOLDER``: the final models and every baseline on an extra labelled folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import anklealign
from search.cli import main
from search.final import testset


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval-twin")
    anklealign.synth(out, seed=5, scale=0.2, eval_n=40)
    return out / "eval"


def test_score_json_is_shaped_like_metrics_json(finished_run: Path, eval_folder: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = finished_run / "anklealign"
    reads_before = len(testset.test_reads(run_dir))
    assert main(["score", str(run_dir), str(eval_folder), "--json", "--bootstrap", "30"]) == 0
    m = json.loads(capsys.readouterr().out)
    final = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert {"test", "ensemble", "baselines", "search_gain", "data"} <= set(m)
    for block in (m["test"], m["ensemble"]):
        assert {"accuracy", "balanced_accuracy", "macro_f1"} <= set(block)
        assert block["macro_f1"]["ci95"] is not None
    assert len(m["test"]["macro_f1"]["per_seed"]) == len(final["seeds"])
    assert any("net6" in name for name in m["baselines"])  # the seed net retrained by the final step
    assert {"train_majority", "stratified_random"} <= set(m["baselines"])
    assert m["data"]["images"] == 40 and sum(m["data"]["class_counts"].values()) == 40
    assert len(testset.test_reads(run_dir)) == reads_before  # an extra folder is not a test-set read
    # the exported model is calibrated as the final step fitted it; the folder's prior estimated without labels
    assert m["calibration"]["temperature"] == pytest.approx(final["calibration"]["temperature"])
    assert m["label_shift"]["uses_labels"] is False and "prior_adjusted" in m["label_shift"]
    assert sum(m["label_shift"]["true_prior"].values()) == pytest.approx(1.0)
    assert set(m["per_class"]["classes"]) == set(final["classes"])


def test_score_prints_a_table_and_refuses_bad_folders(finished_run: Path, eval_folder: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = finished_run / "anklealign"
    assert main(["score", str(run_dir), str(eval_folder), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "ensemble (the exported model)" in out and "net6" in out and "search gain" in out
    (tmp_path / "cats").mkdir()
    assert main(["score", str(run_dir), str(tmp_path)]) == 2
    assert "one subfolder per class" in capsys.readouterr().err
    assert main(["score", str(tmp_path), str(eval_folder)]) == 2
    assert "no final model" in capsys.readouterr().err


def test_score_leaves_out_copies_of_training_images(finished_run: Path, eval_folder: Path, small_twin: Path,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two training pictures copied into the scored folder (one under another class-folder case) are left out of
    every score and named; the rest are scored."""
    import shutil

    run_dir = finished_run / "anklealign"
    folder = tmp_path / "eval"
    shutil.copytree(eval_folder, folder)
    ds = anklealign.load(small_twin, image_size=32)
    copied = []
    for k, ident in enumerate(ds.train.ids[:2]):
        src = next(p for p in small_twin.rglob(Path(ident).name) if p.as_posix().endswith(ident))
        dest = folder / ds.classes[k].upper() / f"copy{k}{src.suffix}"
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dest)
        copied.append(str(dest))
    assert main(["score", str(run_dir), str(folder), "--json", "--bootstrap", "20"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert sorted(e["file"] for e in m["data"]["excluded_duplicates"]) == sorted(copied)
    assert m["data"]["images"] == 40  # the 40 fresh pictures, not the 2 copies


def test_scoring_the_studys_own_test_images_counts_as_a_test_read(finished_run: Path, small_twin: Path,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run_dir = finished_run / "anklealign"
    ds = anklealign.load(small_twin, image_size=32)
    folder = tmp_path / "own-test"
    for ident, label in zip(ds.test.ids[:4], ds.test.labels.tolist()[:4], strict=True):
        src = next(p for p in small_twin.rglob(Path(ident).name) if p.as_posix().endswith(ident))
        (folder / ds.classes[label]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, folder / ds.classes[label] / src.name)
    before = len(testset.test_reads(run_dir))
    assert main(["score", str(run_dir), str(folder), "--json", "--bootstrap", "20"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["data"]["test_copies"] == 4
    reads = testset.test_reads(run_dir)
    assert len(reads) == before + 1 and reads[-1]["command"] == "score"


def test_score_finds_the_run_by_study_like_every_command(finished_run: Path, eval_folder: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """score FOLDER --study NAME --out RUNS is the same as the older score RUN_DIR FOLDER."""
    new = main(["score", str(eval_folder), "--study", "anklealign", "--out", str(finished_run), "--json",
                "--bootstrap", "0"])
    first = capsys.readouterr().out
    old = main(["score", str(finished_run / "anklealign"), str(eval_folder), "--json", "--bootstrap", "0"])
    second = capsys.readouterr().out
    assert new == old == 0
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k != "created"}  # noqa: E731
    assert strip(first) == strip(second)
