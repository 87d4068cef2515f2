"""The sampler and pruner of a study, chosen by name from a table (``[sampler] name``, ``[pruner] name``).

Each entry builds the Optuna object from the study definition; adding a choice is one line here
and the name in the list of valid values of :mod:`search.study.definition` (a test checks both agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import optuna

from search.run.metrics import chance_level
from search.run.pruning import GuardedPruner
from search.study import optuna_api
from search.study.definition import StudyDef

__all__ = ["SAMPLERS", "PRUNERS", "make_sampler", "make_pruner"]

SAMPLERS: dict[str, Callable[[StudyDef, int], optuna.samplers.BaseSampler]] = {
    "random": lambda d, seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda d, seed: optuna_api.tpe_sampler(seed=seed, n_startup_trials=d.sampler.n_startup_trials,
                                                   multivariate=d.sampler.multivariate),
}

PRUNERS: dict[str, Callable[[StudyDef, float], optuna.pruners.BasePruner]] = {
    "guarded": lambda d, chance: GuardedPruner(max_epochs=d.training.max_epochs, min_share=d.pruner.min_share,
                                               reduction_factor=d.pruner.reduction_factor, band=d.pruner.band,
                                               chance=chance),
    "median": lambda d, k: optuna.pruners.MedianPruner(n_startup_trials=d.pruner.n_startup_trials,
                                                    n_warmup_steps=d.pruner.n_warmup_steps),
    "successive_halving": lambda d, k: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(1, d.pruner.n_warmup_steps), reduction_factor=d.pruner.reduction_factor),
    "hyperband": lambda d, k: optuna.pruners.HyperbandPruner(min_resource=max(1, d.pruner.n_warmup_steps),
                                                          max_resource=d.training.max_epochs,
                                                          reduction_factor=d.pruner.reduction_factor),
    "none": lambda d, k: optuna.pruners.NopPruner(),
}


def make_sampler(defn: StudyDef, *, seed: int) -> optuna.samplers.BaseSampler:
    return SAMPLERS[defn.sampler.name](defn, seed)


def make_pruner(defn: StudyDef, *, prior: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)) -> optuna.pruners.BasePruner:
    """The study's pruner; the training class frequencies ``prior`` set the guarded pruner's chance level in the
    study's metric (:func:`search.run.metrics.chance_level`)."""
    return PRUNERS[defn.pruner.name](defn, chance_level(defn.study.metric, np.asarray(prior)))
