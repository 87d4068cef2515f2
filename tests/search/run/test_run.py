"""The study runner end to end on a small twin: trials, attributes, presets, resume, pruning, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import anklealign
from search.cli import main
from search.run.data import DataContext
from search.run.objective import make_objective
from search.run.queue import finished_count
from search.study.definition import load_study_def
from search.study.records import TrialRecord
from space import InputCfg
from space.search_space import SearchSpace

ROOT = Path(__file__).resolve().parents[3]
PRESETS = ["default", "baseline", "net0", "net1", "net2", "net3", "net4", "net5", "net6"]
TRIAL_ATTRS = {"config", "seed", "params_count", "macs", "device", "best_epoch", "cv_best", "cv_last", "cv_last_mean",
               "oof", "epochs_run", "epoch_seconds", "train_images_per_s", "seconds", "peak_memory_mb", "worker"}


def _study(out: Path, name: str = "anklealign") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / name / 'study.db'}")


def test_run_four_trials_records_everything(small_twin: Path, tmp_path: Path, fast_args: list[str]) -> None:
    rc = main(["run", "--data", str(small_twin), "--out", str(tmp_path), "--trials", "4", "--no-final", *fast_args])
    assert rc == 0
    study = _study(tmp_path)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    assert len(done) == 4
    # The first trials are the default configuration and the seed nets, in order.
    assert [t.user_attrs.get("preset") for t in study.trials[:4]] == PRESETS[:4]
    for t in done:
        assert TRIAL_ATTRS <= set(t.user_attrs), TRIAL_ATTRS - set(t.user_attrs)
        assert len(t.intermediate_values) == t.user_attrs["epochs_run"]
        curve = [t.intermediate_values[e] for e in sorted(t.intermediate_values)]
        assert t.user_attrs["cv_last"] == curve[-1] and t.user_attrs["cv_best"] == max(curve)
        assert t.user_attrs["cv_best"] == curve[t.user_attrs["best_epoch"] - 1]
        if t.state == TrialState.COMPLETE:  # the study's objective is the mean of the last (up to) 5 epochs
            assert t.value == pytest.approx(t.user_attrs["cv_last_mean"]) == pytest.approx(np.mean(curve[-5:]))
            oof = TrialRecord.of(t).oof_probs(3)  # every training image, out of fold, rows sum to 1
            assert oof.shape == (study.user_attrs["data"]["train_images"], 3)
            assert np.allclose(oof.sum(1), 1.0)
    data = study.user_attrs["data"]
    assert data["synthetic"] is True and "ceiling_macro_f1" in data["twin"]["cv"]
    assert (tmp_path / "anklealign" / "study.toml").is_file()
    assert study.user_attrs["definition"]["cv"]["folds"] == 2


def test_resume_continues_to_n(small_twin: Path, tmp_path: Path, fast_args: list[str]) -> None:
    base = ["run", "--data", str(small_twin), "--out", str(tmp_path), "--no-final", *fast_args]
    assert main([*base, "--trials", "3"]) == 0
    assert finished_count(_study(tmp_path)) == 3
    assert main([*base, "--trials", "5"]) == 0
    assert finished_count(_study(tmp_path)) == 5
    # Running the same command again adds nothing: N means N finished trials.
    assert main([*base, "--trials", "5"]) == 0
    assert len(_study(tmp_path).trials) - sum(t.state == TrialState.WAITING for t in _study(tmp_path).trials) == 5


def test_other_definition_under_same_name_is_refused(small_twin: Path, tmp_path: Path, fast_args: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    base = ["run", "--data", str(small_twin), "--out", str(tmp_path), "--no-final", "--trials", "1", *fast_args]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--set", "cv.folds=3"]) == 2
    err = capsys.readouterr().err
    assert "exists with another definition" in err and "cv.folds" in err
    # The refusal names a fix that works when pasted.
    fix = re.search(r"add (--set study\.name=\S+)", err).group(1)
    assert main([*base, "--set", "cv.folds=3", *fix.split(" ", 1)]) == 0
    assert (tmp_path / fix.split("=", 1)[1] / "study.toml").is_file()


def test_a_new_study_name_starts_a_study_of_the_default_definition(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from search.cli.targets import resolve_definition
    from search.study.definition import StudyDefError

    args = argparse.Namespace(command="run", study="twin-v2", out=str(tmp_path), overrides=["cv.folds=4"])
    defn = resolve_definition(args)
    assert defn.name == "twin-v2" and defn.cv.folds == 4
    assert "new study from the default definition" in capsys.readouterr().err
    (tmp_path / "old-run").mkdir()
    (tmp_path / "old-run" / "study.toml").write_text("")
    with pytest.raises(StudyDefError, match="run folders in .*: old-run"):  # other commands name what exists
        resolve_definition(argparse.Namespace(command="best", study="twin-v3", out=str(tmp_path), overrides=[]))


def test_a_trial_is_pruned_through_the_real_objective(small_twin: Path, data_cache: Path) -> None:
    defn = load_study_def("anklealign", ["training.max_epochs=3", "space.image_size=[32]", "cv.folds=2"])
    space = SearchSpace.from_dict(dict(defn.space))
    data = DataContext(source=str(small_twin), device=__import__("torch").device("cpu"), folds=2, seed=0,
                       cache_dir=data_cache)
    objective = make_objective(data=data, space=space, max_epochs=3, metric="macro_f1", study_seed=0)
    # A threshold no validation score can reach: the pruner stops the trial after its first report.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.5))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED
    assert list(t.intermediate_values) == [0]
    assert t.user_attrs["epochs_run"] == 1
    assert "pruned at epoch 1" in t.user_attrs["prune_reason"]


def test_folds_never_split_a_duplicate_group(small_twin: Path, data_cache: Path, tmp_path: Path) -> None:
    data = DataContext(source=str(small_twin), device=__import__("torch").device("cpu"), folds=3, seed=0,
                       cache_dir=data_cache)
    pool, folds = data.pool(InputCfg(image_size=32))
    seen: dict[int, int] = {}
    for i, (_, val) in enumerate(folds):
        for g in np.unique(pool.groups[val]):
            assert seen.setdefault(int(g), i) == i, f"group {g} in folds {seen[int(g)]} and {i}"
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(len(pool.labels)))
    # No test image, nor any image of a test image's duplicate group, is in the pool a trial sees:
    # the twin's planted copies of consensus pictures (exact and near) are all kept out.
    ds = data.dataset(InputCfg(image_size=32))
    assert not set(ds.test.groups.tolist()) & set(ds.train.groups.tolist())
    manifest = anklealign.synth(tmp_path / "again", seed=0, scale=0.2)  # small_twin's ground truth, rewritten
    assert manifest.consensus_duplicates and not set(manifest.consensus_duplicates) & set(ds.train.ids)


def _one_trial(small_twin: Path, data_cache: Path) -> optuna.trial.FrozenTrial:
    space = SearchSpace.from_dict({"image_size": [16], "n_blocks": [2, 2]})
    data = DataContext(source=str(small_twin), device=__import__("torch").device("cpu"), folds=2, seed=0,
                       cache_dir=data_cache)
    study = optuna.create_study(direction="maximize")
    study.optimize(make_objective(data=data, space=space, max_epochs=2, metric="macro_f1", study_seed=0), n_trials=1)
    return study.trials[0]


def test_a_nan_loss_prunes_the_trial_with_the_reason(small_twin: Path, data_cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import search.run.train

    real = search.run.train.normalize
    monkeypatch.setattr(search.run.train, "normalize", lambda x: real(x) * float("nan"))  # a diverging net
    t = _one_trial(small_twin, data_cache)
    assert t.state == TrialState.PRUNED
    assert t.user_attrs["prune_reason"].startswith("non-finite loss: training loss became nan")
    assert "config" in t.user_attrs and t.user_attrs["epochs_run"] == 0


def test_out_of_memory_prunes_the_trial_with_the_reason(small_twin: Path, data_cache: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import search.run.train

    def oom(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(search.run.train, "predict_proba", oom)
    t = _one_trial(small_twin, data_cache)
    assert t.state == TrialState.PRUNED
    reason = t.user_attrs["prune_reason"]
    assert reason == "out of memory: CUDA out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_a_study_refuses_to_continue_on_other_data(small_twin: Path, tmp_path: Path, fast_args: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    anklealign.synth(other, seed=1, scale=0.2)
    base = ["run", "--out", str(tmp_path / "runs"), "--no-final", "--trials", "1", *fast_args]
    assert main([*base, "--data", str(small_twin)]) == 0
    db = tmp_path / "runs" / "anklealign" / "study.db"
    before = db.read_bytes()
    capsys.readouterr()
    assert main([*base, "--trials", "2", "--data", str(other)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "was run on other data" in errors[0] and "Traceback" not in err
    assert finished_count(_study(tmp_path / "runs")) == 1 and db.read_bytes() == before


def test_ctrl_c_records_the_trial_and_the_next_run_reaches_n(small_twin: Path, tmp_path: Path, data_cache: Path,
                                                             spawn) -> None:  # noqa: ANN001
    args = [sys.executable, "-m", "search", "run", "--data", str(small_twin), "--out", str(tmp_path),
            "--no-final", "--trials", "2", "--set", "study.name=anklealign", "--set", "training.max_epochs=40",
            "--set", "space.image_size=[32]", "--set", "cv.folds=2", "--set", "pruner.name=none"]
    env = {**os.environ, "ANKLEALIGN_CACHE": str(data_cache)}
    proc = spawn(args, env=env)  # output to files: a pipe nobody reads while polling can fill and block the child
    db = tmp_path / "anklealign" / "study.db"
    # Generous: on a loaded 2-core machine the child's imports, data load and first epoch can take
    # minutes. A child that ended early fails at once with its own message instead of a timeout.
    # The poll reads the file read-only: opening an Optuna storage on it would create the schema and
    # race the child doing the same (the cause of this test's old flake: the child died of an
    # IntegrityError and the poll waited out its deadline).
    deadline = time.monotonic() + 300
    running = ("SELECT COUNT(*) FROM trials t JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
               "WHERE t.state = 'RUNNING'")
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
                    if con.execute(running).fetchone()[0]:
                        break
            except sqlite3.Error:  # the tables may not exist yet
                pass
        time.sleep(0.3)
    else:
        proc.kill()
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"no trial started running (exit {proc.returncode}): {err[-2000:]}")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Resume with" in err and "Traceback" not in err
    study = _study(tmp_path)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    complete_before = sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert finished_count(study) == complete_before  # the interrupted trial does not count
    # The interrupted trial's parameters are queued again.
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert waiting[-1].params == interrupted[0].params
    assert waiting[-1].system_attrs["failed_trial"] == interrupted[0].number
    # The same command again reaches N.
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    study = _study(tmp_path)
    assert finished_count(study) == 2
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_stop_event_ends_trial_between_batches(small_twin: Path, tmp_path: Path, data_cache: Path) -> None:
    """The in-process form of Ctrl-C: the stop event ends the running trial, nothing is left RUNNING."""
    from search.run.runner import RunOptions, run_study

    defn = load_study_def("anklealign", ["study.name=anklealign", "training.max_epochs=400",
                                         "space.image_size=[32]", "cv.folds=2", f"data.source=\"{small_twin}\""])
    stop = threading.Event()
    timer = threading.Timer(4.0, stop.set)
    timer.start()
    try:
        outcome = run_study(defn, RunOptions(trials=2, storage_url=f"sqlite:///{tmp_path / 's.db'}",
                                             run_dir=tmp_path, cache_dir=data_cache, show_progress=False),
                            stop=stop)
    finally:
        timer.cancel()
    assert outcome.interrupted
    study = optuna.load_study(study_name="anklealign", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_a_cuda_error_ends_the_worker_and_requeues_its_trial() -> None:
    """A poisoned CUDA context must not run more trials: the trial is re-queued, the worker stops."""
    from search.run.runner import _run_one_trial
    from search.study.errors import SearchError

    study = optuna.create_study(direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(SearchError, match="re-queued"):
        _run_one_trial(study, study._storage, objective)
    failed, retry = study.trials
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.params == failed.params and retry.system_attrs["failed_trial"] == failed.number
    assert finished_count(study) == 0


@pytest.mark.parametrize(("objective", "which"), [("best_epoch", "oof_best"), ("last_mean", "oof")])
def test_the_stored_out_of_fold_predictions_are_of_the_state_the_value_describes(objective: str, which: str) -> None:
    """A best-epoch study exports the best epoch's state, so its calibration and selection must read the best
    epoch's out-of-fold predictions, not the last epochs' mean."""
    import types

    import torch

    from search.run.objective import _record
    from search.run.train import FitResult

    result = FitResult(best_score=0.6, best_epoch=2, scores=[0.4, 0.5, 0.6, 0.55])
    result.oof = np.tile([0.2, 0.3, 0.5], (4, 1))
    result.oof_best = np.tile([0.7, 0.2, 0.1], (4, 1))
    trial = optuna.create_study().ask()
    _record(trial, types.SimpleNamespace(device=torch.device("cpu")), result, time.perf_counter(), objective)
    stored = TrialRecord.of(trial).oof_probs(3)
    np.testing.assert_allclose(stored, getattr(result, which), atol=1e-3)
