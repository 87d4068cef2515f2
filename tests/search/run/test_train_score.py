"""The per-epoch validation score equals scikit-learn's functions over the dataset's classes (it only is faster)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from search.run.train import score


@pytest.mark.parametrize("seed", range(40))
def test_score_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    n = int(rng.integers(1, 60))
    # Some classes absent from the truth, some never predicted, some only predicted.
    y_true = rng.choice(rng.permutation(k)[: int(rng.integers(1, k + 1))], size=n)
    y_pred = rng.choice(rng.permutation(k)[: int(rng.integers(1, k + 1))], size=n)
    assert score("accuracy", y_true, y_pred, k) == pytest.approx(accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn warns when a predicted class is absent from y_true
        expected_bal = balanced_accuracy_score(y_true, y_pred)
    assert score("balanced_accuracy", y_true, y_pred, k) == pytest.approx(expected_bal)
    assert score("macro_f1", y_true, y_pred, k) == pytest.approx(
        f1_score(y_true, y_pred, labels=list(range(k)), average="macro", zero_division=0))


def test_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        score("auc", np.array([0]), np.array([0]), 2)
