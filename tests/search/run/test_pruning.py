"""The guarded pruner decides only late, on enough peers, above chance and beyond the noise band."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.run.pruning import GuardedPruner, rungs


def _pruner(**kw: object) -> GuardedPruner:
    return GuardedPruner(max_epochs=30, **{"min_share": 0.4, "band": 0.05, "min_trials": 4, **kw})


def test_rungs_start_at_a_share_of_the_budget() -> None:
    assert rungs(30, min_share=0.4, reduction_factor=3) == (11,)  # after epoch 12; 36 > 30
    assert rungs(100, min_share=0.1, reduction_factor=3) == (9, 29, 89)
    assert rungs(5, min_share=0.1, reduction_factor=3) == (2,)  # never before three epochs to smooth


@pytest.mark.parametrize("value, peers, pruned, why", [
    (0.30, [0.60, 0.62, 0.58], False, "fewer than 4 peers"),
    (0.30, [0.36, 0.35, 0.37, 0.34, 0.36], False, "everyone within the chance band (1/3 + 0.05)"),
    (0.57, [0.60, 0.62, 0.58, 0.61, 0.55], False, "within the noise band of the keep threshold"),
    (0.45, [0.60, 0.62, 0.58, 0.61, 0.55], True, "clearly below the top third, above chance"),
])
def test_decide(value: float, peers: list[float], pruned: bool, why: str) -> None:
    assert _pruner().decide(value, peers) is pruned, why


def test_prune_looks_only_at_rungs_and_smooths_three_epochs() -> None:
    study = optuna.create_study(direction="maximize", pruner=_pruner())
    curve_good = {s: 0.6 for s in range(30)}
    for _ in range(5):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.6, params={"x": 0.1},
                                     distributions={"x": FloatDistribution(0, 1)}, intermediate_values=curve_good))
    bad = {s: 0.4 for s in range(12)}
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": 0.2},
                                 distributions={"x": FloatDistribution(0, 1)}, intermediate_values=bad))
    pruner = study.pruner
    assert pruner.prune(study, study.trials[-1])  # step 11 is the rung: 0.40 vs keep 0.60 - 0.05
    early = {s: 0.4 for s in range(11)}
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": 0.3},
                                 distributions={"x": FloatDistribution(0, 1)}, intermediate_values=early))
    assert not pruner.prune(study, study.trials[-1])  # step 10: not a rung
    spiky = {**{s: 0.4 for s in range(12)}, 11: 0.7}  # one lucky epoch (0.70 > 0.55) does not save it:
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": 0.4},
                                 distributions={"x": FloatDistribution(0, 1)}, intermediate_values=spiky))
    assert pruner.prune(study, study.trials[-1])  # the mean of epochs 10-12 is 0.50 < 0.55
