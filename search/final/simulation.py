"""Studies whose truth is known, for measuring the selection statistics of :mod:`search.final.selection`.

A study is simulated as the out-of-fold predictions of its trials: trial 0 is the default configuration,
trial 1 is ``gain`` more accurate (0 = every trial equally good), the rest as good as the default. Each
image has a difficulty shared by every trial (a hard picture is hard for all) and each trial its own noise
of scale ``spread``, which sets how often two equally good trials disagree (about 12 % of the images at
0.3, 16 % at 0.4). An error goes to the image's one confusable class. The tests
(``tests/search/final/test_selection.py``) and ``benchmarks/selection_power.py`` use it to measure how often
the test against the default declares a winner under equal skill (its error rate) and how often it finds a
truly better trial (its power).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

__all__ = ["simulated_trials", "disagreement"]


def simulated_trials(rng: np.random.Generator, *, n: int = 250, trials: int = 21, gain: float = 0.0,
                     spread: float = 0.3, accuracy: float = 0.62, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(trials, n, classes) out-of-fold probabilities and (n,) labels of one simulated study."""
    labels = rng.integers(0, classes, n)
    difficulty = rng.normal(size=n)
    confused_with = (labels + rng.integers(1, classes, n)) % classes
    scale = np.sqrt(1 + spread**2)
    threshold = np.full(trials, norm.ppf(accuracy) * scale)
    threshold[1] = norm.ppf(accuracy + gain) * scale
    right = difficulty + rng.normal(scale=spread, size=(trials, n)) < threshold[:, None]
    pred = np.where(right, labels, confused_with)
    return np.eye(classes)[pred] * 0.6 + 0.4 / classes, labels


def disagreement(oof: np.ndarray) -> float:
    """The mean share of images on which two trials other than trial 1 predict differently."""
    pred = np.asarray(oof).argmax(-1)
    others = [i for i in range(len(pred)) if i != 1]
    pairs = [(a, b) for i, a in enumerate(others) for b in others[i + 1:]][:50]
    return float(np.mean([(pred[a] != pred[b]).mean() for a, b in pairs]))
