"""A pruner that stays silent while the trials it would compare are not distinguishable.

Successive halving at epoch 3 of 12 compared scores that were all within the noise of one
another (a validation set of ~250 noisy labels) and so pruned good candidates at random. The
guarded pruner decides only at a few rungs, late, and only on evidence:

* **Rungs**: epoch ``ceil(min_share x max_epochs)``, then ``reduction_factor`` times that, ... (never
  the last epoch). Elsewhere it never prunes.
* **Smoothing**: a trial's value at a rung is the mean of its last three reported epochs.
* **Enough peers**: at least ``min_trials`` other trials reached the rung.
* **Chance band**: when no trial at the rung is above ``chance + band``, nothing has been learnt yet
  that could tell trials apart: no decision. ``chance`` is what an answer that ignores the image scores
  in the study's metric (:func:`search.run.metrics.chance_level`): 1/K in macro-F1 or balanced accuracy,
  the majority class's share in accuracy.
* **Noise band**: a trial is pruned only if it is more than ``band`` below the score a trial needs to be
  in the top 1/``reduction_factor`` at that rung. ``band`` (default 0.05) is about one standard error of
  the difference of two fold-mean scores on ~250 images (binomial: sqrt(2 x 0.25 / 250) = 0.045).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["GuardedPruner", "rungs"]

_SMOOTH = 3  # epochs averaged at a rung


def rungs(max_epochs: int, *, min_share: float, reduction_factor: int) -> tuple[int, ...]:
    """0-based steps at which the pruner may decide (the epoch after which it looks, minus one)."""
    first = max(_SMOOTH, math.ceil(min_share * max_epochs))
    out, r = [], first
    while r < max_epochs:
        out.append(r - 1)
        r *= reduction_factor
    return tuple(out)


class GuardedPruner(optuna.pruners.BasePruner):
    """Successive-halving-like pruning with a minimum share of the budget, a chance band and a noise band."""

    def __init__(self, *, max_epochs: int, min_share: float = 0.4, reduction_factor: int = 3, band: float = 0.05,
                 min_trials: int = 4, chance: float = 1 / 3) -> None:
        if not 0 < min_share <= 1 or reduction_factor < 2 or band < 0 or min_trials < 1 or not 0 <= chance < 1:
            raise ValueError("GuardedPruner needs 0 < min_share <= 1, reduction_factor >= 2, band >= 0, "
                             "min_trials >= 1 and 0 <= chance < 1")
        self.rungs = rungs(max_epochs, min_share=min_share, reduction_factor=reduction_factor)
        self.reduction_factor = reduction_factor
        self.band = band
        self.min_trials = min_trials
        self.chance = float(chance)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        value = _smoothed(trial.intermediate_values, step)
        if value is None:
            return False
        peers = [v for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                      TrialState.RUNNING))
                 if t.number != trial.number and (v := _smoothed(t.intermediate_values, step)) is not None]
        return self.decide(value, peers)

    def decide(self, value: float, peers: Sequence[float]) -> bool:
        """Prune ``value`` given the other trials' values at the same rung (the rule of the module doc)."""
        if len(peers) < self.min_trials:
            return False
        if max(*peers, value) < self.chance + self.band:
            return False
        keep_from = float(np.quantile(np.asarray(peers, dtype=np.float64), 1.0 - 1.0 / self.reduction_factor))
        return value < keep_from - self.band


def _smoothed(values: dict[int, float], step: int) -> float | None:
    window = [values[s] for s in range(step - _SMOOTH + 1, step + 1) if s in values]
    if len(window) < _SMOOTH or not all(math.isfinite(v) for v in window):
        return None
    return float(np.mean(window))
