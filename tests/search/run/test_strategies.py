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


@pytest.mark.parametrize("name", ["successive_halving", "hyperband"])
def test_halving_pruners_receive_the_studys_reduction_factor(name: str) -> None:
    """Optuna's default is 3 for hyperband and 4 for successive halving; the study's key must reach both."""
    defn = load_study_def("anklealign", [f'pruner.name="{name}"', "pruner.reduction_factor=2"])
    pruner = strategies.make_pruner(defn)
    assert pruner._reduction_factor == 2


@pytest.mark.parametrize(("metric", "prior", "chance"), [
    ("macro_f1", [0.8, 0.1, 0.1], 1 / 3), ("balanced_accuracy", [0.8, 0.1, 0.1], 1 / 3),
    ("accuracy", [0.8, 0.1, 0.1], 0.8), ("accuracy", [0.5, 0.5], 0.5)])
def test_the_guarded_pruners_chance_follows_the_metric_and_the_prior(metric: str, prior: list[float],
                                                                    chance: float) -> None:
    """On 80 % of one class an accuracy of 0.8 is what always answering it scores: not learning, whatever 1/K is."""
    defn = load_study_def("anklealign", [f'study.metric="{metric}"'])
    assert strategies.make_pruner(defn, prior=prior).chance == pytest.approx(chance)


@pytest.mark.parametrize(("trials", "says"), [(5, "first 5 of the 9 enqueued presets"),
                                              (15, "9 enqueued presets and 6 random start-up trials"),
                                              (19, "9 enqueued presets and 10 random"), (20, None)])
def test_a_run_too_short_for_the_sampler_says_so(trials: int, says: str | None) -> None:
    from search.run.runner import startup_note

    note = startup_note(load_study_def("anklealign"), trials)
    if says is None:
        assert note is None
    else:
        assert says in note and "--trials 29 or more" in note
    assert startup_note(load_study_def("anklealign", ['sampler.name="random"']), 3) is None
