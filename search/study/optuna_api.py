"""Every use of Optuna's private or experimental API, in one place.

Each function says why the public API is not enough. ``tests/search/study/test_optuna_api.py``
exercises every one of them against the installed Optuna, so a release that renames an attribute
or drops an experimental argument fails that test file, not a user's search. No other module of
the project touches ``study._storage``, ``trial._trial_id``, ``optuna.storages._*`` or silences
``ExperimentalWarning`` (``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "experimental",
    "tpe_sampler",
    "rdb_storage",
    "set_metric_names",
    "fail_stale_trials",
    "storage_of",
    "study_id",
    "trial_id",
    "heartbeat",
    "heartbeat_enabled",
    "claim_waiting",
    "fail_running",
    "retried_numbers",
    "retry_attrs",
    "is_retry",
    "FinishedTrialRef",
    "link_study_artifact",
    "close_storage",
]

# Optuna's heartbeat retry writes these system attributes on the re-queued trial (storages/_callbacks.py);
# our own re-queue (Ctrl-C, a dead child process) writes the same, so one rule counts both.
_RETRY_HISTORY = "retry_history"
_FAILED_TRIAL = "failed_trial"


@contextmanager
def experimental() -> Iterator[None]:
    """Silence ``ExperimentalWarning`` for the calls inside: each is a deliberate, tested choice below."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def tpe_sampler(*, seed: int, n_startup_trials: int, multivariate: bool) -> optuna.samplers.TPESampler:
    """TPE with ``multivariate``/``group`` (experimental arguments): our space is conditional (blocks
    2..6 exist only for some depths), and grouped multivariate TPE models the joint distribution of
    each set of parameters that occur together; ``constant_liar`` keeps parallel workers apart."""
    with experimental():
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=multivariate,
                                          group=multivariate, constant_liar=True)


def rdb_storage(url: str, *, engine_kwargs: dict[str, Any], heartbeat_interval: int | None = None,
                grace_period: int | None = None, max_retry: int = 0) -> RDBStorage:
    """An ``RDBStorage``, with heartbeats when ``heartbeat_interval`` is given.

    The heartbeat arguments and ``RetryHeartbeatStaleTrialCallback`` are experimental; they are how a
    dead worker's trial is failed and its parameters re-queued on a server database.
    """
    kwargs: dict[str, Any] = {}
    with experimental():
        if heartbeat_interval is not None:
            kwargs = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry))
        return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def set_metric_names(study: optuna.Study, names: Sequence[str]) -> None:
    """``Study.set_metric_names`` (experimental): the dashboard's axis then says ``macro_f1``, not "Objective 0"."""
    with experimental():
        study.set_metric_names(list(names))


def fail_stale_trials(study: optuna.Study) -> None:
    """``optuna.storages.fail_stale_trials`` (experimental): fail (and, by the storage's callback, re-queue)
    trials whose worker stopped beating. ``Study.optimize`` calls it itself; our loop runs trials one by one."""
    recovered = getattr(study._storage, "recently_recovered", None)
    if recovered is not None and recovered():  # after an outage, live workers' heartbeats are stale for a while
        return
    with experimental():
        optuna.storages.fail_stale_trials(study)


def storage_of(study: optuna.Study) -> BaseStorage:
    """``study._storage``: optuna-dashboard's server and per-trial writes need the storage object,
    and ``optuna.Study`` has no public accessor for it."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """``study._study_id``: the dashboard's URLs and artifact keys are built from it."""
    return study._study_id


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """``trial._trial_id``: the storage's key of a trial (its ``number`` is per study)."""
    return trial._trial_id


def heartbeat(trial: optuna.Trial, storage: BaseStorage) -> AbstractContextManager[Any]:
    """The heartbeat thread ``Study.optimize`` runs around a trial (private ``get_heartbeat_thread``);
    our loop asks and tells one trial at a time, so it has to run it itself."""
    return get_heartbeat_thread(trial._trial_id, storage)


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether the storage beats (private ``is_heartbeat_enabled``)."""
    return is_heartbeat_enabled(storage)


def claim_waiting(study: optuna.Study, waiting: FrozenTrial) -> optuna.Trial | None:
    """Take a WAITING trial as this process's RUNNING trial, atomically, as Optuna's own queue does.

    ``Study.ask`` serves the queue first-in first-out, so a re-queued trial would wait behind every
    enqueued seed net; claiming it directly lets a surviving worker take over a dead one's trial at once.
    Returns ``None`` when another worker claimed it first.
    """
    try:
        if study._storage.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING):
            return optuna.Trial(study, waiting._trial_id)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    return None


def fail_running(study: optuna.Study, trial: FrozenTrial, *, user_attrs: dict[str, Any]) -> None:
    """Fail a RUNNING trial that no live process owns (a crashed child), writing its reason first.

    ``Study.tell`` only accepts trials this process asked for; the storage call is how Optuna's own
    heartbeat failure does it.
    """
    for key, value in user_attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of failed trials whose parameters were queued again (Optuna's ``retry_history``)."""
    return {n for t in trials for n in t.system_attrs.get(_RETRY_HISTORY, [])}


def retry_attrs(failed: FrozenTrial) -> dict[str, Any]:
    """The system attributes of the retry of ``failed``, in the format of Optuna's heartbeat retry callback."""
    return {_FAILED_TRIAL: failed.system_attrs.get(_FAILED_TRIAL, failed.number),
            _RETRY_HISTORY: [*failed.system_attrs.get(_RETRY_HISTORY, []), failed.number]}


def is_retry(trial: FrozenTrial) -> bool:
    """A WAITING trial that re-queues a failed one."""
    return _FAILED_TRIAL in trial.system_attrs


class FinishedTrialRef:
    """What ``optuna_dashboard.save_note`` reads from a trial (``study``, ``storage``, ``_trial_id``), for a
    trial that has already finished: ``save_note`` takes a live ``optuna.Trial``, and building one for a
    finished trial would run the sampler."""

    def __init__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.study = study
        self.storage = study._storage
        self._trial_id = trial._trial_id


# optuna-dashboard lists a trial's artifacts from study system attributes with this key (its own upload
# format). Optuna refuses trial attributes once a trial has finished, and the best trial always has, so
# the final files are study artifacts (public API) that this key links to the best trial.
_DASHBOARD_TRIAL_ARTIFACT_KEY = "dashboard:artifacts:{trial_id}:{artifact_id}"


def link_study_artifact(study: optuna.Study, trial: FrozenTrial, artifact_id: str, meta_json: str) -> None:
    """Show a study artifact among ``trial``'s artifacts on optuna-dashboard (its private key format)."""
    key = _DASHBOARD_TRIAL_ARTIFACT_KEY.format(trial_id=trial._trial_id, artifact_id=artifact_id)
    study._storage.set_study_system_attr(study._study_id, key, meta_json)


def close_storage(storage: BaseStorage) -> None:
    """Close the storage's database connections now (SQLite folds its WAL back into study.db).

    Optuna wraps an ``RDBStorage`` in a private cache (``_CachedStorage._backend``) and has no public close.
    """
    backend = getattr(storage, "_backend", storage)
    if hasattr(backend, "remove_session"):
        backend.remove_session()
    engine = getattr(backend, "engine", None)
    if engine is not None:
        engine.dispose()


def cached(storage: RDBStorage) -> BaseStorage:
    """``optuna.storages.get_storage`` ("only for internal usage"): an ``RDBStorage`` in Optuna's cache of finished
    trials, as ``create_study`` would wrap it; a wrapper of ours around the storage keeps that cache."""
    return optuna.storages.get_storage(storage)


def register_storage_wrapper(cls: type) -> type:
    """Make ``cls`` (which delegates every storage call) count as a ``BaseStorage`` and a ``BaseHeartbeat``
    (private): Optuna runs a trial's heartbeat thread only for a storage that is a ``BaseHeartbeat``."""
    BaseStorage.register(cls)
    BaseHeartbeat.register(cls)
    return cls
