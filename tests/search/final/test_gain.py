"""The search gain: paired differences with intervals, and the warnings and notes they trigger."""

from __future__ import annotations

import numpy as np
import pytest

from search.final.gain import paired_difference, search_gain


def _probs(pred: np.ndarray, k: int = 3) -> np.ndarray:
    return (np.eye(k)[pred] * 0.8 + 0.2 / k)[None]  # (1, M, K)


def test_paired_difference_is_the_metric_difference_with_an_interval() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    good = np.where(rng.random(300) < 0.8, labels, (labels + 1) % 3)
    bad = np.where(rng.random(300) < 0.4, labels, (labels + 2) % 3)
    d = paired_difference(_probs(good), _probs(bad), labels, metric="accuracy", groups=None, n_boot=300, seed=0)
    assert d["difference"] == pytest.approx((good == labels).mean() - (bad == labels).mean())
    assert d["ci95"][0] < d["difference"] < d["ci95"][1] and d["ci95"][0] > 0


def test_warnings_and_notes() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 200)
    same = np.where(rng.random(200) < 0.6, labels, (labels + 1) % 3)
    model = _probs(same)
    score = {"accuracy": {"mean": float((same == labels).mean()), "ci95": [0.5, 0.7]}}
    gain = search_gain(model, {"net6": model.copy(), "default": model.copy()}, labels, random=None,
                       metric="accuracy", groups=None, n_boot=200, seed=0, model_score=score, seed_nets=("net6",))
    assert gain["vs"]["net6"]["difference"] == 0 and gain["closest_seed_net"] == "net6"
    assert any("nothing better than the seed net net6" in w for w in gain["warnings"])
    assert any("own default configuration" in n for n in gain["notes"])
    random = {"accuracy": {"mean": 0.65}}
    gain = search_gain(model, {}, labels, random=random, metric="accuracy", groups=None, n_boot=0, seed=0,
                       model_score=score, seed_nets=("net6",))
    assert any("random guessing" in w for w in gain["warnings"]) and gain["notes"] == []


def test_the_interval_is_paired() -> None:
    """Two models that agree on all but 12 of 300 images, where A is right and B wrong: +0.04. Resampling the
    images once for both (paired) excludes 0; resampling each model's images separately would not (an unpaired
    interval of two accuracies of 300 images is about +-0.08 wide)."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 300)
    b = np.where(rng.random(300) < 0.6, labels, (labels + 1) % 3)
    a = b.copy()
    wrong = np.flatnonzero(b != labels)[:12]
    a[wrong] = labels[wrong]
    d = paired_difference(_probs(a), _probs(b), labels, metric="accuracy", groups=None, n_boot=500, seed=0)
    assert d["difference"] == pytest.approx(12 / 300)
    assert d["ci95"][0] > 0 and d["ci95"][1] - d["ci95"][0] < 0.06
