"""Test-set metrics with honest uncertainty: seeds, bootstrap intervals, baselines, human annotators.

Pure numpy (no training). Conventions used everywhere in this module:

* **Classes scored.** Accuracy needs no choice; balanced accuracy and macro-F1 average over the
  classes *present in the test set's majority labels* only (``classes_scored``). An absent class
  (on AnkleAlign no image has a Supination majority) is left out of the averages, because its
  recall is undefined; a prediction of it still counts as an error (a false negative of the true
  class). Inside a bootstrap resample a scored class that happens to be missing from the resample
  is left out of that resample's averages the same way.
* **Seeds.** Every metric is computed per seed; ``mean`` and ``std`` (sample std, ``None`` for one
  seed) are over seeds, ``per_seed`` lists them.
* **Intervals.** ``ci95`` is a percentile bootstrap over test images for the seed-mean metric:
  resample the images with replacement (the same resample for every seed), recompute each seed's
  metric, average over seeds; 2.5 and 97.5 percentiles. Seeded, so reruns give the same interval.
* **Agreement with the annotators.** With votes ``V`` (M, K) and the soft label ``V / V.sum``:
  ``vote_probability`` = mean over images of ``sum_k P[k] * V[k] / sum(V)``, the chance that the
  model's answer (sampled from P) matches a randomly chosen annotator; ``soft_cross_entropy`` =
  mean of ``-sum_k soft[k] * log(max(P[k], 1e-7))`` in nats (lower is better).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "scored_classes",
    "confusion",
    "classification_metrics",
    "score_seeds",
    "baselines",
    "annotator_agreement",
]

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
_EPS = 1e-7  # probability floor of the cross-entropy (a hard 0 would make it infinite)
_CHUNK = 100  # bootstrap resamples per vectorised step (bounds memory on large test sets)


def scored_classes(labels: np.ndarray, num_classes: int) -> tuple[int, ...]:
    """The class ids that occur in ``labels``: the classes balanced accuracy and macro-F1 average over."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got values {sorted(set(labels.tolist()))}")
    return tuple(int(c) for c in np.unique(labels))


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts for stacked label arrays ``(..., M)`` -> ``(..., K, K)`` (row = true class)."""
    lead = y_pred.shape[:-1]
    y_true = np.broadcast_to(y_true, y_pred.shape)
    k2 = num_classes * num_classes
    offsets = np.arange(int(np.prod(lead, dtype=np.int64)), dtype=np.int64).reshape(*lead, 1) * k2
    code = offsets + y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)  # (..., M)
    counts = np.bincount(code.ravel(), minlength=offsets.size * k2)
    return counts.reshape(*lead, num_classes, num_classes)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """The (K, K) confusion matrix over all classes; row = true class, column = predicted class."""
    return _confusions(np.asarray(y_true), np.asarray(y_pred), num_classes)


def _from_confusion(c: np.ndarray, scored: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, balanced_accuracy, macro_f1 of stacked confusions ``(..., K, K)`` -> each ``(...)``.

    ``scored`` (K,) bool masks the classes that may enter the averages; a class also needs support.
    """
    c = c.astype(np.float64)
    tp = np.diagonal(c, axis1=-2, axis2=-1)  # (..., K)
    support, predicted = c.sum(-1), c.sum(-2)  # (..., K) true counts, predicted counts
    present = (support > 0) & scored
    n_present = present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / np.maximum(support, 1)
        f1 = 2 * tp / np.maximum(support + predicted, 1)  # = 2PR/(P+R); 0 when tp = 0
        accuracy = tp.sum(-1) / support.sum(-1)
        balanced = np.where(present, recall, 0).sum(-1) / np.where(n_present > 0, n_present, np.nan)
        macro_f1 = np.where(present, f1, 0).sum(-1) / np.where(n_present > 0, n_present, np.nan)
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": macro_f1}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int,
                           scored: Sequence[int] | None = None) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of one prediction vector.

    Args:
        y_true: (M,) true class ids.
        y_pred: (M,) predicted class ids.
        num_classes: K.
        scored: classes averaged over (default: those present in ``y_true``).
    """
    scored = scored_classes(y_true, num_classes) if scored is None else scored
    values = _from_confusion(confusion(y_true, y_pred, num_classes), _mask(scored, num_classes))
    return {k: float(v) for k, v in values.items()}


def _mask(scored: Sequence[int], num_classes: int) -> np.ndarray:
    mask = np.zeros(num_classes, dtype=bool)
    mask[list(scored)] = True
    return mask


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


def _summary(per_seed: np.ndarray, boot: np.ndarray | None) -> dict[str, Any]:
    """{"mean", "std", "ci95", "per_seed"} of one metric (NaN -> None so the JSON stays strict)."""
    per_seed = np.asarray(per_seed, dtype=np.float64)
    finite = per_seed[np.isfinite(per_seed)]
    ci = None
    if boot is not None and np.isfinite(boot).any():
        lo, hi = np.nanpercentile(boot, [2.5, 97.5])
        ci = [float(lo), float(hi)]
    return {"mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
            "ci95": ci,
            "per_seed": [float(v) if np.isfinite(v) else None for v in per_seed]}


def _per_class(conf: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class precision and recall over seeds; ``None`` where undefined (no support / never predicted)."""
    out: dict[str, Any] = {}
    for k, name in enumerate(classes):
        tp = conf[:, k, k].astype(np.float64)  # (S,)
        support, predicted = conf[0, k, :].sum(), conf[:, :, k].sum(-1)
        recall = tp / support if support > 0 else None
        defined = predicted > 0
        precision = tp[defined] / predicted[defined]
        out[name] = {
            "support": int(support),
            "predicted": float(predicted.mean()),
            "recall": None if recall is None else {"mean": float(recall.mean()),
                                                   "std": float(recall.std(ddof=1)) if len(recall) > 1 else None},
            "precision": None if not defined.any() else {
                "mean": float(precision.mean()),
                "std": float(precision.std(ddof=1)) if len(precision) > 1 else None,
                "seeds_defined": int(defined.sum())},
        }
    return out


def score_seeds(probs: np.ndarray, labels: np.ndarray, votes: np.ndarray, *, classes: Sequence[str],
                n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every test-set metric of per-seed probabilities, with seed spread and bootstrap intervals.

    Args:
        probs: (S, M, K) class probabilities, one row block per seed (S = 1 for one model).
        labels: (M,) majority labels.
        votes: (M, K) vote counts (one-hot of ``labels`` for an image-folder dataset).
        classes: K class names.
        n_boot: bootstrap resamples over images (0 = no intervals).
        seed: seed of the resampling.

    Returns:
        ``{"accuracy", "balanced_accuracy", "macro_f1": {"mean", "std", "ci95", "per_seed"},
        "agreement": {"vote_probability", "soft_cross_entropy": {...same...}},
        "per_class": {name: {"support", "predicted", "recall", "precision"}},
        "confusion": seed-mean (K, K), "classes_scored": [names], "n_images", "n_seeds"}``.
    """
    probs, labels, votes = np.asarray(probs, np.float64), np.asarray(labels), np.asarray(votes)
    if probs.ndim != 3 or probs.shape[1:] != votes.shape or labels.shape != probs.shape[1:2]:
        raise ValueError(f"expected probs (S, M, K), labels (M,), votes (M, K); got {probs.shape}, "
                         f"{labels.shape}, {votes.shape}")
    k = probs.shape[2]
    if len(classes) != k:
        raise ValueError(f"got {len(classes)} class names for {k} classes")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    scored = scored_classes(labels, k)
    mask = _mask(scored, k)
    pred = probs.argmax(-1)  # (S, M)
    conf = _confusions(labels, pred, k)  # (S, K, K)
    point = _from_confusion(conf, mask)
    vote_prob, cross_entropy = _agreement(probs, votes)  # (S, M) each
    boot = _bootstrap(labels, pred, {"vote_probability": vote_prob, "soft_cross_entropy": cross_entropy},
                      mask=mask, num_classes=k, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {name: _summary(point[name], boot.get(name)) for name in METRICS}
    out["agreement"] = {
        "vote_probability": _summary(np.nanmean(vote_prob, -1), boot.get("vote_probability")),
        "soft_cross_entropy": _summary(np.nanmean(cross_entropy, -1), boot.get("soft_cross_entropy")),
    }
    out["per_class"] = _per_class(conf, classes)
    out["confusion"] = np.round(conf.mean(0), 3).tolist()
    out["classes_scored"] = [classes[c] for c in scored]
    out["n_images"], out["n_seeds"] = int(len(labels)), int(len(probs))
    return out


def _bootstrap(labels: np.ndarray, pred: np.ndarray, per_image: Mapping[str, np.ndarray], *,
               mask: np.ndarray, num_classes: int, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Seed-mean metric of each resample: name -> (n_boot,). Empty when ``n_boot`` is 0."""
    if n_boot == 0 or len(labels) == 0:
        return {}
    rng = np.random.default_rng(seed)
    m = len(labels)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, _CHUNK):
        idx = rng.integers(0, m, size=(min(_CHUNK, n_boot - start), m))  # (b, M)
        values = _from_confusion(_confusions(labels[idx], pred[:, idx], num_classes), mask)  # (S, b) each
        for name, v in per_image.items():
            values[name] = np.nanmean(v[:, idx], -1)  # (S, b)
        for name, v in values.items():
            parts.setdefault(name, []).append(np.nanmean(v, 0))
    return {name: np.concatenate(v) for name, v in parts.items()}


def baselines(labels: np.ndarray, votes: np.ndarray, train_labels: np.ndarray, *, classes: Sequence[str],
              n_boot: int = 1000, seed: int = 0, draws: int = 1000) -> dict[str, dict[str, Any]]:
    """Models that know nothing about the images, scored like the model.

    * ``train_majority``: always the most frequent training class; its probabilities (for the
      agreement metrics) are the training class frequencies.
    * ``test_majority_oracle``: always the most frequent test majority label (an *oracle*: it peeks
      at the test labels); its probabilities are the test label frequencies.
    * ``stratified_random``: guesses drawn at random with the training class frequencies; ``mean``
      and ``std`` are over ``draws`` draws on the test set (the expected value), ``ci95`` bootstraps
      images with a fresh draw per resample. Its cross-entropy is ``None`` (a hard guess of a class
      with no vote has infinite cross-entropy); its vote probability is the expected one.
    """
    labels, votes = np.asarray(labels), np.asarray(votes)
    k, m = votes.shape[1], len(labels)
    if len(train_labels) == 0:
        raise ValueError("train_labels is empty: the baselines need the training class frequencies")
    prior = np.bincount(np.asarray(train_labels), minlength=k) / len(train_labels)
    test_freq = np.bincount(labels, minlength=k) / max(m, 1)

    def constant(p: np.ndarray, description: str, **extra: Any) -> dict[str, Any]:
        scores = score_seeds(np.broadcast_to(p, (1, m, k)), labels, votes, classes=classes, n_boot=n_boot,
                             seed=seed)
        return {"description": description, "predicts": classes[int(np.argmax(p))],
                "probabilities": [float(x) for x in p], **extra, **scores}

    rng = np.random.default_rng(seed + 1)
    mask = _mask(scored_classes(labels, k), k)
    guesses = rng.choice(k, size=(draws, m), p=prior)  # (D, M)
    point = _from_confusion(_confusions(labels, guesses, k), mask)  # (D,) each
    boot: dict[str, np.ndarray] = {}
    if n_boot > 0 and m > 0:
        idx = rng.integers(0, m, size=(n_boot, m))
        boot = _from_confusion(_confusions(labels[idx], rng.choice(k, size=(n_boot, m), p=prior), k), mask)
    stratified: dict[str, Any] = {"description": "random guesses with the training class frequencies "
                                                 f"(expected value over {draws} draws)",
                                  "probabilities": [float(x) for x in prior], "draws": int(draws)}
    for name in METRICS:
        summary = _summary(point[name], boot.get(name))
        summary.pop("per_seed")  # the std over draws stays: how much one random guesser varies
        stratified[name] = summary
    majority = constant(prior, "always the most frequent training class")
    stratified["agreement"] = {"vote_probability": majority["agreement"]["vote_probability"],
                               "soft_cross_entropy": None}
    return {
        "train_majority": majority,
        "test_majority_oracle": constant(test_freq, "always the most frequent test label (ORACLE: it peeks at "
                                                    "the test labels)", oracle=True),
        "stratified_random": stratified,
    }


def annotator_agreement(annotator_labels: np.ndarray, *, annotators: Sequence[str], num_classes: int,
                        model_accuracy: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The average human annotator, scored against the majority of the *other* annotators.

    For annotator ``a`` and image ``m`` that ``a`` labelled, the reference is the majority of the
    other annotators' labels of ``m`` (leave-one-out, so nobody is graded against their own vote).
    A tie among the others' top classes is skipped (counted in ``ties_skipped``), as is an image nobody
    else labelled. (The ingest's reliability-weighted tie-break is not used here: its weights come from
    every annotator's agreement with the majority, including the annotator being graded.)
    ``vote_agreement`` is the mean fraction of the other annotators who gave the same label
    (comparable with the model's ``vote_probability``). ``rank`` counts the annotators with a strictly
    higher accuracy, plus one.

    Args:
        annotator_labels: (A, M) class ids, -1 = that annotator gave no label.
        annotators: A annotator codes.
        num_classes: K.
        model_accuracy: name -> a model's test accuracy (against the full majority); each gets a
            ``rank`` among the annotators' accuracies (1 = better than every annotator).

    Returns:
        ``{"available", "tie_rule", "per_annotator": [...], "accuracy": {"mean", "min", "max", "std"},
        "vote_agreement": {...}, "n_annotators", "model_rank": {name: {"accuracy", "rank", "of"}}}``.
    """
    a_labels = np.asarray(annotator_labels, dtype=np.int64)
    if a_labels.ndim != 2 or a_labels.shape[0] != len(annotators):
        raise ValueError(f"annotator_labels must be (A, M) with A = {len(annotators)}, got {a_labels.shape}")
    if a_labels.shape[0] < 2:
        return {"available": False, "reason": "fewer than two annotators (e.g. an image-folder dataset): "
                                              "no human baseline"}
    given = a_labels >= 0  # (A, M)
    onehot = (a_labels[..., None] == np.arange(num_classes)) & given[..., None]  # (A, M, K)
    others = onehot.sum(0, keepdims=True) - onehot  # (A, M, K) the other annotators' votes
    n_others = others.sum(-1)
    top = others.max(-1)
    unique_top = (others == top[..., None]).sum(-1) == 1
    reference = others.argmax(-1)  # (A, M) leave-one-out majority
    scored = given & (n_others > 0) & unique_top
    correct = scored & (a_labels == reference)
    same = np.take_along_axis(others, np.clip(a_labels, 0, None)[..., None], -1)[..., 0]  # (A, M)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_same = np.where(given & (n_others > 0), same / np.maximum(n_others, 1), np.nan)
    rows: list[dict[str, Any]] = []
    for i, code in enumerate(annotators):
        n = int(scored[i].sum())
        agree = frac_same[i][np.isfinite(frac_same[i])]
        rows.append({"annotator": code, "labelled": int(given[i].sum()), "scored": n,
                     "ties_skipped": int((given[i] & (n_others[i] > 0) & ~unique_top[i]).sum()),
                     "accuracy": float(correct[i].sum() / n) if n else None,
                     "vote_agreement": float(agree.mean()) if agree.size else None})
    accs = np.array([r["accuracy"] for r in rows if r["accuracy"] is not None])
    agrees = np.array([r["vote_agreement"] for r in rows if r["vote_agreement"] is not None])
    out: dict[str, Any] = {
        "available": True,
        "tie_rule": "leave-one-out majority of the other annotators; images where it is a tie are skipped",
        "n_annotators": int(len(accs)),
        "accuracy": _spread(accs),
        "vote_agreement": _spread(agrees),
        "per_annotator": rows,
    }
    if model_accuracy:
        out["model_rank"] = {name: {"accuracy": float(acc), "rank": int(1 + (accs > acc).sum()),
                                    "of": int(len(accs) + 1)} for name, acc in model_accuracy.items()}
    return out


def _spread(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else None,
            "min": float(values.min()), "max": float(values.max())}
