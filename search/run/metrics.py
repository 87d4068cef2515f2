"""One definition of each metric, from confusion matrices (pure numpy, no training).

``accuracy`` is the share right. ``macro_f1`` averages the F1 of *every* class of the dataset: a class
with no image in the split scores F1 0 (nothing to find; predicting it is a false positive), exactly
scikit-learn's ``f1_score(labels=range(K), average="macro", zero_division=0)``.
``balanced_accuracy`` averages the recall of the classes *present* in the split (an absent class has
no recall), as scikit-learn's ``balanced_accuracy_score``. Absent classes are never dropped silently:
they are listed in ``classes_absent``, and on AnkleAlign's consensus set (no Supination majority)
macro-F1 is at most 2/3. Cross-validation, the final step and ``score`` all use these definitions;
the intervals, baselines and the annotators' comparison are in :mod:`search.final.scoring`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chance_level", "METRICS", "absent_classes", "cell_codes", "confusion", "confusions",
           "metrics_from_confusion", "classification_metrics"]

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def absent_classes(labels: np.ndarray, num_classes: int) -> tuple[int, ...]:
    """The class ids with no image in ``labels`` (they lower macro-F1 and have no recall)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got values {sorted(set(labels.tolist()))}")
    present = np.bincount(labels.astype(np.int64), minlength=num_classes) > 0
    return tuple(int(c) for c in np.flatnonzero(~present))


def cell_codes(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Cell index ``true * K + predicted`` of each prediction, broadcast to ``y_pred``'s shape."""
    return np.broadcast_to(y_true, y_pred.shape).astype(np.int64) * num_classes + y_pred.astype(np.int64)


def confusions(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts for stacked predictions ``(..., M)`` -> ``(..., K, K)`` (row = true class)."""
    lead = y_pred.shape[:-1]
    k2 = num_classes * num_classes
    offsets = np.arange(int(np.prod(lead, dtype=np.int64)), dtype=np.int64).reshape(*lead, 1) * k2
    counts = np.bincount((offsets + cell_codes(y_true, y_pred, num_classes)).ravel(), minlength=offsets.size * k2)
    return counts.reshape(*lead, num_classes, num_classes)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """The (K, K) confusion matrix over all classes; row = true class, column = predicted class."""
    return confusions(np.asarray(y_true), np.asarray(y_pred), num_classes)


def metrics_from_confusion(c: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, balanced_accuracy, macro_f1 of stacked (possibly weighted) confusions ``(..., K, K)``.

    The one definition of each metric (module docstring); each value has the leading shape ``(...)``.
    """
    c = np.asarray(c, dtype=np.float64)
    tp = np.diagonal(c, axis1=-2, axis2=-1)  # (..., K)
    support, predicted = c.sum(-1), c.sum(-2)  # (..., K) true counts, predicted counts
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / np.where(present, support, 1.0)
        f1 = 2 * tp / np.maximum(support + predicted, 1e-12)  # = 2PR/(P+R); 0 when tp = 0 (and for 0/0)
        accuracy = tp.sum(-1) / support.sum(-1)
        balanced = np.where(present, recall, 0).sum(-1) / np.where(present.any(-1), present.sum(-1), np.nan)
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": f1.mean(-1)}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of one prediction vector over ``num_classes`` classes."""
    return {k: float(v) for k, v in metrics_from_confusion(confusion(y_true, y_pred, num_classes)).items()}


def chance_level(metric: str, prior: np.ndarray) -> float:
    """What an answer that ignores the image scores in ``metric`` at best, given the class frequencies ``prior``.

    Balanced accuracy: 1/K for any fixed guessing frequencies. Macro-F1: 1/K for guesses drawn with the class
    frequencies (each class's F1 is then its frequency), more than always answering one class. Accuracy: the
    majority class's frequency, what always answering it scores (on 80 % of one class, 0.8, not 1/K).
    """
    p = np.asarray(prior, dtype=np.float64)
    p = p / p.sum()
    if metric == "accuracy":
        return float(p.max())
    if metric in ("macro_f1", "balanced_accuracy"):
        return 1.0 / len(p)
    raise ValueError(f"unknown metric {metric!r} (valid: {', '.join(METRICS)})")
