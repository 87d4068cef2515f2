"""Probabilities a user can trust: calibration, label shift, vote-based evaluation, per-class intervals.

Each block is switched by a ``[final]`` key (default on) and is computed for the final step's test set
and for ``search score``'s folder alike:

* ``calibration``: one temperature fitted on the out-of-fold predictions of the exported trials
  (:mod:`search.final.calibration`; never the test set) and folded into the exported model; NLL, Brier
  score and equal-mass ECE before and after, on the out-of-fold predictions and on the scored images.
* ``label_shift``: the scored images' class prior estimated from the model's outputs *without their
  labels* (soft black-box shift estimation, Lipton et al. 2018, from the out-of-fold confusion; EM,
  Saerens et al. 2002, where no out-of-fold predictions exist; :mod:`search.final.shift`) with a 95 % interval,
  next to the true prior where labels exist, and a second, clearly labelled "prior-adjusted" set of
  metrics (the probabilities moved from the training prior to the estimated one) that never replaces
  the plain one.
* ``votes``: where images carry several votes, accuracy against the majority on the images without a
  tie, and separately on the tied ones (a prediction in the tied set counts as right).
* ``per_class``: precision and recall of each class with 95 % bootstrap intervals; classes absent from
  the scored images are named.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from search.final.calibration import T_BOUNDS, apply_temperature, calibration_metrics, fit_temperature
from search.final.scoring import group_bootstrap, score_seeds
from search.final.shift import adjust_to_prior, bbse_interval, effective_prior, prior_interval
from search.run.metrics import cell_codes

__all__ = ["CALIBRATED_TO", "at_bound", "fit_calibration", "trust_blocks", "per_class_intervals", "vote_accuracy"]


# What the temperature makes the probabilities mean: they are fitted to the training labels, which on this kind of
# data are one annotator's reading of each picture, so they describe what an annotator would answer.
CALIBRATED_TO = ("the training labels (one label per image as given; where labels are noisy the probabilities "
                 "describe what a labeller would answer, and are under-confident about the true class)")


def at_bound(temperature: float) -> bool:
    """Whether a fitted temperature sits at (within 1 % of) an end of :data:`T_BOUNDS`: the optimum is there or
    beyond, so the probabilities are not calibrated as the number suggests."""
    return any(abs(np.log(temperature / b)) < 0.01 for b in T_BOUNDS)


def fit_calibration(oof: np.ndarray | None, oof_labels: np.ndarray, *, enabled: bool,
                    exact: bool = True) -> dict[str, Any]:
    """The temperature of the exported model, fitted on its out-of-fold predictions (1.0 when off or none).

    ``exact``: whether the recorded out-of-fold probabilities keep small values (False for the uint8 records
    of older studies, whose zeros push the fit towards the upper bound): the block then says so.
    The block's ``warning`` is set when the temperature lands on a bound of :data:`T_BOUNDS`.
    """
    if not enabled:
        return {"enabled": False, "temperature": 1.0}
    if oof is None:
        return {"enabled": True, "temperature": 1.0,
                "note": "no out-of-fold predictions recorded for the exported trials: not calibrated"}
    t = fit_temperature(oof, oof_labels)
    out: dict[str, Any] = {
        "enabled": True, "temperature": t, "fitted_on": f"out-of-fold predictions of {len(oof_labels)} "
        "training images (mean of the exported trials'; never the test set)", "calibrated_to": CALIBRATED_TO,
        "exact_oof": bool(exact),
        "oof": {"before": _summary(calibration_metrics(oof, oof_labels)),
                "after": _summary(calibration_metrics(apply_temperature(oof, t), oof_labels))}}
    warnings_ = []
    if at_bound(t):
        warnings_.append(f"the temperature {t:.2f} sits at a bound of the search [{T_BOUNDS[0]}, {T_BOUNDS[1]}]: "
                         "the probabilities are not calibrated as that number suggests")
    if not exact:
        warnings_.append("approximate: this study stored its out-of-fold probabilities rounded to 1/255 (an older "
                         "format), so probabilities below 0.002 read as 0 and the temperature is only approximate")
    if warnings_:
        out["warning"] = "; ".join(warnings_)
    return out


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("nll", "brier", "ece", "bins", "n_images")}


def vote_accuracy(pred: np.ndarray, votes: np.ndarray) -> dict[str, Any]:
    """Accuracy of (M,) predictions against the vote majority, ties apart."""
    top = votes.max(1, keepdims=True)
    in_top = (votes == top) & (top > 0)
    tied = in_top.sum(1) > 1
    right = in_top[np.arange(len(pred)), pred]
    clear = ~tied
    return {"images_without_tie": int(clear.sum()),
            "accuracy_without_ties": float(right[clear].mean()) if clear.any() else None,
            "tied_images": int(tied.sum()),
            "accuracy_on_ties": float(right[tied].mean()) if tied.any() else None,
            "rule": "on a tie, a prediction of any of the tied classes counts as right"}


def per_class_intervals(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], *,
                        groups: np.ndarray | None, n_boot: int, seed: int) -> dict[str, Any]:
    """Precision, recall and support of each class (seed-mean) with 95 % bootstrap intervals."""
    k = len(classes)
    onehot = np.eye(k * k)[cell_codes(labels, probs.argmax(-1), k)]  # (S, M, K*K), built once

    def statistic(weights: np.ndarray) -> np.ndarray:  # (B, M) -> (2K, B)
        conf = np.einsum("bm,smx->sbx", weights, onehot).reshape(len(onehot), len(weights), k, k)
        tp = np.diagonal(conf, axis1=-2, axis2=-1)  # (S, B, K)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class never predicted: precision undefined
            precision = np.nanmean(tp / conf.sum(-2), axis=0)  # (B, K)
            recall = np.nanmean(tp / conf.sum(-1), axis=0)
        return np.concatenate([precision.T, recall.T])

    point = statistic(np.ones((1, len(labels))))[:, 0]
    cis = group_bootstrap(statistic, groups, len(labels), n_boot=n_boot, seed=seed)
    support = np.bincount(labels, minlength=k)
    out: dict[str, Any] = {}
    for i, name in enumerate(classes):
        p, r = point[i], point[k + i]
        out[name] = {"support": int(support[i]),
                     "precision": None if not np.isfinite(p) else {"mean": float(p), "ci95": cis[i]},
                     "recall": None if support[i] == 0 else {"mean": float(r), "ci95": cis[k + i]}}
    return {"classes": out, "absent": [c for c, s in zip(classes, support, strict=True) if s == 0],
            "note": "precision is undefined for a class never predicted; recall for a class absent from the images"}


def _shift_warning(estimate: Sequence[float], m: int) -> str | None:
    """All the mass on one class says more about the model than about the images (a class at 0 may be true)."""
    if max(estimate) > 0.99:
        return (f"the estimated prior puts everything on one class ({', '.join(f'{v:.3f}' for v in estimate)}) "
                f"on {m} images: the model's outputs carry too little information to estimate the class prior; "
                "do not read the prior-adjusted row")
    return None


def trust_blocks(probs: np.ndarray, labels: np.ndarray, votes: np.ndarray, *, calibration: dict[str, Any],
                 train_prior: np.ndarray, classes: Sequence[str], groups: np.ndarray | None, n_boot: int, seed: int,
                 label_shift: bool, votes_eval: bool, per_class: bool,
                 oof: tuple[np.ndarray, np.ndarray] | None = None, oof_groups: np.ndarray | None = None,
                 class_weighting: str = "none") -> dict[str, Any]:
    """The trust blocks for one set of scored images; ``probs`` (1, M, K) is the model's *uncalibrated* output.

    ``oof``: the exported trials' mean out-of-fold probabilities (calibrated) and the training labels; with them
    the prior is estimated by soft BBSE, without them by EM on the calibrated outputs. The prior adjustment and
    EM start from the model's effective prior (:func:`search.final.shift.effective_prior`: uniform for
    ``class_weighting = "inverse"``, else its mean out-of-fold output), not the label frequencies.
    """
    t = calibration.get("temperature", 1.0)
    calibrated = apply_temperature(probs[0], t)
    out: dict[str, Any] = {}
    if calibration.get("enabled"):
        out["calibration"] = {**calibration, "scored": {
            "before": _summary(calibration_metrics(probs[0], labels)),
            "after": _summary(calibration_metrics(calibrated, labels))}}
    if label_shift and (train_prior <= 0).any():
        out["label_shift"] = {"skipped": "a class has no training image, so no prior can be estimated or moved: "
                                         + ", ".join(c for c, p in zip(classes, train_prior, strict=True) if p <= 0)}
    elif label_shift:
        model_prior, prior_from = effective_prior(oof[0] if oof is not None else None, train_prior,
                                                  class_weighting=class_weighting)
        est = (bbse_interval(oof[0], oof[1], calibrated, n_boot=n_boot, seed=seed, groups=groups,
                             oof_groups=oof_groups) if oof is not None
               else prior_interval(calibrated, model_prior, n_boot=n_boot, seed=seed, groups=groups))
        true = np.bincount(labels, minlength=len(classes)) / max(len(labels), 1)
        adjusted = adjust_to_prior(calibrated, model_prior, np.asarray(est["estimate"]))
        out["label_shift"] = {
            "train_prior": dict(zip(classes, map(float, train_prior), strict=True)),
            "model_prior": dict(zip(classes, map(float, model_prior), strict=True)), "model_prior_from": prior_from,
            "estimated_prior": dict(zip(classes, map(float, est["estimate"]), strict=True)),
            "estimated_prior_ci95": dict(zip(classes, est["ci95"], strict=True)),
            "true_prior": dict(zip(classes, map(float, true), strict=True)),
            "method": est["method"], "uses_labels": False,
            "prior_adjusted": score_seeds(adjusted[None], labels, votes, classes=classes, groups=groups,
                                          n_boot=n_boot, seed=seed),
            "warning": _shift_warning(est["estimate"], len(labels)),
            "note": "PRIOR-ADJUSTED: the model's probabilities moved from the prior it learnt under to the prior "
                    "estimated from the unlabelled images; the plain metrics are the ones above"}
    if votes_eval and (votes.sum(1) > 1).any():
        out["votes"] = vote_accuracy(calibrated.argmax(-1), votes)
    if per_class:
        out["per_class"] = per_class_intervals(probs, labels, classes, groups=groups, n_boot=n_boot, seed=seed)
    return out
