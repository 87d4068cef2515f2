"""Every wrapper of search.study.optuna_api against the installed Optuna: a release that renames a
private attribute, drops an experimental argument or changes the retry format fails here."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import optuna_dashboard
import pytest
from optuna.trial import TrialState

from search.study import optuna_api


def _study(tmp_path: Path, **beats: object) -> optuna.Study:
    storage = optuna_api.rdb_storage(f"sqlite:///{tmp_path / 's.db'}", engine_kwargs={}, **beats)
    return optuna.create_study(study_name="s", storage=storage, direction="maximize")


def test_experimental_constructors_build_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any ExperimentalWarning that escapes fails the test
        tpe = optuna_api.tpe_sampler(seed=1, n_startup_trials=3, multivariate=True)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._multivariate and tpe._group and tpe._constant_liar  # the arguments took effect


def test_ids_and_storage_of_a_study(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage = optuna_api.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert optuna_api.study_id(study) == storage.get_study_id_from_name("s")
    for t in study.trials:
        assert optuna_api.trial_id(t) == storage.get_trial_id_from_study_id_trial_number(
            optuna_api.study_id(study), t.number)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optuna_api.set_metric_names(study, ["macro_f1"])
    assert study.metric_names == ["macro_f1"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_heartbeat_keeps_a_trial_alive_and_a_stale_one_is_retried_in_our_format(tmp_path: Path) -> None:
    # A grace period of 3 beats: a loaded machine that delays one beat does not make the live trial stale.
    study = _study(tmp_path, heartbeat_interval=1, grace_period=3, max_retry=2)
    storage = optuna_api.storage_of(study)
    assert optuna_api.heartbeat_enabled(storage)
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    with optuna_api.heartbeat(alive, storage):
        time.sleep(3.5)
        optuna_api.fail_stale_trials(study)
        assert study.trials[0].state == TrialState.RUNNING  # it beats: not stale
    study.tell(alive, 0.5)
    stale = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(optuna_api.trial_id(stale))
    time.sleep(4)
    optuna_api.fail_stale_trials(study)  # no beat for longer than the grace period: failed and re-queued
    trials = study.get_trials(deepcopy=False)
    assert trials[1].state == TrialState.FAIL
    retry = trials[2]
    assert retry.state == TrialState.WAITING and optuna_api.is_retry(retry)
    assert optuna_api.retried_numbers(trials) == {1}
    assert optuna_api.retry_attrs(trials[1]) == {"failed_trial": 1, "retry_history": [1]}  # Optuna's own keys


def test_no_heartbeat_without_an_interval(tmp_path: Path) -> None:
    assert not optuna_api.heartbeat_enabled(optuna_api.storage_of(_study(tmp_path)))


def test_claim_waiting_and_fail_running(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.enqueue_trial({"x": 0.25})
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
    claimed = optuna_api.claim_waiting(study, waiting)
    assert claimed is not None and study.trials[0].state == TrialState.RUNNING
    assert optuna_api.claim_waiting(study, waiting) is None  # a second claim loses
    optuna_api.fail_running(study, study.trials[0], user_attrs={"fail_reason": "died"})
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs == {"fail_reason": "died"}


def test_a_note_on_a_finished_trial(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    ref = optuna_api.FinishedTrialRef(study, study.trials[0])
    optuna_dashboard.save_note(ref, "### hello")  # type: ignore[arg-type]
    assert optuna_dashboard.get_note(ref) == "### hello"  # type: ignore[arg-type]


def test_link_study_artifact_uses_the_dashboard_key(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    optuna_api.link_study_artifact(study, study.trials[0], "abc", '{"artifact_id": "abc"}')
    key = f"dashboard:artifacts:{optuna_api.trial_id(study.trials[0])}:abc"
    assert optuna_api.storage_of(study).get_study_system_attrs(optuna_api.study_id(study))[key] == \
        '{"artifact_id": "abc"}'


def test_close_storage_leaves_it_usable(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    optuna_api.close_storage(optuna_api.storage_of(study))
    assert len(study.get_trials()) == 1


@pytest.mark.parametrize("bad", [{"heartbeat_interval": 0, "grace_period": 1}])
def test_bad_heartbeat_is_refused(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError):
        optuna_api.rdb_storage(f"sqlite:///{tmp_path / 'b.db'}", engine_kwargs={}, **bad)
