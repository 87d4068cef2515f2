"""Temperature scaling of the exported ensemble's probabilities, calibration metrics and their diagram.

**What.** One scalar ``T`` divides the logits: ``softmax(z / T)``. ``T > 1`` softens an over-confident
model, ``T < 1`` sharpens an under-confident one; the arg-max (so accuracy, balanced accuracy and
macro-F1 of :mod:`search.run.metrics`) never changes. An ensemble's averaged probabilities have no
logits of their own: their logarithm serves as the logits, ``softmax(log p / T)`` (``= p`` at ``T = 1``).

**Why.** The probabilities feed decisions after the argmax: the annotator agreement metrics of
:mod:`search.final.scoring` and the label-shift estimates of :mod:`search.final.shift`, which assume
calibrated posteriors. Small CNNs trained to a low training loss tend to be over-confident.

**How.** ``T`` minimises the mean negative log-likelihood (NLL) of *held-out* predictions: here the
out-of-fold (OOF) probabilities of the training pool, never the test set (fitting on the test set
would make the test metrics optimistic). It is searched on ``log T`` with bounded Brent
(:func:`scipy.optimize.minimize_scalar`), ``T`` in [0.05, 20]; the NLL is convex in ``1 / T``, so the
search has one minimum. ``T = 1`` is returned when no ``T`` lowers the NLL.

**Metrics** (:func:`calibration_metrics`): ``nll`` with the probability floor 1e-7 of
:mod:`search.final.scoring`'s cross-entropy; the multi-class ``brier`` score, mean over images of
``sum_k (p_k - y_k)^2`` (0 is perfect, 2 is the worst); ``ece``, the expected calibration error with
*equal-mass* bins: the images' confidences (max probability) are cut at their quantiles into
``n_bins`` bins of about equal size (tied confidences stay in one bin), and ``ece = sum_b n_b / N *
|accuracy_b - confidence_b|``. Equal-mass bins avoid the nearly empty high-error bins of equal-width
ones (Nixon et al. 2019, "Measuring Calibration in Deep Learning").

Reference: C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks",
ICML 2017.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special

from search.run.metrics import absent_classes
from search.study import atomic

__all__ = ["T_BOUNDS", "validate_probs", "validate_labels", "fit_temperature", "apply_temperature",
           "calibration_metrics", "reliability_figure", "reliability_png"]

T_BOUNDS = (0.05, 20.0)  # the temperatures searched
_NLL_FLOOR = 1e-7  # probability floor of the reported NLL (as search.final.scoring's cross-entropy)
# Floor of log p when probabilities serve as logits: float32's smallest normal number. A float32 network's
# softmax is exactly 0 below it, so a 0 is read as "at most this", a logit about 87 below the top one.
_LOG_FLOOR = float(np.finfo(np.float32).tiny)
_ROW_SUM_TOL = 1e-3  # rows of probabilities must sum to 1 within this (float32 ensembles are off by ~1e-6)


def validate_probs(probs: Any, *, name: str = "probs") -> np.ndarray:
    """Check ``(N, K)`` probabilities; return them as float64 with rows renormalised to sum exactly 1.

    Raises:
        ValueError: not a non-empty (N, K) array with K >= 2, a non-finite or negative value, or a row that
            does not sum to 1 within 1e-3 (e.g. logits passed as probabilities).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"{name} must be a non-empty (N, K) array with K >= 2 classes, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    sums = p.sum(1)
    if np.abs(sums - 1.0).max() > _ROW_SUM_TOL:
        row = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(f"each row of {name} must sum to 1 (probabilities, not logits): row {row} sums to "
                         f"{sums[row]:.6g}")
    return p / sums[:, None]


def validate_labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    """Check ``(N,)`` integer class ids in ``[0, K)``; return them as int64.

    Raises:
        ValueError: another length, non-integer values or a class id out of range.
    """
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the predictions, got {y.shape}")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise ValueError(f"labels must be integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    absent_classes(y, num_classes)  # raises ValueError for labels outside [0, K)
    return y


def _as_logits(probs_or_logits: Any, labels: Any, from_probs: bool) -> tuple[np.ndarray, np.ndarray]:
    if from_probs:
        z = np.log(np.maximum(validate_probs(probs_or_logits), _LOG_FLOOR))
    else:
        z = np.asarray(probs_or_logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
            raise ValueError(f"logits must be a non-empty (N, K) array with K >= 2 classes, got shape {z.shape}")
        if not np.isfinite(z).all():
            raise ValueError("logits must be finite")
    return z, validate_labels(labels, *z.shape)


def _nll_at(z: np.ndarray, y: np.ndarray, t: float) -> float:
    """Mean NLL of ``softmax(z / t)`` (exact log-softmax, no floor)."""
    scaled = z / t
    return float(np.mean(special.logsumexp(scaled, axis=1) - scaled[np.arange(len(y)), y]))


def fit_temperature(probs_or_logits: Any, labels: Any, *, from_probs: bool = True) -> float:
    """The temperature ``T`` that minimises the NLL of held-out predictions (Guo et al. 2017).

    Args:
        probs_or_logits: (N, K) held-out predictions: probabilities (``from_probs=True``; their log is
            used as the logits, a 0 as float32's smallest normal number) or logits.
        labels: (N,) true class ids.
        from_probs: whether ``probs_or_logits`` are probabilities.

    Returns:
        ``T`` in [0.05, 20] (a value at a bound means the optimum is there or beyond); 1.0 when the
        search does not lower the NLL below its value at ``T = 1`` (e.g. constant predictions).

    Raises:
        ValueError: invalid shapes or values (see :func:`validate_probs`, :func:`validate_labels`).
    """
    z, y = _as_logits(probs_or_logits, labels, from_probs)
    at_one = _nll_at(z, y, 1.0)
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = optimize.minimize_scalar(lambda s: _nll_at(z, y, float(np.exp(s))), bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-6})
    if not (res.success and np.isfinite(res.fun) and res.fun < at_one - 1e-12):
        return 1.0
    return float(np.exp(res.x))


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` of (N, K) probabilities, e.g. an ensemble average (a 0 stays about 0).

    Raises:
        ValueError: invalid probabilities or a temperature that is not a positive finite number.
    """
    p = validate_probs(probs)
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"the temperature must be a positive finite number, got {temperature!r}")
    return special.softmax(np.log(np.maximum(p, _LOG_FLOOR)) / t, axis=1)


def calibration_metrics(probs: Any, labels: Any, *, n_bins: int = 10) -> dict[str, Any]:
    """NLL, Brier score and equal-mass ECE of (N, K) probabilities, with the bins of a reliability diagram.

    Returns:
        ``{"nll", "brier", "ece", "accuracy", "confidence", "n_images", "n_bins",
        "bins": [{"confidence", "accuracy", "count"}, ...]}``: ``confidence`` is the mean max probability,
        ``bins`` are ordered by confidence (fewer than ``n_bins`` when confidences tie across a quantile).

    Raises:
        ValueError: invalid probabilities or labels, or ``n_bins < 1``.
    """
    p = validate_probs(probs)
    y = validate_labels(labels, *p.shape)
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    n = len(y)
    rows = np.arange(n)
    onehot = np.zeros_like(p)
    onehot[rows, y] = 1.0
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    edges = np.quantile(conf, np.linspace(0.0, 1.0, int(n_bins) + 1))
    which = np.searchsorted(edges[1:-1], conf, side="right")  # bin of each image, 0..n_bins-1
    bins, ece = [], 0.0
    for b in range(int(n_bins)):
        inside = which == b
        count = int(inside.sum())
        if count == 0:
            continue
        c, a = float(conf[inside].mean()), float(correct[inside].mean())
        ece += count / n * abs(a - c)
        bins.append({"confidence": c, "accuracy": a, "count": count})
    return {"nll": float(-np.log(np.maximum(p[rows, y], _NLL_FLOOR)).mean()),
            "brier": float(((p - onehot) ** 2).sum(1).mean()),
            "ece": float(ece),
            "accuracy": float(correct.mean()), "confidence": float(conf.mean()),
            "n_images": int(n), "n_bins": len(bins), "bins": bins}


def _curve(m: Mapping[str, Any], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bins = m.get("bins") if isinstance(m, Mapping) else None
    if not bins:
        raise ValueError(f"{name} must be a calibration_metrics() result with a non-empty 'bins' list")
    return (np.array([b["confidence"] for b in bins], dtype=np.float64),
            np.array([b["accuracy"] for b in bins], dtype=np.float64),
            np.array([b["count"] for b in bins], dtype=np.float64))


def reliability_png(path: Path | str, before: Mapping[str, Any], after: Mapping[str, Any], *, title: str,
                    labels: tuple[str, str] = ("before (uncalibrated)", "after temperature scaling")) -> Path:
    """A reliability diagram of two :func:`calibration_metrics` results, written atomically as a PNG.

    Top: accuracy against mean confidence per bin for both, with the diagonal of perfect calibration
    (below it = over-confident); the legend gives each one's ECE and NLL. Bottom: images per bin.
    Agg canvas, no pyplot state. Returns ``path``.
    """
    fig = reliability_figure(before, after, title=title, labels=labels)
    return atomic.write_with(path, lambda p: fig.savefig(p, format="png", dpi=120))


def reliability_figure(before: Mapping[str, Any], after: Mapping[str, Any], *, title: str,
                       labels: tuple[str, str] = ("before (uncalibrated)", "after temperature scaling")) -> Any:
    """The figure of :func:`reliability_png` (a matplotlib ``Figure`` on an Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from search.final.card import figure_title

    curves = [_curve(before, "before"), _curve(after, "after")]
    fig = Figure(figsize=(5.6, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], linestyle="--", color="0.55", linewidth=1, label="perfect calibration")
    styles = (("tab:red", "o", -0.006), ("tab:blue", "s", 0.006))
    for (conf, acc, count), m, label, (color, marker, shift) in zip(curves, (before, after), labels, styles,
                                                                     strict=True):
        top.plot(conf, acc, marker=marker, color=color, linewidth=1.5, markersize=5,
                 label=f"{label}: ECE {m.get('ece', float('nan')):.3f}, NLL {m.get('nll', float('nan')):.3f}")
        bottom.bar(conf + shift, count, width=0.012, color=color, alpha=0.8)
    top.set_xlim(0.0, 1.02)  # room for the markers of bins at confidence 1
    top.set_ylim(0.0, 1.02)
    top.set_ylabel("accuracy in the bin")
    figure_title(fig, title)
    top.legend(fontsize=7, loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_xlabel("confidence (max probability), mean in the bin; equal-mass bins")
    bottom.set_ylabel("images")
    bottom.grid(alpha=0.3)
    return fig
