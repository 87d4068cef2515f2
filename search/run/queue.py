"""Which trial runs next, and which trials count as finished.

``--trials N`` means "the study has N finished trials" (complete, pruned, or failed for a reason of
its own). Trials failed by a heartbeat (dead worker), a crashed child process or Ctrl-C are
re-queued with the same parameters and do not count. The seed nets are enqueued first, so every
search is compared with them.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.study import optuna_api, records
from search.study.records import TrialRecord
from space import PRESET_TRIALS, TrialCfg, default_trial
from space.projection import project
from space.search_space import SearchSpace, to_params

_log = logging.getLogger(__name__)

__all__ = ["preset_trial", "enqueue_presets", "requeue_trial", "finished_count", "ask_next"]


def preset_trial(name: str, space: SearchSpace, max_epochs: int, *, num_classes: int,
                 traits: Mapping[str, Any] | None = None) -> tuple[TrialCfg, list[str]]:
    """A preset (the default configuration or a seed net) as a point of the study's space, and what was moved.

    The seed nets are size-independent (global pooling): the input size, the epoch budget and the number of
    classes (the head's outputs) come from the study and its data. ``traits`` (``DataContext.default_traits``):
    the default configuration's colour and flips follow the data. A setting the space does not allow is moved
    to the nearest one it does (:func:`space.project`); the moves come back in words.
    """
    if name == "default" and traits is not None:
        cfg = default_trial(color=traits["color"], hflip=traits["hflip"])
    else:
        cfg = PRESET_TRIALS[name]
    inp = dataclasses.replace(cfg.input, image_size=space.image_size[0], resize=space.resize[0])
    cfg = dataclasses.replace(cfg, input=inp, model=dataclasses.replace(cfg.model, num_classes=num_classes),
                              train=dataclasses.replace(cfg.train, max_epochs=max_epochs))
    return project(cfg, space)


def enqueue_presets(study: optuna.Study, names: Sequence[str], space: SearchSpace, max_epochs: int, *,
                    num_classes: int, traits: Mapping[str, Any] | None = None) -> None:
    """Queue the presets ``names`` as the study's first trials (once, even when called twice)."""
    for name in names:
        cfg, moved = preset_trial(name, space, max_epochs, num_classes=num_classes, traits=traits)
        if moved:
            _log.warning("preset %s moved into the study's space: %s", name, ", ".join(moved))
        study.enqueue_trial(to_params(cfg, space), user_attrs=records.queued_attrs(preset=name), skip_if_exists=True)


def requeue_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again, as Optuna's heartbeat retry does.

    The new WAITING trial names the original in its retry history, so the failed one no longer
    counts as finished (see :func:`finished_count`), and carries the first attempt's seed and
    seed-net name, so that the retry trains exactly what the first attempt would have.
    """
    record = TrialRecord.of(trial)
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=records.queued_attrs(preset=record.preset, seed=record.seed),
        system_attrs=optuna_api.retry_attrs(trial),
    ))


def finished_count(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> int:
    """Complete + pruned + failed trials, minus failures whose parameters were queued again.

    ``trials``: the study's trials when already read.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    retried = optuna_api.retried_numbers(trials)
    return sum(1 for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in retried and not TrialRecord.of(t).interrupted))


def ask_next(study: optuna.Study) -> optuna.Trial:
    """The next trial: a re-queued one (dead worker, Ctrl-C) before the seed nets and the sampler.

    Optuna's own queue is first-in first-out, so a retry would wait behind every enqueued preset
    and might never run in a short study.
    """
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if optuna_api.is_retry(t):
            claimed = optuna_api.claim_waiting(study, t)
            if claimed is not None:
                return claimed
    with warnings.catch_warnings():
        # We run the heartbeat ourselves (see search.run.runner), as Study.optimize would.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        return study.ask()
