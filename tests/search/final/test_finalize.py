"""The final step: the test split is read only after every model is trained, and a run writes every file."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

import anklealign
import search.final.retrain as retrain_mod
import search.final.testset as testset_mod
from search.cli import main
from search.final.finalize import finalize
from search.run.runner import RunOptions, run_study
from search.study.definition import load_study_def
from search.study.storage import open_storage
from search.view.text import format_table

REPO = Path(__file__).resolve().parents[3]
CLASSES = ("pronation", "neutral", "supination")


class _Tripwire:
    """Stands in for a test-split tensor. Its length may be read (a count, not content: ``describe``
    reports it); every other use is logged with the calling function, and raises while armed."""

    def __init__(self, real: torch.Tensor, name: str, log: list[tuple[str, str, str]], armed: dict[str, bool]):
        self._real, self._name, self._log, self._armed = real, name, log, armed

    def __len__(self) -> int:
        return len(self._real)

    def _touch(self, what: str) -> None:
        caller = sys._getframe(2)
        self._log.append(("test", f"{self._name}.{what}", f"{Path(caller.f_code.co_filename).name}:"
                                                          f"{caller.f_code.co_name}"))
        if self._armed["armed"]:
            raise AssertionError(f"the test split was touched during the search: {self._name}.{what}")

    def __getattr__(self, attr: str) -> Any:
        self._touch(attr)
        return getattr(self._real, attr)

    def __getitem__(self, index: Any) -> Any:
        self._touch("__getitem__")
        return self._real[index]

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        self._touch("__array__")
        return self._real.numpy()

    def __iter__(self) -> Any:
        self._touch("__iter__")
        return iter(self._real)


def _fake_loader(log: list, armed: dict[str, bool]) -> Any:
    """anklealign.load stand-in: learnable images (top half brightness = class), a guarded test split."""

    def load(source: Any = None, *, image_size: int = 64, color: str = "gray", resize: str = "stretch",
             cache_dir: Any = None, mirrors: Any = None) -> Any:
        g = torch.Generator().manual_seed(0)
        n, m, a = 96, 24, 5
        labels = torch.randint(0, 2, (n + m,), generator=g)  # two classes: the third is absent, as on AnkleAlign
        c = 1 if color == "gray" else 3
        images = torch.randint(0, 256, (n + m, c, image_size, image_size), generator=g).to(torch.uint8)
        images[:, :, : image_size // 2] = (labels * 120 + 40).view(-1, 1, 1, 1).to(torch.uint8)
        annot = torch.where(torch.rand(a, m, generator=g) < 0.8, labels[n:].expand(a, m),
                            torch.randint(0, 3, (a, m), generator=g))
        votes = torch.nn.functional.one_hot(annot, 3).sum(0)
        split = types.SimpleNamespace
        test = split(images=_Tripwire(images[n:], "images", log, armed),
                     labels=_Tripwire(labels[n:], "labels", log, armed),
                     groups=torch.arange(m), ids=tuple(f"T/{i}.jpg" for i in range(m)))
        return types.SimpleNamespace(
            train=split(images=images[:n], labels=labels[:n], groups=torch.arange(n) // 2,
                        ids=tuple(f"P/{i}.jpg" for i in range(n))),
            test=test, test_votes=_Tripwire(votes, "votes", log, armed),
            test_ties=_Tripwire(torch.zeros(m, dtype=torch.bool), "ties", log, armed),
            test_annotator_labels=_Tripwire(annot, "annotator_labels", log, armed),
            annotators=tuple(f"A{i}" for i in range(a)), classes=CLASSES, kind="anklealign", synthetic=True,
            source="fake dataset", fingerprint="fake" * 16, image_size=image_size, color=color, resize=resize,
            report=types.SimpleNamespace(twin={}, mirror_duplicates=True))

    return load


def test_test_split_is_first_read_by_finalize_after_all_training(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, str, str]] = []
    armed = {"armed": True}
    monkeypatch.setattr(anklealign, "load", _fake_loader(log, armed))
    real_train = retrain_mod.train_model

    def logged_train(*args: Any, **kwargs: Any) -> Any:
        log.append(("train", "", ""))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(retrain_mod, "train_model", logged_train)
    defn = load_study_def("anklealign", ["study.name=anklealign", "training.max_epochs=2", "space.image_size=[16]",
                                         "cv.folds=2", "final.seeds=2", "final.bootstrap=20",
                                         'final.baseline_presets=["net6"]', 'study.enqueue_presets=["net0"]',
                                         "study.trials=2", "sampler.name=random"])
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_study(defn, RunOptions(trials=2, storage_url=url, run_dir=tmp_path, device="cpu", show_progress=False))
    assert log == []  # trials and model selection never touched the test split (armed: it would have raised)

    armed["armed"] = False
    study = optuna.load_study(study_name=defn.name, storage=open_storage(url, defn.storage, heartbeat=False))
    metrics = finalize(defn, study, run_dir=tmp_path, device="cpu")
    kinds = [k for k, _, _ in log]
    first_test = kinds.index("test")
    assert kinds.count("train") == 4  # 2 seeds of the best trial + 2 of net6
    assert "train" not in kinds[first_test:]  # every model was trained before the test split was read
    assert log[first_test][2] == "testset.py:read_test"
    assert metrics["classes_absent"] == ["supination"]
    assert (tmp_path / "best" / "metrics.json").is_file()
    assert [r["command"] for r in testset_mod.test_reads(tmp_path)] == ["finalize"]  # one read, logged


# ---- end to end on the small twin (the run is shared with other test files via conftest) ----------

@pytest.fixture(scope="module")
def best(finished_run: Path) -> Path:
    return finished_run / "anklealign" / "best"


@pytest.fixture(scope="module")
def metrics(best: Path) -> dict[str, Any]:
    return json.loads((best / "metrics.json").read_text())


def test_run_writes_every_file(best: Path) -> None:
    for name in ("model.pt", "model.onnx", "model_card.json", "metrics.json", "confusion.png"):
        assert (best / name).is_file(), name
    assert (best / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in best.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_metrics_hold_intervals_baselines_and_humans(metrics: dict[str, Any]) -> None:
    assert metrics["data"]["synthetic"] is True and metrics["data"]["kind"] == "anklealign"
    assert {"source", "fingerprint"} <= metrics["data"].keys()
    twin = metrics["data"]["twin"]  # the twin's known limits travel with its metrics
    assert twin["difficulty"] == "realistic"
    for split in ("cv", "test"):
        assert twin[split]["chance_macro_f1"] < twin[split]["ceiling_macro_f1"] <= 1
    assert f"macro-F1 ceiling {twin['test']['ceiling_macro_f1']:.3f}" in format_table(metrics)
    assert isinstance(metrics["trial"], int) and isinstance(metrics["epochs"], int) and len(metrics["seeds"]) == 2
    assert metrics["config"]["model"]["blocks"]
    for block in (metrics["test"], metrics["ensemble"]):
        for name in ("accuracy", "balanced_accuracy", "macro_f1"):
            lo, hi = block[name]["ci95"]
            assert 0 <= lo <= block[name]["mean"] <= hi <= 1
        assert {"vote_probability", "soft_cross_entropy"} <= block["agreement"].keys()
        assert len(block["confusion"]) == 3 and set(block["per_class"]) == set(CLASSES)
    assert metrics["test"]["accuracy"]["std"] is not None and metrics["ensemble"]["accuracy"]["std"] is None
    base = metrics["baselines"]
    assert {"train_majority", "test_majority_oracle", "stratified_random", "net6"} <= base.keys()
    assert base["test_majority_oracle"]["oracle"] is True
    assert base["net6"]["kind"] == "preset" and base["net6"]["accuracy"]["ci95"]
    humans = metrics["annotators"]
    assert humans["available"] and humans["n_annotators"] >= 2  # the rank: test_annotator_rank_is_like_for_like
    counts = metrics["test_set"]["class_counts"]
    assert metrics["classes_absent"] == [c for c in CLASSES if counts[c] == 0]
    assert metrics["test_reads"]["count"] == 1  # the run's final step is the study's only read so far
    assert [len(losses) for losses in metrics["train_loss"]] == [metrics["epochs"]] * 2
    assert metrics["onnx"]["max_abs_diff"] <= metrics["onnx"]["tolerance"]
    assert format_table(metrics).splitlines()[0].startswith("data: SYNTHETIC TWIN")


def _twin_test_set(finished_run: Path, metrics: dict[str, Any]) -> Any:
    pre = metrics["config"]["input"]
    return anklealign.load(metrics["data"]["source"], image_size=pre["image_size"], color=pre["color"],
                           resize=pre["resize"])


def test_onnx_and_pytorch_agree_on_the_test_images(best: Path, finished_run: Path, metrics: dict[str, Any]) -> None:
    import onnxruntime as ort

    from search.final.export import load_model
    from space import normalize

    ds = _twin_test_set(finished_run, metrics)
    x = normalize(ds.test.images)
    model, _ = load_model(best)
    with torch.no_grad():
        want = model(x).numpy()
    session = ort.InferenceSession(str(best / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"image": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4
    # and the ensemble is the model that was scored: same accuracy as metrics.json's "ensemble"
    acc = float((want.argmax(1) == ds.test.labels.numpy()).mean())
    assert acc == pytest.approx(metrics["ensemble"]["accuracy"]["mean"])


def test_annotator_rank_is_like_for_like(best: Path, finished_run: Path, metrics: dict[str, Any]) -> None:
    """metrics.json's human comparison, recomputed by hand from the twin's annotator labels and the
    exported ensemble's own predictions: against each annotator the ensemble is scored on exactly the
    images that annotator labelled (where the other annotators' majority is not a tie), against that
    leave-one-out majority; an annotator beats it when strictly more accurate there.

    Fails if finalize scores the model on every test image or against the consensus label, hands in
    another model's predictions (a single seed) or annotator labels in another image order, counts the
    ties, or ranks with the wrong comparison."""
    from collections import Counter

    from search.final.export import load_model
    from space import normalize

    ds = _twin_test_set(finished_run, metrics)
    model, _ = load_model(best)
    with torch.no_grad():
        predicted = model(normalize(ds.test.images)).numpy().argmax(1)
    votes = np.asarray(ds.test_annotator_labels)  # (A, M), -1 = no label
    humans = metrics["annotators"]
    rows = humans["per_annotator"]
    assert [r["annotator"] for r in rows] == list(ds.annotators)
    ranked, beaten_by = 0, []
    for a, row in enumerate(rows):
        scored = human_right = model_right = 0
        for m in range(votes.shape[1]):
            others = [int(votes[b, m]) for b in range(len(votes)) if b != a and votes[b, m] >= 0]
            if votes[a, m] < 0 or not others:
                continue
            top = Counter(others).most_common(2)
            if len(top) == 2 and top[0][1] == top[1][1]:
                continue  # the others tie: no reference
            scored += 1
            human_right += int(votes[a, m] == top[0][0])
            model_right += int(predicted[m] == top[0][0])
        assert row["scored"] == scored, row["annotator"]
        if not scored:
            assert row["accuracy"] is None
            continue
        ranked += 1
        assert row["accuracy"] == pytest.approx(human_right / scored), row["annotator"]
        assert row["model_accuracy"]["ensemble"] == pytest.approx(model_right / scored), row["annotator"]
        if human_right > model_right:
            beaten_by.append(row["annotator"])
    assert ranked >= 2
    rank = humans["model_rank"]["ensemble"]
    assert (rank["rank"], rank["of"], rank["beaten_by"]) == (1 + len(beaten_by), ranked + 1, beaten_by)
    assert humans["model_rank"]["model"]["of"] == ranked + 1


def test_model_pt_loads_without_optuna(best: Path, metrics: dict[str, Any]) -> None:
    members = len(metrics["seeds"]) * len(metrics["selection"]["trials"])  # k trials x R seeds
    code = ("import sys, torch\n"
            f"blob = torch.load({str(best / 'model.pt')!r}, weights_only=True)\n"
            f"assert blob['format'] == 'anklealign-search/1' and len(blob['state_dicts']) == {members}\n"
            "assert 'optuna' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_predict_on_twin_files_matches_the_scored_ensemble(best: Path, finished_run: Path, metrics: dict[str, Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """predict decodes the image files exactly like the training tensors were decoded."""
    from search.final.export import load_model
    from space import normalize

    ds = _twin_test_set(finished_run, metrics)
    root = Path(metrics["data"]["source"])
    root = root / "anklealign" if (root / "anklealign").is_dir() else root
    files = [root / i for i in ds.test.ids]
    assert all(f.is_file() for f in files)
    assert main(["predict", "--model", str(best), "--json", *map(str, files)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model, _ = load_model(best)
    with torch.no_grad():
        want = model(normalize(ds.test.images)).numpy()
    got = np.array([[r["probabilities"][c] for c in CLASSES] for r in rows])
    assert np.abs(got - want).max() <= 1e-5


def test_predict_on_a_twin_folder_reports_non_images_and_goes_on(best: Path, metrics: dict[str, Any],
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(metrics["data"]["source"])
    folder = next(p for p in sorted((root / "anklealign").iterdir()) if p.is_dir() and any(p.glob("*.jp*g")))
    junk = tmp_path / "labels.jpg"
    junk.write_text('{"not": "an image"}')
    rc = main(["predict", "--model", str(best), str(folder), str(junk)])
    out, err = capsys.readouterr()
    named = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    printed = [line.split("\t")[0] for line in out.splitlines()]
    reported = [line.split(": ")[1] for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 1 and printed  # the twin's unreadable files and the junk fail; the rest are classified
    assert sorted(printed + reported) == sorted([*named, str(junk)])
    assert f"{junk}: not an image" in err


def test_export_cli_writes_the_same_files_for_any_trial(finished_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "exported"
    rc = main(["-q", "export", "--study", "anklealign", "--out", str(finished_run), "--trial", "0",
               "--to", str(out_dir)])
    assert rc == 0, capsys.readouterr().err
    for name in ("model.pt", "model.onnx", "model_card.json", "metrics.json", "confusion.png"):
        assert (out_dir / name).is_file(), name
    assert json.loads((out_dir / "metrics.json").read_text())["trial"] == 0
    assert capsys.readouterr().out.startswith("data: SYNTHETIC TWIN")
    assert main(["-q", "export", "--study", "anklealign", "--out", str(finished_run), "--trial", "99",
                 "--to", str(out_dir)]) == 2
    assert "no trial 99" in capsys.readouterr().err


def test_selection_and_bias_correction_come_from_out_of_fold_evidence(metrics: dict[str, Any], best: Path) -> None:
    sel, cv = metrics["selection"], metrics["cv"]
    assert sel["trials"][0] == metrics["trial"] and 1 <= sel["top_k"] == len(sel["trials"]) <= 3
    scores = sel["top_k_oof_scores"]
    assert scores[sel["top_k"] - 1] == max(scores)  # the k with the best out-of-fold score, fewest on ties
    assert all(s < max(scores) for s in scores[: sel["top_k"] - 1])
    assert "bias_corrected" not in cv  # the estimate is of the search's choice, not a correction of the export
    bbc = sel["choice_estimate"]
    assert bbc["configs"] >= 2 and bbc["resamples"] > 0 and "search's choice" in bbc["label"]
    assert bbc["ci95"][0] <= bbc["estimate"] <= bbc["ci95"][1]
    assert bbc["bias"] == pytest.approx(bbc["raw"] - bbc["estimate"])
    vs = sel["versus_default"]
    if vs is not None:  # keep_default ran its test: the estimate is of that same procedure
        assert "default configuration" in bbc["procedure"] and 0 <= bbc["default_share"] <= 1
        assert vs["exported_trial"] == metrics["trial"] and vs["candidates"] == bbc["configs"] - 1
    card = json.loads((best / "model_card.json").read_text())
    assert card["selection"] == sel and "out-of-fold" in card["exported"]
    for name in metrics["baselines"]:  # every retrained preset is kept for 'search score'
        if metrics["baselines"][name].get("kind") == "preset" and "skipped" not in metrics["baselines"][name]:
            assert (best / "baselines" / name / "model.pt").is_file()


def test_search_gain_is_paired_and_warns(metrics: dict[str, Any]) -> None:
    gain = metrics["search_gain"]
    presets = [n for n, b in metrics["baselines"].items() if b.get("kind") == "preset" and "skipped" not in b]
    assert set(presets) <= set(gain["vs"]) and "stratified_random" in gain["vs"]
    for name in presets:
        expected = metrics["ensemble"]["macro_f1"]["mean"] - metrics["baselines"][name]["macro_f1"]["mean"]
        assert gain["vs"][name]["difference"] == pytest.approx(expected)
    # a two-epoch model on 11 test images is not distinguishable from anything: the warning says so
    assert any("found nothing better" in w for w in gain["warnings"])


def test_trust_blocks_calibration_shift_votes_per_class(metrics: dict[str, Any], best: Path) -> None:
    from search.final.export import load_model
    from search.final.trust import at_bound

    cal = metrics["calibration"]
    assert cal["enabled"] and "out-of-fold" in cal["fitted_on"] and cal["exact_oof"] is True
    assert "training labels" in cal["calibrated_to"]
    # A temperature on a bound is never reported as if it were a calibration.
    assert at_bound(cal["temperature"]) == ("bound" in cal.get("warning", ""))
    keys = {"nll", "brier", "ece"}
    assert keys <= set(cal["scored"]["before"]) and keys <= set(cal["oof"]["after"])
    assert cal["oof"]["after"]["nll"] <= cal["oof"]["before"]["nll"] + 1e-9  # fitted there: never worse there
    model, card = load_model(best)
    assert model.temperature == pytest.approx(cal["temperature"]) == card["calibration"]["temperature"]
    assert (best / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shift = metrics["label_shift"]
    assert shift["uses_labels"] is False and "PRIOR-ADJUSTED" in shift["note"]
    assert sum(shift["estimated_prior"].values()) == pytest.approx(1.0)
    assert shift["true_prior"]["supination"] == 0.0  # the consensus set has no supination majority
    assert metrics["ensemble"] is not shift["prior_adjusted"] and "mean" in metrics["ensemble"]["accuracy"]
    votes = metrics["votes"]
    assert votes["images_without_tie"] + votes["tied_images"] == metrics["test_set"]["images"]
    assert votes["tied_images"] == metrics["test_set"]["ties"]
    per = metrics["per_class"]
    assert per["absent"] == ["supination"] and per["classes"]["supination"]["recall"] is None
    assert per["classes"]["neutral"]["recall"]["ci95"] is not None


def test_trust_toggles_turn_each_block_off(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "runs"
    shutil.copytree(finished_run, out)
    rc = main(["-q", "finalize", "--out", str(out), "--study", "anklealign", "--set", "final.calibrate=false",
               "--set", "final.label_shift=false", "--set", "final.votes=false", "--set", "final.per_class=false"])
    assert rc == 0
    m = json.loads((out / "anklealign" / "best" / "metrics.json").read_text())
    assert not {"calibration", "label_shift", "votes", "per_class"} & set(m)
    assert json.loads((out / "anklealign" / "best" / "model_card.json").read_text())["calibration"] == {
        "enabled": False, "temperature": 1.0}


def test_export_without_a_trial_is_the_final_steps_model_and_reads_nothing(finished_run: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from search.final import testset as testset_mod

    run_dir = finished_run / "anklealign"
    reads = len(testset_mod.test_reads(run_dir))
    out_dir = tmp_path / "copied"
    assert main(["-q", "export", "--study", "anklealign", "--out", str(finished_run), "--to", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    final = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert f"exported trial {final['trial']}" in printed and "not retrained" in printed
    assert (out_dir / "model.pt").read_bytes() == (run_dir / "best" / "model.pt").read_bytes()
    assert json.loads((out_dir / "metrics.json").read_text())["trial"] == final["trial"]
    assert len(testset_mod.test_reads(run_dir)) == reads  # no second read of the test labels


def test_running_a_finished_run_again_only_says_where_its_results_are(finished_run: Path, small_twin: Path,
                                                                      tmp_path: Path, fast_args: list[str],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from search.final import testset as testset_mod

    out = tmp_path / "runs"
    shutil.copytree(finished_run, out)
    run_dir = out / "anklealign"
    before = (run_dir / "best" / "metrics.json").read_bytes()
    reads = len(testset_mod.test_reads(run_dir))
    assert main(["-q", "run", "--data", str(small_twin), "--out", str(out), "--trials", "3", *fast_args]) == 0
    printed = capsys.readouterr().out
    assert "nothing to do" in printed and str(run_dir / "best") in printed and "--final-again" in printed
    assert (run_dir / "best" / "metrics.json").read_bytes() == before
    assert len(testset_mod.test_reads(run_dir)) == reads


def test_the_exported_trial_is_marked_everywhere(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """best, best --json, trials.csv and the report name the trial the final step exported, and why."""
    import csv

    run_dir = finished_run / "anklealign"
    exported = json.loads((run_dir / "best" / "metrics.json").read_text())["trial"]
    assert main(["best", "--study", "anklealign", "--out", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert f"exported by the final step: trial {exported}" in out and "EXPORTED" in out
    assert main(["best", "--study", "anklealign", "--out", str(finished_run), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["exported"]["trial"] == exported
    assert [r["number"] for r in best["trials"] if r["exported"]] in ([exported], [])
    assert main(["-q", "report", "--study", "anklealign", "--out", str(finished_run)]) == 0
    with open(run_dir / "trials.csv", newline="") as fh:
        marked = [int(r["number"]) for r in csv.DictReader(fh) if r["exported"] == "True"]
    assert marked == [exported]
    assert f"#{exported}: " in (run_dir / "report.html").read_text()


def test_the_reports_objective_words_match_the_value_optimised() -> None:
    from search.run.objective import OBJECTIVES
    from search.view.figures import OBJECTIVE_WORDS

    assert set(OBJECTIVE_WORDS) == set(OBJECTIVES)
    assert "last 5 epochs" in OBJECTIVE_WORDS["last_mean"]
    from search.run.train import LAST_EPOCHS

    assert f"last {LAST_EPOCHS} epochs" in OBJECTIVE_WORDS["last_mean"]


def test_a_greedy_ensemble_is_exported_with_its_weights(finished_run: Path, tmp_path: Path) -> None:
    """final.ensemble=greedy: the members' weights are in metrics.json and model.pt, and the loaded model's output
    is the weighted average of its members (temperature applied) that the final step scored."""
    import shutil

    import torch

    from search.final.export import load_model

    out = tmp_path / "runs"
    shutil.copytree(finished_run, out)
    rc = main(["-q", "finalize", "--out", str(out), "--study", "anklealign", "--set", "final.ensemble=greedy",
               "--set", "final.top_k=3", "--set", "final.baseline_presets=[]"])
    assert rc == 0
    best = out / "anklealign" / "best"
    m = json.loads((best / "metrics.json").read_text())
    sel = m["selection"]
    assert len(sel["weights"]) == len(sel["trials"]) <= 3 and sum(sel["weights"]) == pytest.approx(1, abs=1e-3)
    assert "greedy ensemble selection" in sel["why"] and len(sel["greedy_nll"]) == 25
    assert min(sel["greedy_nll"]) <= sel["greedy_nll"][0]
    model, card = load_model(best)
    seeds = len(m["seeds"])
    if model.weights is not None:  # several trials: each network carries its trial's share over its seeds
        assert model.weights == pytest.approx([w / seeds for w in sel["weights"] for _ in range(seeds)])
    pre = card["preprocessing"]
    x = torch.rand(4, 3 if pre["color"] == "rgb" else 1, pre["image_size"], pre["image_size"])
    with torch.no_grad():
        members = torch.stack([torch.softmax(mm(x), 1) for mm in model.members])
        w = torch.tensor(model.weights or [1 / len(model.members)] * len(model.members))
        mean = (members * w[:, None, None]).sum(0)
        expected = torch.softmax(torch.log(mean) / model.temperature, 1)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_export_accepts_its_older_spelling_with_a_note(finished_run: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """export --runs RUNS --out MODEL (before --out meant the runs folder there, as in every other command)."""
    assert main(["-q", "export", "--study", "anklealign", "--runs", str(finished_run), "--out",
                 str(tmp_path / "old")]) == 0
    assert (tmp_path / "old" / "model.pt").is_file()
    assert "now takes --to DIR" in capsys.readouterr().err
    assert main(["-q", "export", "--study", "anklealign", "--out", str(finished_run)]) == 2
    assert "export needs --to DIR" in capsys.readouterr().err

