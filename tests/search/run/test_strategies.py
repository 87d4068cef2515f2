"""The choice tables agree with the names the study file and the search space accept."""

from __future__ import annotations

import optuna
import pytest

from search.run import strategies, train
from search.study import definition
from search.study.definition import load_study_def
from space import config


def test_tables_cover_exactly_the_valid_names() -> None:
    assert set(strategies.SAMPLERS) == set(definition.SAMPLERS)
    assert set(strategies.PRUNERS) == set(definition.PRUNERS)
    assert set(train.OPTIMIZERS) == set(config.OPTIMIZERS)
    assert set(train.SCHEDULES) == set(config.SCHEDULES)


@pytest.mark.parametrize("name", definition.PRUNERS)
def test_every_pruner_builds(name: str) -> None:
    defn = load_study_def("anklealign", [f"pruner.name=\"{name}\""])
    assert isinstance(strategies.make_pruner(defn), optuna.pruners.BasePruner)


@pytest.mark.parametrize("name", definition.SAMPLERS)
def test_every_sampler_builds_seeded(name: str) -> None:
    defn = load_study_def("anklealign", [f"sampler.name=\"{name}\""])
    assert isinstance(strategies.make_sampler(defn, seed=3), optuna.samplers.BaseSampler)
