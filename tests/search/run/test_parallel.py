"""Several trial processes on one machine: --jobs, --jobs-per-gpu, orphaned trials, heartbeat retries."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import search.run.parallel as parallel
from search.cli import main
from search.run.parallel import JobPlan, plan_jobs, recover_orphans, run_children
from search.run.queue import finished_count
from search.study.definition import StorageSection
from search.study.records import TrialRecord
from search.study.storage import ENV_STORAGE, open_storage


def test_jobs_plan_cpu_processes() -> None:
    assert plan_jobs(device="cpu", jobs=3, jobs_per_gpu=None).gpus == (None, None, None)
    assert plan_jobs(device="cpu", jobs=None, jobs_per_gpu=None).jobs == 1
    with pytest.raises(Exception, match="--jobs must be >= 1"):
        plan_jobs(device="cpu", jobs=0, jobs_per_gpu=None)


def test_jobs_per_gpu_pins_k_processes_to_each_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(parallel.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(parallel.torch.cuda, "device_count", lambda: 2)
    plan = plan_jobs(device="auto", jobs=None, jobs_per_gpu=2)
    assert plan.gpus == (0, 0, 1, 1)
    started: list[dict[str, Any]] = []

    class FakePopen:
        def __init__(self, argv: list[str], env: dict[str, str]) -> None:
            started.append({"argv": argv, "env": env})

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(parallel.subprocess, "Popen", FakePopen)
    url = "postgresql+psycopg://u:secret@h/db"
    codes = run_children(plan, study_file=tmp_path / "study.toml", storage_url=url, out=tmp_path, trials=9,
                         device="auto", quiet=False)
    assert codes == [0, 0, 0, 0]
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in started] == ["0", "0", "1", "1"]
    for s in started:
        assert s["argv"][s["argv"].index("--device") + 1] == "cuda" and "worker" in s["argv"]
        assert s["env"][ENV_STORAGE] == url and not any("secret" in a for a in s["argv"])


def test_jobs_per_gpu_without_a_gpu_is_one_cpu_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel.torch.cuda, "is_available", lambda: False)
    assert plan_jobs(device="auto", jobs=None, jobs_per_gpu=4) == JobPlan(gpus=(None,))


# Loaded by every child interpreter (sitecustomize on PYTHONPATH): each fold-epoch sleeps, so that a trial lasts
# seconds, not the ~0.1 s of the tiny twin, and a child that starts a few seconds after the other on a loaded
# machine still finds trials to run. Without it the test failed in two full-suite runs: one child had finished
# all ten trials before the other asked for one.
_SLOW_CHILD = """
import time
import search.run.train as t
_epoch = t._train_epoch
def _slow(*a, **k):
    time.sleep(0.4)
    return _epoch(*a, **k)
t._train_epoch = _slow
"""


@pytest.mark.slow
def test_jobs_runs_trial_processes_on_a_journal_and_reaches_n(tmp_path: Path, small_twin: Path, fast_args: list[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_SLOW_CHILD)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "runs"
    assert main(["-q", "run", "--data", str(small_twin), "--out", str(out), "--jobs", "2", "--trials", "6",
                 "--no-final", *fast_args]) == 0
    journal = out / "anklealign" / "journal.log"
    assert journal.is_file() and not (out / "anklealign" / "study.db").exists()
    study = optuna.load_study(study_name="anklealign", storage=open_storage(f"journal:///{journal}",
                                                                           StorageSection()))
    trials = study.trials
    # Each process checks the count before it starts a trial: two may start the last one at once.
    assert 6 <= finished_count(study) <= 7 and not [t for t in trials if t.state == TrialState.RUNNING]
    workers = {TrialRecord.of(t).worker for t in trials if t.state == TrialState.COMPLETE}
    assert len(workers) == 2  # both processes ran trials
    assert len({t.number for t in trials}) == len(trials)


def test_an_orphaned_trial_is_failed_and_requeued_with_its_seed() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("seed", 1234)
    trial.set_user_attr("preset", "net6")
    assert recover_orphans(study) == 1  # its process died: nobody will finish it
    dead, retry = study.trials
    assert dead.state == TrialState.FAIL and "died" in TrialRecord.of(dead).fail_reason
    assert retry.state == TrialState.WAITING and retry.params == dead.params
    assert (TrialRecord.of(retry).seed, TrialRecord.of(retry).preset) == (1234, "net6")
    assert finished_count(study) == 0  # the failure was handed on, not finished
    assert recover_orphans(study) == 0


def test_max_retry_bounds_heartbeat_retries(tmp_path: Path) -> None:
    section = StorageSection(heartbeat_interval=1, grace_period=2, max_retry=1)
    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}", section)
    study = optuna.create_study(storage=storage, direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def die_silently() -> None:  # a trial whose worker stops sending heartbeats
        trial = study.ask(dist)
        storage.record_heartbeat(trial._trial_id)
        time.sleep(section.grace_period + 1)
        optuna.storages.fail_stale_trials(study)

    die_silently()
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]  # retried once
    assert finished_count(study) == 0
    die_silently()  # the retry dies too: max_retry = 1 allows no further attempt
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert finished_count(study) == 1  # the final failure counts as finished: it will not run again
