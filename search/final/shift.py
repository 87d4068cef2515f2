"""Label shift: the test set's class prior estimated from unlabelled predictions, and posteriors adjusted to it.

**What.** Under *label shift* the class prior changes between the training pool and the test set
(``q(y) != p(y)``) while the images of a class look the same (``q(x | y) = p(x | y)``). Then the model's
posteriors, learnt under the training prior ``p(y)``, convert to the test prior by Bayes' rule
(:func:`adjust_to_prior`): ``q(y | x) ∝ p(y | x) * q(y) / p(y)``.

**Why.** AnkleAlign's classes are not equally frequent, and a test set collected elsewhere need not
share the training pool's frequencies. The estimated test prior (with its interval) says whether the
test set's mix differs from the training pool's, without reading any test label.

**How.**

* :func:`em_prior`: the EM algorithm of M. Saerens, P. Latinne, C. Decaestecker, "Adjusting the Outputs
  of a Classifier to New a Priori Probabilities: A Simple Procedure", Neural Computation 14 (2002).
  E-step: each test image's posterior re-weighted to the current prior estimate; M-step: the prior is
  the mean of those posteriors. It converges to the maximum-likelihood test prior (the likelihood is
  concave in the prior). It needs *calibrated* posteriors: apply the temperature of
  :mod:`search.final.calibration` (fitted on out-of-fold predictions) first.
* :func:`bbse_prior`: black-box shift estimation, Z. C. Lipton, Y.-X. Wang, A. J. Smola, "Detecting and
  Correcting for Label Shift with Black Box Predictors", ICML 2018: with ``C[i, j] = p(ŷ = i, y = j)``
  from out-of-fold predictions and ``mu[i] = q(ŷ = i)`` from the test predictions, the importance
  weights solve ``C w = mu`` and ``q(y) = w(y) p(y)``. It needs no calibration, only an invertible
  confusion matrix; negative weights are clipped to 0 and the prior renormalised.
* :func:`prior_interval`: the EM estimate with 95 % intervals from :func:`search.final.scoring.group_bootstrap`
  (percentile bootstrap over the test images, or over their duplicate groups).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from search.final.calibration import validate_labels, validate_probs
from search.final.scoring import group_bootstrap, resample_weights
from search.run.metrics import confusion

__all__ = ["validate_prior", "em_prior", "bbse_prior", "prior_interval", "bbse_interval", "adjust_to_prior",
           "effective_prior"]

_CHUNK = 2_000_000  # resamples x images per block of the vectorised EM (bounds its memory)


def validate_prior(prior: Any, num_classes: int, *, name: str = "train_prior", positive: bool = True) -> np.ndarray:
    """Check a (K,) class prior; return it as float64 normalised to sum 1.

    Raises:
        ValueError: another length, a non-finite or negative value (or a zero where ``positive``), a zero sum.
    """
    q = np.asarray(prior, dtype=np.float64)
    if q.shape != (num_classes,):
        raise ValueError(f"{name} must have shape ({num_classes},) to match the {num_classes} classes of the "
                         f"probabilities, got {q.shape}")
    if not np.isfinite(q).all() or (q < 0).any() or q.sum() <= 0:
        raise ValueError(f"{name} must be finite, non-negative and not all 0, got {q.tolist()}")
    if positive and (q == 0).any():
        raise ValueError(f"{name} must be positive for every class (the posteriors are divided by it), "
                         f"got {q.tolist()}")
    return q / q.sum()


def _em(ratio: np.ndarray, weights: np.ndarray, start: np.ndarray, *, tol: float,
        max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Saerens' EM for ``B`` weightings of the images at once.

    Args:
        ratio: (M, K) ``p(y | x) / p(y)``, proportional to the class likelihoods ``p(x | y)``.
        weights: (B, M) how often each image counts (bootstrap resamples; ones for the plain estimate).
        start: (K,) the prior the iterations start from.

    Returns:
        (B, K) priors and (B,) whether each converged (largest change of a class's prior below ``tol``).
    """
    b = len(weights)
    prior = np.tile(start, (b, 1))
    done = np.zeros(b, dtype=bool)
    total = weights.sum(1)[:, None]  # (B, 1)
    for _ in range(max_iter):
        active = np.flatnonzero(~done)
        if active.size == 0:
            break
        w, pr = weights[active], prior[active]
        mixture = pr @ ratio.T  # (B', M) sum_k prior_k * ratio_mk, the image's likelihood up to a constant
        share = np.divide(w, mixture, out=np.zeros_like(w), where=(w > 0) & (mixture > 0))
        new = pr * (share @ ratio) / total[active]  # (B', K) = weighted mean of the re-weighted posteriors
        done[active] = np.abs(new - pr).max(1) < tol
        prior[active] = new
    return prior, done


def _em_blocks(ratio: np.ndarray, weights: np.ndarray, start: np.ndarray, *, tol: float,
               max_iter: int) -> np.ndarray:
    """:func:`_em` over blocks of resamples, so that ``B x M`` stays bounded: (B, M) -> (B, K)."""
    step = max(1, _CHUNK // max(ratio.shape[0], 1))
    return np.concatenate([_em(ratio, weights[i:i + step], start, tol=tol, max_iter=max_iter)[0]
                           for i in range(0, len(weights), step)])


def _check_em(probs: Any, train_prior: Any, tol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    p = validate_probs(probs)
    prior = validate_prior(train_prior, p.shape[1])
    if not (tol > 0 and int(max_iter) == max_iter and max_iter >= 1):
        raise ValueError(f"tol must be > 0 and max_iter a positive integer, got tol={tol!r}, max_iter={max_iter!r}")
    return p, prior


def em_prior(probs: Any, train_prior: Any, *, tol: float = 1e-6, max_iter: int = 1000) -> np.ndarray:
    """The test prior by Saerens et al.'s EM, from unlabelled (calibrated) test probabilities.

    Args:
        probs: (M, K) posteriors of the test images under the training prior (calibrated).
        train_prior: (K,) class frequencies of the training pool the model was fitted on (all positive).
        tol: stop when no class's prior moves by more than this in one iteration.
        max_iter: at most this many iterations (a RuntimeWarning when they do not converge).

    Returns:
        (K,) estimated test prior, summing to 1.

    Raises:
        ValueError: invalid shapes or values.
    """
    p, prior = _check_em(probs, train_prior, tol, max_iter)
    estimate, done = _em(p / prior, np.ones((1, len(p))), prior, tol=tol, max_iter=int(max_iter))
    if not done[0]:
        warnings.warn(f"the EM estimate of the test prior did not converge in {max_iter} iterations (tol {tol})",
                      RuntimeWarning, stacklevel=2)
    return estimate[0] / estimate[0].sum()


def _soft_joint(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """BBSE's soft confusion ``C[i, j] = mean over images of p_i * [y = j]`` (row = predicted, column = true)."""
    return (probs.T @ np.eye(k)[labels]) / len(labels)


def bbse_prior(oof_probs: Any, oof_labels: Any, test_probs: Any, *, soft: bool = False) -> np.ndarray:
    """The test prior by black-box shift estimation (Lipton et al. 2018) from held-out predictions.

    Args:
        oof_probs: (N, K) out-of-fold probabilities of the training pool.
        oof_labels: (N,) their labels; their frequencies are the training prior ``p(y)``.
        test_probs: (M, K) test probabilities (unlabelled).
        soft: use the probabilities instead of the arg-max predictions (the soft confusion matrix
            ``C[i, j] = mean over images of class j of p_i``, times ``p(y = j)``).

    Returns:
        (K,) estimated test prior: ``w = argmin |C w - mu|`` (least squares, so a singular ``C`` is
        tolerated), clipped at 0, ``q = w * p(y)`` normalised. Falls back to ``p(y)`` when all weights clip.

    Raises:
        ValueError: invalid shapes or values.
    """
    p_train = validate_probs(oof_probs, name="oof_probs")
    k = p_train.shape[1]
    y = validate_labels(oof_labels, len(p_train), k)
    p_test = validate_probs(test_probs, name="test_probs")
    if p_test.shape[1] != k:
        raise ValueError(f"test_probs has {p_test.shape[1]} classes, oof_probs {k}")
    if soft:
        joint = _soft_joint(p_train, y, k)
        mu = p_test.mean(0)
    else:
        joint = confusion(y, p_train.argmax(1), k).T / len(y)  # metrics' confusion is row = true: transpose
        mu = np.bincount(p_test.argmax(1), minlength=k) / len(p_test)
    train_prior = joint.sum(0)
    w = np.clip(np.linalg.lstsq(joint, mu, rcond=None)[0], 0.0, None)
    q = w * train_prior
    return q / q.sum() if q.sum() > 0 else train_prior


def prior_interval(probs: Any, train_prior: Any, *, n_boot: int, seed: int, groups: Any = None,
                   tol: float = 1e-6, max_iter: int = 1000) -> dict[str, Any]:
    """The EM estimate of the test prior with a 95 % bootstrap interval per class.

    The resampled unit is the test image, or its duplicate group when ``groups`` is given (as in
    :func:`search.final.scoring.score_seeds`); each resample's EM starts from the full-sample estimate.

    Args:
        probs: (M, K) calibrated test probabilities; train_prior: (K,) training class frequencies.
        n_boot: bootstrap resamples (0 = no intervals); seed: seed of the resampling.
        groups: (M,) group ids of the test images (None: each image is its own group).

    Returns:
        ``{"estimate": [K], "ci95": [[lo, hi] or None, ...K], "train_prior": [K], "method": str,
        "converged": bool, "n_images": M, "n_boot": n_boot}``.

    Raises:
        ValueError: invalid shapes or values.
    """
    p, prior = _check_em(probs, train_prior, tol, max_iter)
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    ratio, m = p / prior, len(p)
    point, done = _em(ratio, np.ones((1, m)), prior, tol=tol, max_iter=int(max_iter))
    estimate = point[0] / point[0].sum()

    def statistic(weights: np.ndarray) -> np.ndarray:  # (B, M) image weights -> (K, B) priors
        return _em_blocks(ratio, weights, estimate, tol=tol, max_iter=int(max_iter)).T

    # Percentile, not BCa: a class's prior can be estimated at 0 (the consensus set has no supination), where
    # BCa's bias correction produced an interval that excluded the estimate itself ([0.24, 0.26] around 0).
    cis = group_bootstrap(statistic, groups, m, n_boot=int(n_boot), seed=seed, method="percentile")
    unit = "duplicate groups of the test images" if groups is not None else "test images"
    return {"estimate": [float(v) for v in estimate], "ci95": cis,
            "train_prior": [float(v) for v in prior],
            "method": f"EM (Saerens, Latinne & Decaestecker 2002) on unlabelled test probabilities; 95 % percentile "
                      f"bootstrap over {unit}",
            "converged": bool(done[0]), "n_images": int(m), "n_boot": int(n_boot)}


def bbse_interval(oof_probs: Any, oof_labels: Any, test_probs: Any, *, n_boot: int, seed: int,
                  groups: Any = None, oof_groups: Any = None) -> dict[str, Any]:
    """The soft BBSE estimate of the test prior with a 95 % percentile bootstrap interval per class.

    Both of its inputs are samples, so both are resampled, independently, on every bootstrap draw: the
    out-of-fold images (with their labels; by duplicate group with ``oof_groups``), which give the confusion
    matrix, and the test images (by ``groups``), which give the mean output. Holding the confusion fixed, as
    earlier versions did, left its sampling error out of the interval. BBSE needs no calibration (Lipton et al.
    2018): on the twin's draw with the consensus set's prior it recovered (0.13, 0.87, 0.00) for a true
    (0.12, 0.88, 0.00) where EM on the calibrated outputs gave (0.02, 0.98, 0.00).
    """
    p_train = validate_probs(oof_probs, name="oof_probs")
    k = p_train.shape[1]
    y = validate_labels(oof_labels, len(p_train), k)
    p_test = validate_probs(test_probs, name="test_probs")
    onehot = np.eye(k)[y]

    def solve(joint: np.ndarray, mu: np.ndarray) -> np.ndarray:  # (B, K, K), (B, K) -> (B, K) priors
        prior = joint.sum(1)  # (B, K) the label frequencies of each resample of the pool
        w = np.einsum("bij,bj->bi", np.linalg.pinv(joint), mu)  # least squares, a singular C tolerated
        q = np.clip(w, 0.0, None) * prior
        total = q.sum(1, keepdims=True)
        return np.where(total > 0, q / np.where(total > 0, total, 1.0), prior)

    def joints(weights: np.ndarray) -> np.ndarray:  # (B, N) -> (B, K, K) soft confusions C[i, j] = p(ŷ=i, y=j)
        return np.einsum("bn,ni,nj->bij", weights, p_train, onehot) / weights.sum(1)[:, None, None]

    estimate = solve(_soft_joint(p_train, y, k)[None], p_test.mean(0, keepdims=True))[0]
    cis: list[list[float] | None] = [None] * k
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        w_oof = resample_weights(oof_groups, len(y), int(n_boot), rng)
        w_test = resample_weights(groups, len(p_test), int(n_boot), rng)
        draws = solve(joints(w_oof), (w_test @ p_test) / w_test.sum(1, keepdims=True))  # (B, K)
        lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
        cis = [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)]
    unit = "duplicate groups of the test images" if groups is not None else "test images"
    return {"estimate": [float(v) for v in estimate], "ci95": cis,
            "train_prior": [float(v) for v in onehot.mean(0)],
            "method": "soft black-box shift estimation (Lipton, Wang & Smola 2018) from the out-of-fold confusion; "
                      f"95 % percentile bootstrap over the out-of-fold images and the {unit}, resampled together",
            "n_images": len(p_test), "n_boot": int(n_boot)}


def effective_prior(oof_probs: Any, train_prior: Any, *, class_weighting: str = "none") -> tuple[np.ndarray, str]:
    """The class prior a model's posteriors were learnt under, which a prior adjustment divides by.

    A model trained with inverse class weights learns as if the classes were equally frequent: uniform. Otherwise
    its mean out-of-fold output (what it actually predicts on images it did not train on), or the training label
    frequencies when there are no out-of-fold predictions. Returns the prior and where it came from.
    """
    prior = validate_prior(train_prior, len(np.asarray(train_prior)))
    if class_weighting == "inverse":
        return np.full(len(prior), 1.0 / len(prior)), "uniform (the model was trained with inverse class weights)"
    if oof_probs is not None:
        mean = validate_probs(oof_probs, name="oof_probs").mean(0)
        if (mean > 0).all():
            return mean / mean.sum(), "the model's mean out-of-fold output"
    return prior, "the training label frequencies"


def adjust_to_prior(probs: Any, train_prior: Any, new_prior: Any) -> np.ndarray:
    """Posteriors under a new class prior by Bayes' rule: ``p_k * new_k / train_k``, rows renormalised.

    ``new_prior`` may hold zeros (that class's probability becomes 0); equal priors leave ``probs`` unchanged.

    Raises:
        ValueError: invalid shapes or values, or an image whose every class with probability > 0 has a new
            prior of 0 (nothing is left to renormalise).
    """
    p = validate_probs(probs)
    k = p.shape[1]
    old = validate_prior(train_prior, k)
    new = validate_prior(new_prior, k, name="new_prior", positive=False)
    adjusted = p * (new / old)
    sums = adjusted.sum(1, keepdims=True)
    if (sums <= 0).any():
        rows = np.flatnonzero(sums[:, 0] <= 0)
        raise ValueError(f"new_prior is 0 on every class with probability > 0 for images {rows[:10].tolist()}")
    return adjusted / sums
