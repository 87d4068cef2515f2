"""Greedy ensemble selection (Caruana et al. 2004) on synthetic out-of-fold probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from search.final.selection import greedy_ensemble


def _noisy(labels: np.ndarray, skill: float, rng: np.random.Generator, k: int = 3) -> np.ndarray:
    """Probabilities that put ``skill`` more logit on the true class, with independent noise per model."""
    logits = rng.normal(0, 1, (len(labels), k))
    logits[np.arange(len(labels)), labels] += skill
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_two_independent_equal_models_are_averaged_and_a_bad_one_is_left_out() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    a, b, bad = _noisy(labels, 1.5, rng), _noisy(labels, 1.5, rng), _noisy(labels, 0.2, rng)
    g = greedy_ensemble([a, bad, b], labels, max_members=3)
    assert g.weights[1] == 0  # the bad model adds nothing
    assert g.weights[0] == pytest.approx(0.5, abs=0.1) and g.weights[2] == pytest.approx(0.5, abs=0.1)
    assert g.nll[g.steps - 1] < g.nll[0] and len(g.nll) == 25


def test_a_known_best_mixture_is_recovered() -> None:
    """Three models that each know a different class well: the best mixture is about equal thirds."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 4000)
    models = []
    for expert in range(3):
        skill = np.where(labels == expert, 3.0, 0.8)
        logits = rng.normal(0, 1, (len(labels), 3))
        logits[np.arange(len(labels)), labels] += skill
        models.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    g = greedy_ensemble(models, labels, max_members=3)
    assert all(w == pytest.approx(1 / 3, abs=0.12) for w in g.weights)
    mixed = np.average(models, axis=0, weights=g.weights)
    nll = lambda p: float(-np.log(p[np.arange(len(labels)), labels]).mean())  # noqa: E731
    assert nll(mixed) < min(nll(m) for m in models) - 0.05


def test_the_anchor_alone_when_nothing_helps_and_the_member_cap_holds() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 2000)
    good = _noisy(labels, 2.0, rng)
    g = greedy_ensemble([good, np.full_like(good, 1 / 3)], labels, max_members=5)
    assert g.weights == (1.0, 0.0) and g.steps == 1
    many = [_noisy(labels, 1.5, rng) for _ in range(8)]
    capped = greedy_ensemble(many, labels, max_members=2)
    assert sum(w > 0 for w in capped.weights) == 2 and capped.weights[0] > 0
    assert greedy_ensemble([good], labels, max_members=3).weights == (1.0,)
