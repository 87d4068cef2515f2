"""The human annotators as a baseline: each scored against the others, and a model ranked among them.

A rank among the annotators is only meaningful next to the ranks of answers that ignore the image (always
the most frequent class, random guessing): on a test set that one class dominates, a constant answer can rank
first. Both are ranked by the same like-for-like rule, each with a bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from search.final.scoring import resample_weights

__all__ = ["annotator_agreement", "answers_without_images"]


def annotator_agreement(annotator_labels: np.ndarray, *, annotators: Sequence[str], num_classes: int,
                        model_predictions: Mapping[str, np.ndarray] | None = None,
                        constants: Mapping[str, np.ndarray] | None = None, n_boot: int = 0,
                        seed: int = 0) -> dict[str, Any]:
    """Each human annotator, scored against the majority of the *other* annotators; models like-for-like.

    For annotator ``a`` and image ``m`` that ``a`` labelled, the reference is the majority of the
    other annotators' labels of ``m`` (leave-one-out, so nobody is graded against their own vote).
    A tie among the others' top classes is skipped (counted in ``ties_skipped``), as is an image nobody
    else labelled. (The ingest's reliability-weighted tie-break is not used here: its weights come from
    every annotator's agreement with the majority, including the annotator being graded.)
    ``vote_agreement`` is the mean fraction of the other annotators who gave the same label
    (comparable with the model's ``vote_probability``).

    A model is ranked like-for-like: against annotator ``a`` it is scored on exactly ``a``'s scored
    images against exactly ``a``'s reference, and ``a`` beats it when ``a``'s accuracy there is strictly
    higher. The model's ``rank`` is one plus the number of annotators who beat it (1 = no annotator
    does better on their own images), ``of`` = annotators + 1. A rank alone says little: on a test set where
    one class dominates, always answering it can rank first too. So ``constants`` (name -> (K,) class
    probabilities of an answer that ignores the image: a one-hot for "always this class", the training prior for
    random guessing, scored by its expected accuracy) are ranked by the same rule. ``rank_ci95`` is a 95 %
    percentile interval of a
    rank over ``n_boot`` resamples of the images (each annotator's and each model's accuracy recomputed on the
    resample).

    Args:
        annotator_labels: (A, M) class ids, -1 = that annotator gave no label.
        annotators: A annotator codes.
        num_classes: K.
        model_predictions: name -> (S, M) predicted class ids of a model (S seeds; accuracies are
            averaged over seeds).
        constants: name -> (K,) probabilities of an answer that ignores the image (ranked like a model).
        n_boot, seed: resamples of the images for the rank intervals (0 = none).

    Returns:
        ``{"available", "tie_rule", "per_annotator": [...], "accuracy": {"mean", "min", "max", "std"},
        "vote_agreement": {...}, "n_annotators", "model_rank": {name: {"rank", "of", "beaten_by",
        "accuracy_vs_annotators"}}}``; each ``per_annotator`` row also holds ``model_accuracy`` per model.
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
    scored = given & (n_others > 0) & unique_top  # (A, M)
    correct = scored & (a_labels == reference)
    same = np.take_along_axis(others, np.clip(a_labels, 0, None)[..., None], -1)[..., 0]  # (A, M)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_same = np.where(given & (n_others > 0), same / np.maximum(n_others, 1), np.nan)
    models = {name: np.atleast_2d(np.asarray(p)) for name, p in (model_predictions or {}).items()}
    # Per (model, annotator, image): the probability the model's answer equals that annotator's reference.
    hit = {name: (p[:, None, :] == reference[None]).mean(0) for name, p in models.items()}  # (A, M) each
    kinds = dict.fromkeys(models, "model")
    for name, probs in (constants or {}).items():  # a one-hot answers one class always; else a random guess
        probs = np.asarray(probs, dtype=np.float64)
        hit[name] = probs[reference]  # its expected accuracy against each reference
        kinds[name] = "constant" if probs.max() >= 1.0 else "random"
    rows: list[dict[str, Any]] = []
    for i, code in enumerate(annotators):
        n = int(scored[i].sum())
        agree = frac_same[i][np.isfinite(frac_same[i])]
        row = {"annotator": code, "labelled": int(given[i].sum()), "scored": n,
               "ties_skipped": int((given[i] & (n_others[i] > 0) & ~unique_top[i]).sum()),
               "accuracy": float(correct[i].sum() / n) if n else None,
               "vote_agreement": float(agree.mean()) if agree.size else None}
        if hit:
            row["model_accuracy"] = {name: float(h[i, scored[i]].mean()) if n else None for name, h in hit.items()}
        rows.append(row)
    ranked = [r for r in rows if r["accuracy"] is not None]
    accs = np.array([r["accuracy"] for r in ranked])
    agrees = np.array([r["vote_agreement"] for r in rows if r["vote_agreement"] is not None])
    out: dict[str, Any] = {
        "available": True,
        "tie_rule": "leave-one-out majority of the other annotators; images where it is a tie are skipped",
        "n_annotators": int(len(accs)),
        "accuracy": _spread(accs),
        "vote_agreement": _spread(agrees),
        "per_annotator": rows,
    }
    if hit:
        out["rank_rule"] = ("like-for-like: against each annotator the model is scored on that annotator's "
                            "images against the same leave-one-out majority; rank = 1 + annotators who "
                            "score strictly higher there; answers that ignore the image are ranked the same way")
        out["model_rank"] = {}
        idx = [annotators.index(r["annotator"]) for r in ranked]
        intervals = _rank_intervals(correct[idx], scored[idx], {n: h[idx] for n, h in hit.items()}, n_boot, seed)
        for name in hit:
            beaten_by = [r["annotator"] for r in ranked if r["accuracy"] > r["model_accuracy"][name]]
            out["model_rank"][name] = {
                "rank": 1 + len(beaten_by), "of": len(ranked) + 1, "beaten_by": beaten_by, "kind": kinds[name],
                "rank_ci95": intervals.get(name),
                "accuracy_vs_annotators": _spread(np.array([r["model_accuracy"][name] for r in ranked]))}
    return out


def answers_without_images(train_prior: np.ndarray, classes: Sequence[str],
                           test_labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The answers that ignore the image, ranked next to a model against the annotators: always the most
    frequent training class, random guesses with the training class frequencies and, when ``test_labels`` are
    given and their majority is another class, always that class (an ORACLE: it peeks at the test labels, and
    on a test set that one class dominates it shows what a rank is worth)."""
    prior = np.asarray(train_prior, dtype=np.float64)
    eye = np.eye(len(prior))
    top = int(np.argmax(prior))
    out = {f"always {classes[top]}": eye[top], "random, training frequencies": prior}
    if test_labels is not None and len(test_labels):
        test_top = int(np.argmax(np.bincount(np.asarray(test_labels), minlength=len(prior))))
        if test_top != top:
            out[f"always {classes[test_top]} (ORACLE: the test majority)"] = eye[test_top]
    return out


def _rank_intervals(correct: np.ndarray, scored: np.ndarray, hit: Mapping[str, np.ndarray], n_boot: int,
                    seed: int) -> dict[str, list[float]]:
    """95 % percentile intervals of each answer's rank among the annotators over resamples of the images.

    ``correct``, ``scored``: (A, M) of the ranked annotators; ``hit``: name -> (A, M) chance the answer matches
    each annotator's reference. A resample where an annotator has no scored image leaves that annotator out.
    """
    if n_boot <= 0 or not hit:
        return {}
    m = correct.shape[1]
    weights = resample_weights(None, m, n_boot, np.random.default_rng(seed))
    n = weights @ scored.T.astype(np.float64)  # (B, A) scored images of each annotator in each resample
    present = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        human = (weights @ (correct & scored).T) / n  # (B, A)
        out = {}
        for name, h in hit.items():
            answer = (weights @ (h * scored).T) / n
            ranks = 1 + ((human > answer) & present).sum(1)
            out[name] = [float(np.percentile(ranks, 2.5)), float(np.percentile(ranks, 97.5))]
    return out


def _spread(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else None,
            "min": float(values.min()), "max": float(values.max())}
