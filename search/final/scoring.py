"""Scores with honest uncertainty: seeds, bootstrap intervals, baselines, humans.

Pure numpy/scipy (no training); the metrics themselves are defined once in :mod:`search.run.metrics`.

* **Seeds.** Every metric is computed per seed; ``mean`` and ``std`` (sample std, ``None`` for one
  seed) are over seeds, ``per_seed`` lists them.
* **Intervals.** ``ci95`` is a bootstrap interval of the seed-mean metric from
  :func:`scipy.stats.bootstrap` (BCa; percentile where BCa is undefined, e.g. a degenerate bootstrap
  distribution). What is resampled are the test set's *duplicate groups*, not single images: near
  duplicates are not independent observations. Seeded, so reruns give the same interval.
* **Agreement with the annotators** (the annotators themselves: :mod:`search.final.annotators`). With votes
  ``V`` (M, K) and the soft label ``V / V.sum``:
  ``vote_probability`` = mean over images of ``sum_k P[k] * V[k] / sum(V)``, the chance that the
  model's answer (sampled from P) matches a randomly chosen annotator; ``soft_cross_entropy`` =
  mean of ``-sum_k soft[k] * log(max(P[k], 1e-7))`` in nats (lower is better).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from search.run.metrics import METRICS, absent_classes, cell_codes, confusions, metrics_from_confusion

__all__ = ["group_bootstrap", "resample_weights", "score_seeds", "baselines", "weighted_metrics"]

_EPS = 1e-7  # probability floor of the cross-entropy (a hard 0 would make it infinite)
_RANDOM_DRAWS = 1000  # draws of the stratified-random guesser, for the spread of one guesser


def _agreement(probs: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image vote probability and soft cross-entropy: ``(S, M, K)`` -> two ``(S, M)`` arrays.

    Images without any vote are NaN (left out of the means).
    """
    total = votes.sum(1, keepdims=True).astype(np.float64)  # (M, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        soft = np.where(total > 0, votes / total, np.nan)  # (M, K)
    vote_prob = (probs * soft).sum(-1)
    cross_entropy = -(soft * np.log(np.clip(probs, _EPS, 1.0))).sum(-1)
    return vote_prob, cross_entropy


def _summary(per_seed: np.ndarray, ci: Sequence[float] | None) -> dict[str, Any]:
    """{"mean", "std", "ci95", "per_seed"} of one metric (NaN -> None so the JSON stays strict)."""
    per_seed = np.asarray(per_seed, dtype=np.float64)
    finite = per_seed[np.isfinite(per_seed)]
    return {"mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
            "ci95": list(ci) if ci is not None else None,
            "per_seed": [float(v) if np.isfinite(v) else None for v in per_seed]}


def _group_index(groups: np.ndarray | None, m: int) -> tuple[np.ndarray, int]:
    """Dense group index per image (0..G-1) and G; every image is its own group when ``groups`` is None."""
    if groups is None:
        return np.arange(m), m
    groups = np.asarray(groups)
    if groups.shape != (m,):
        raise ValueError(f"groups must have shape ({m},), got {groups.shape}")
    _, index = np.unique(groups, return_inverse=True)
    return index, int(index.max()) + 1 if m else 0


def resample_weights(groups: np.ndarray | None, m: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, M) how often each of ``m`` images is drawn in each of ``n_boot`` resamples of their duplicate groups
    (groups drawn with replacement, each drawn group's images together; None: each image its own group)."""
    index, g = _group_index(groups, m)
    return rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot).astype(np.float64)[:, index]


def group_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], groups: np.ndarray | None, m: int, *,
                    n_boot: int, seed: int, method: str = "BCa") -> list[list[float] | None]:
    """95 % intervals of a vector of statistics under resampling the ``m`` images' duplicate groups.

    Args:
        statistic: image weights ``(B, M)`` (how often each image is in each resample) -> ``(n_stats, B)``.
        groups: (M,) group id of each image (None: each image is its own group).
        m: number of images.
        n_boot: resamples (0 = no intervals).
        seed: seed of the resampling.
        method: ``BCa`` (default) or ``percentile`` (for a statistic that can sit on the edge of its range,
            such as an estimated class prior of 0, where BCa's correction can exclude the estimate).

    Returns:
        One ``[low, high]`` per statistic (``None`` where no interval can be formed): BCa from
        :func:`scipy.stats.bootstrap`, percentile where BCa is undefined.
    """
    index, n_groups = _group_index(groups, m)

    def on_groups(resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        # resampled: (..., G') group ids drawn with replacement (G' = G, or G - 1 in BCa's jackknife)
        resampled = np.moveaxis(resampled, axis, -1)
        lead = resampled.shape[:-1]
        flat = resampled.reshape(-1, resampled.shape[-1]).astype(np.int64)  # (B, G')
        counts = np.zeros((flat.shape[0], n_groups))
        np.add.at(counts, (np.arange(flat.shape[0])[:, None], flat), 1.0)  # (B, G) times each group is drawn
        out = statistic(counts[:, index])  # image weights (B, M) -> (n_stats, B)
        return out.reshape(out.shape[0], *lead)

    probe = statistic(np.ones((1, m)))
    if n_boot == 0 or n_groups < 2:
        return [None] * probe.shape[0]
    data = (np.arange(n_groups),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's own notes on degenerate distributions: handled below
        res = stats.bootstrap(data, on_groups, n_resamples=n_boot, method=method, vectorized=True,
                              rng=np.random.default_rng(seed))
        low, high = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            pct = stats.bootstrap(data, on_groups, n_resamples=n_boot, method="percentile", vectorized=True,
                                  rng=np.random.default_rng(seed), bootstrap_result=res)
            bad = ~(np.isfinite(low) & np.isfinite(high))
            low = np.where(bad, np.atleast_1d(pct.confidence_interval.low), low)
            high = np.where(bad, np.atleast_1d(pct.confidence_interval.high), high)
    return [[float(lo), float(hi)] if np.isfinite(lo) and np.isfinite(hi) else None
            for lo, hi in zip(low, high, strict=True)]


def weighted_metrics(codes: np.ndarray, weights: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Metrics of weighted predictions: cell codes ``(S, M)``, weights ``(B, M)`` -> each ``(S, B)``."""
    k2 = num_classes * num_classes
    s, m = codes.shape
    onehot = np.zeros((m, s * k2))  # one column block per row of codes: a single matrix product for all
    onehot[np.arange(m)[:, None], codes.T + np.arange(s) * k2] = 1.0
    conf = (weights @ onehot).reshape(len(weights), s, num_classes, num_classes).transpose(1, 0, 2, 3)
    return metrics_from_confusion(conf)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-image values ``(S, M)`` (NaN = no value), weights ``(B, M)`` -> weighted means ``(S, B)``."""
    ok = np.isfinite(values)
    num = np.einsum("bm,sm->sb", weights, np.where(ok, values, 0.0))
    den = np.einsum("bm,sm->sb", weights, ok.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def score_seeds(probs: np.ndarray, labels: np.ndarray, votes: np.ndarray, *, classes: Sequence[str],
                groups: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every metric of per-seed probabilities, with seed spread and bootstrap intervals.

    Args:
        probs: (S, M, K) class probabilities, one row block per seed (S = 1 for one model).
        labels: (M,) labels (majority labels on a vote-labelled set).
        votes: (M, K) vote counts (one-hot of ``labels`` for an image-folder dataset).
        classes: K class names.
        groups: (M,) duplicate-group ids of the images, the unit the bootstrap resamples (None: images).
        n_boot: bootstrap resamples (0 = no intervals).
        seed: seed of the resampling.

    Returns:
        ``{"accuracy", "balanced_accuracy", "macro_f1": {"mean", "std", "ci95", "per_seed"},
        "agreement": {"vote_probability", "soft_cross_entropy": {...same...}},
        "per_class": {name: {"support", "predicted", "recall", "precision", "f1"}},
        "confusion": seed-mean (K, K), "classes_absent": [names], "n_images", "n_seeds"}``.
    """
    probs, labels, votes = np.asarray(probs, np.float64), np.asarray(labels), np.asarray(votes)
    if probs.ndim != 3 or probs.shape[1:] != votes.shape or labels.shape != probs.shape[1:2]:
        raise ValueError(f"expected probs (S, M, K), labels (M,), votes (M, K); got {probs.shape}, "
                         f"{labels.shape}, {votes.shape}")
    k, m = probs.shape[2], probs.shape[1]
    if len(classes) != k:
        raise ValueError(f"got {len(classes)} class names for {k} classes")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    absent = absent_classes(labels, k)
    pred = probs.argmax(-1)  # (S, M)
    conf = confusions(labels, pred, k)  # (S, K, K)
    point = metrics_from_confusion(conf)
    vote_prob, cross_entropy = _agreement(probs, votes)  # (S, M) each
    codes = cell_codes(labels, pred, k)

    def statistic(weights: np.ndarray) -> np.ndarray:  # (B, M) -> (5, B), seed means
        values = weighted_metrics(codes, weights, k)
        rows = [values[name] for name in METRICS]
        rows += [_weighted_mean(vote_prob, weights), _weighted_mean(cross_entropy, weights)]
        return np.nanmean(np.stack(rows), axis=1)

    cis = group_bootstrap(statistic, groups, m, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {name: _summary(point[name], ci) for name, ci in zip(METRICS, cis, strict=False)}
    out["agreement"] = {
        "vote_probability": _summary(np.nanmean(vote_prob, -1), cis[3]),
        "soft_cross_entropy": _summary(np.nanmean(cross_entropy, -1), cis[4]),
    }
    out["per_class"] = _per_class(conf, classes)
    out["confusion"] = np.round(conf.mean(0), 3).tolist()
    out["classes_absent"] = [classes[c] for c in absent]
    out["n_images"], out["n_seeds"] = int(m), int(len(probs))
    out["n_groups"] = _group_index(groups, m)[1]
    return out


def _per_class(conf: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class precision, recall and F1 over seeds; ``None`` where undefined (no support / never predicted)."""
    out: dict[str, Any] = {}
    for k, name in enumerate(classes):
        tp = conf[:, k, k].astype(np.float64)  # (S,)
        support, predicted = conf[0, k, :].sum(), conf[:, :, k].sum(-1)
        recall = tp / support if support > 0 else None
        defined = predicted > 0
        precision = tp[defined] / predicted[defined]
        f1 = 2 * tp / np.maximum(support + predicted, 1e-12)

        def spread(v: np.ndarray) -> dict[str, float | None]:
            return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None}

        out[name] = {
            "support": int(support),
            "predicted": float(predicted.mean()),
            "recall": None if recall is None else spread(recall),
            "precision": None if not defined.any() else {**spread(precision), "seeds_defined": int(defined.sum())},
            "f1": spread(f1),
        }
    return out


def baselines(labels: np.ndarray, votes: np.ndarray, train_labels: np.ndarray, *, classes: Sequence[str],
              groups: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
              draws: int = _RANDOM_DRAWS) -> dict[str, dict[str, Any]]:
    """Models that know nothing about the images, scored like the model.

    * ``train_majority``: always the most frequent training class; its probabilities (for the
      agreement metrics) are the training class frequencies.
    * ``test_majority_oracle``: always the most frequent test label (an *oracle*: it peeks at the
      test labels); its probabilities are the test label frequencies.
    * ``stratified_random``: guesses drawn at random with the training class frequencies. ``mean`` is
      the score of its expected confusion matrix (each class's images spread over the training prior:
      exact for accuracy and balanced accuracy, a plug-in for macro-F1), ``ci95`` the bootstrap
      interval of that over the test set's groups, and ``std`` the spread of one random guesser
      between ``draws`` draws. Its cross-entropy is ``None`` (a hard guess of a class with no vote has infinite
      cross-entropy); its vote probability is the expected one.
    """
    labels, votes = np.asarray(labels), np.asarray(votes)
    k, m = votes.shape[1], len(labels)
    if len(train_labels) == 0:
        raise ValueError("train_labels is empty: the baselines need the training class frequencies")
    prior = np.bincount(np.asarray(train_labels), minlength=k) / len(train_labels)
    test_freq = np.bincount(labels, minlength=k) / max(m, 1)

    def constant(p: np.ndarray, description: str, **extra: Any) -> dict[str, Any]:
        scores = score_seeds(np.broadcast_to(p, (1, m, k)), labels, votes, classes=classes, groups=groups,
                             n_boot=n_boot, seed=seed)
        return {"description": description, "predicts": classes[int(np.argmax(p))],
                "probabilities": [float(x) for x in p], **extra, **scores}

    # The expected confusion of a random guesser: each true class's images spread over the prior.
    def expected(weights: np.ndarray) -> np.ndarray:  # (B, M) -> (3, B)
        counts = weights @ np.eye(k)[labels]  # (B, K) weighted true-class counts
        values = metrics_from_confusion(counts[:, :, None] * prior[None, None, :])
        return np.stack([values[name] for name in METRICS])

    point = expected(np.ones((1, m)))[:, 0]
    guesses = np.random.default_rng(seed + 1).choice(k, size=(draws, m), p=prior)  # (D, M)
    spread = metrics_from_confusion(confusions(labels, guesses, k))  # (D,) each
    cis = group_bootstrap(expected, groups, m, n_boot=n_boot, seed=seed)
    stratified: dict[str, Any] = {
        "description": "random guesses with the training class frequencies: the score of the expected "
                       f"confusion matrix, std over {draws} draws (how much one random guesser varies)",
        "probabilities": [float(x) for x in prior], "draws": int(draws)}
    for i, (name, ci) in enumerate(zip(METRICS, cis, strict=True)):
        values = spread[name][np.isfinite(spread[name])]
        stratified[name] = {"mean": float(point[i]), "std": float(values.std(ddof=1)) if values.size > 1 else None,
                            "ci95": ci}
    majority = constant(prior, "always the most frequent training class")
    stratified["agreement"] = {"vote_probability": majority["agreement"]["vote_probability"],
                               "soft_cross_entropy": None}
    return {
        "train_majority": majority,
        "test_majority_oracle": constant(test_freq, "always the most frequent test label (ORACLE: it peeks at "
                                                    "the test labels)", oracle=True),
        "stratified_random": stratified,
    }
