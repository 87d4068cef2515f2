"""The best score any model can reach on a twin split: the Bayes classifier of its latent tilt.

The generator knows each picture's latent variables; of them only the shown tilt ``r`` carries the
class (pose, light, background, scale and blur are drawn independently of it). The Bayes
classifier that sees ``r`` predicts the most probable class given ``r``:

* against the **true classes** ``class(t)``, with ``t`` drawn from the split's tilt distribution (a
  mixture of uniform ranges) and ``r = t + N(0, presentation_noise)``: ``P(class(t) = c | r)`` in
  closed form (normal CDFs);
* against the **labels** people gave, each a reading ``class(r + bias + noise)``: the most probable
  reading of ``r``. For a majority of several readings (the consensus) the same rule is used: the
  most probable single reading, the natural plug-in.

Its accuracy and macro-F1 are estimated by Monte Carlo over the generator's own distributions, with
standard errors (binomial for accuracy, batch means for macro-F1). No model that sees only the pixels
beats its accuracy, except by chance; its macro-F1 is that of the accuracy-optimal rule, which a rule
tuned for macro-F1 can exceed by a little (0.003 on the hard training split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from anklealign.twin.draw import NEUTRAL_BAND

__all__ = ["Mixture", "ceiling", "chance_macro_f1"]

_BANDS = ((-math.inf, -NEUTRAL_BAND), (-NEUTRAL_BAND, NEUTRAL_BAND), (NEUTRAL_BAND, math.inf))  # class of a tilt
_BATCHES = 20


@dataclass(frozen=True)
class Mixture:
    """A tilt distribution: ``weights[k]`` of uniform tilts in ``ranges[k]``.

    ``shown_within[k]``, where given, selects component k's pictures by their shown tilt: only those
    with ``|r| <= shown_within[k]`` are kept (the consensus photos were chosen to look neutral).
    """

    weights: tuple[float, ...]
    ranges: tuple[tuple[float, float], ...]
    shown_within: tuple[float | None, ...] = ()

    def bound(self, k: int) -> float | None:
        return self.shown_within[k] if k < len(self.shown_within) else None

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(tilts, component of each): (n,), (n,)."""
        k = rng.choice(len(self.weights), size=n, p=np.asarray(self.weights) / sum(self.weights))
        lo, hi = np.asarray(self.ranges).T
        return rng.uniform(lo[k], hi[k]), k

    def sample_shown(self, rng: np.random.Generator, n: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """(true tilts, shown tilts), the shown ones redrawn where a component's selection refuses them."""
        t, k = self.sample(rng, n)
        r = t + sigma * rng.standard_normal(n)
        bounds = np.array([np.inf if self.bound(j) is None else self.bound(j) for j in range(len(self.weights))])
        for _ in range(1000):
            out = np.abs(r) > bounds[k]
            if not out.any():
                break
            r[out] = t[out] + sigma * rng.standard_normal(int(out.sum()))
        return t, np.clip(r, -bounds[k], bounds[k])

    def class_prior(self) -> list[float]:
        """Share of each true class (the tilt bands the ranges cover)."""
        prior = np.zeros(3)
        total = sum(self.weights)
        for w, (lo, hi) in zip(self.weights, self.ranges, strict=True):
            for c, (a, b) in enumerate(_BANDS):
                prior[c] += w / total * max(0.0, min(hi, b) - max(lo, a)) / (hi - lo)
        return [float(x) for x in prior]


def _tilt_class(t: np.ndarray) -> np.ndarray:
    return np.where(t < -NEUTRAL_BAND, 0, np.where(t > NEUTRAL_BAND, 2, 1))


def _posterior_true(r: np.ndarray, mix: Mixture, sigma: float) -> np.ndarray:
    """P(class(t) = c | r) up to a constant per row: (N, 3)."""
    out = np.zeros((len(r), 3))
    total = sum(mix.weights)
    for k, (w, (lo, hi)) in enumerate(zip(mix.weights, mix.ranges, strict=True)):
        bound = mix.bound(k)
        for c, (a, b) in enumerate(_BANDS):
            left, right = max(lo, a), min(hi, b)
            if right <= left:
                continue
            if bound is None:  # density of t uniform on [left, right] times N(r; t, sigma), integrated over t
                out[:, c] += w / total / (hi - lo) * (ndtr((r - left) / sigma) - ndtr((r - right) / sigma))
                continue
            # Selected on |r| <= bound: r given t is N(t, sigma) truncated to [-bound, bound], so each t
            # weighs N(r; t, sigma) / P(|r| <= bound | t); integrated numerically over t.
            grid = np.linspace(left, right, 201)  # (G,)
            keep = ndtr((bound - grid) / sigma) - ndtr((-bound - grid) / sigma)  # (G,)
            for start in range(0, len(r), 20_000):
                block = r[start:start + 20_000, None]  # (B, 1)
                dens = np.exp(-0.5 * ((block - grid) / sigma) ** 2) / keep  # (B, G)
                inside = (np.abs(block[:, 0]) <= bound)
                out[start:start + 20_000, c] += inside * w / total / (hi - lo) * np.trapezoid(dens, grid, axis=1) \
                    / (sigma * math.sqrt(2 * math.pi))
    return out


def _reading(r: np.ndarray, spread: float) -> np.ndarray:
    """P(class(r + N(0, spread)) = c): (N, 3)."""
    return np.stack([ndtr((b - r) / spread) - ndtr((a - r) / spread) for a, b in _BANDS], axis=1)


def _scores(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    conf = np.bincount(truth * 3 + pred, minlength=9).reshape(3, 3).astype(float)
    tp, support, predicted = np.diag(conf), conf.sum(1), conf.sum(0)
    f1 = 2 * tp / np.maximum(support + predicted, 1e-12)
    return float(tp.sum() / conf.sum()), float(f1.mean())


def _estimate(truth: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, float]]:
    acc, f1 = _scores(truth, pred)
    batches = [_scores(t, p)[1] for t, p in zip(np.array_split(truth, _BATCHES), np.array_split(pred, _BATCHES),
                                                 strict=True)]
    return {"accuracy": {"value": round(acc, 4), "se": round(math.sqrt(acc * (1 - acc) / len(truth)), 4)},
            "macro_f1": {"value": round(f1, 4), "se": round(float(np.std(batches, ddof=1)) / math.sqrt(_BATCHES), 4)}}


def ceiling(mix: Mixture, *, presentation_noise: float, reading_noise: float | None, readers: int = 1,
            relabel: dict[int, int] | None = None, n: int = 200_000, seed: int = 0) -> dict[str, object]:
    """Monte Carlo accuracy and macro-F1 (with standard errors) of the Bayes classifier of a split.

    Args:
        mix: the split's tilt distribution.
        presentation_noise: degrees between true and shown tilt.
        reading_noise: std in degrees of one person's reading of the shown tilt (bias and noise
            together); ``None`` for a split labelled with the true classes (the evaluation draw).
        readers: readings per label (1: one participant's label; k: the majority of k annotators).
        relabel: label classes that never occur, mapped to the class given instead (the consensus set
            has no supination majority: the generator ends such votes as neutral, ``{2: 1}``).
        n: Monte Carlo samples.
        seed: seed of the samples.

    Returns:
        ``{"vs_true": {...}, "vs_labels": {...} (when there are labels), "samples": n, "method": ...}``.
    """
    rng = np.random.default_rng([seed, 9])
    t, r = mix.sample_shown(rng, n, presentation_noise)
    truth = _tilt_class(t)
    out: dict[str, object] = {"samples": n, "vs_true": _estimate(truth, _posterior_true(r, mix,
                                                                                   presentation_noise).argmax(1))}
    if reading_noise is not None:
        reads = _tilt_class(r[:, None] + reading_noise * rng.standard_normal((n, readers)))  # (N, readers)
        tie_break = rng.random((n, 3)) * 0.5
        counts = np.stack([(reads == c).sum(1) for c in range(3)], axis=1) + tie_break
        labels = counts.argmax(1)
        pred = _reading(r, reading_noise).argmax(1)
        for src, dst in (relabel or {}).items():  # the vote first, then its relabelling: for both alike
            labels[labels == src] = dst
            pred[pred == src] = dst
        out["vs_labels"] = _estimate(labels, pred)
        out["label_noise"] = round(float((labels != truth).mean()), 4)
        out["label_prior"] = [round(float(x), 4) for x in np.bincount(labels, minlength=3) / n]
    out["method"] = ("Monte Carlo over the generator's tilt distribution; the classifier sees the shown tilt "
                     "(the only latent variable that carries the class) and predicts the most probable class")
    return out


def chance_macro_f1(truth_prior: Sequence[float], guess_prior: Sequence[float]) -> float:
    """Expected macro-F1 of guessing at random with ``guess_prior`` on a split with ``truth_prior``."""
    p, q = np.asarray(truth_prior, float), np.asarray(guess_prior, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + q > 0, 2 * p * q / (p + q), 0.0)
    return round(float(f1.mean()), 4)
