"""What the out-of-fold evidence says about the winner: its bias-corrected score and the ensemble to export.

Every complete trial records the out-of-fold probabilities of each training image, averaged over its
last epochs (:attr:`search.study.records.TrialRecord.oof`). Two decisions read them, never the test set:

* **Bias-corrected estimate of the winner** (bootstrap bias corrected CV, Tsamardinos, Greasidou and
  Borboudakis 2018, "Bootstrapping the out-of-sample predictions for efficient and accurate
  cross-validation"): the study's best value is the maximum of many noisy estimates and so too high.
  BBC-CV resamples the training images (their duplicate groups) B times; on each resample it picks the
  configuration that scores best on the in-bag images and scores *that* one on the out-of-bag
  images. The mean of those out-of-bag scores estimates how the selection procedure does on new
  images; its 2.5/97.5 percentiles bound it.
* **Top-k ensemble**: averaging the probabilities of the k best trials (each retrained with R seeds)
  often beats the single winner on small data. k in 1..``final.top_k`` is chosen by the out-of-fold
  score of the averaged out-of-fold probabilities; ties go to the smaller k.
* **The default configuration unless the winner is distinguishably better** (``final.keep_default``):
  on a few hundred noisy labels the best of 30 CV scores is often a trial that got lucky, and the search
  then exports a model worse than the recipe it started from ("overtuning"). So the winner replaces the
  study's ``default`` trial only when a paired bootstrap of their out-of-fold difference (over the
  duplicate groups, as in :func:`search.final.gain.paired_difference`) has its 95 % interval above 0;
  otherwise the default configuration is exported and the card says why. The same one-standard-error
  spirit as Hastie, Tibshirani and Friedman's rule: prefer the prior choice when the data cannot tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from search.final.gain import paired_difference
from search.run.metrics import confusions, metrics_from_confusion
from search.study.records import TrialRecord

__all__ = ["bbc_estimate", "choose_top_k", "TopK", "oof_score", "Selection", "select", "versus_default"]


def oof_score(probs: np.ndarray, labels: np.ndarray, *, metric: str, num_classes: int) -> float:
    """The metric of argmax predictions from (N, K) probabilities."""
    conf = confusions(labels, probs.argmax(-1)[None], num_classes)
    return float(metrics_from_confusion(conf)[metric][0])


def bbc_estimate(oof: np.ndarray, labels: np.ndarray, *, metric: str, groups: np.ndarray | None = None,
                 n_boot: int = 1000, seed: int = 0) -> dict[str, float | int | None]:
    """Bootstrap bias corrected CV score of picking the best of ``C`` configurations.

    Args:
        oof: (C, N, K) out-of-fold probabilities of C configurations on the same N images.
        labels: (N,) labels the configurations were scored against.
        groups: (N,) duplicate-group ids; groups are resampled whole (near duplicates are one observation).

    Returns:
        ``estimate`` (mean out-of-bag score of the in-bag winner), ``ci95`` [2.5, 97.5] percentiles,
        ``raw`` (the best configuration's score on all images: what selection reports), ``bias``
        (raw - estimate), ``configs`` and ``resamples`` (those with an empty out-of-bag are skipped).
    """
    oof = np.asarray(oof, dtype=np.float64)
    labels = np.asarray(labels)
    c, n, k = oof.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    uniq, gidx = np.unique(groups, return_inverse=True)
    pred = oof.argmax(-1)  # (C, N)
    rng = np.random.default_rng(seed)
    out: list[float] = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(uniq), len(uniq))
        weight = np.bincount(drawn, minlength=len(uniq))[gidx]  # (N,) times each image is in the bag
        oob = weight == 0
        if not oob.any() or oob.all():
            continue
        best = _best(pred, labels, weight, k, metric)
        out.append(float(metrics_from_confusion(confusions(labels[oob], pred[best][oob][None], k))[metric][0]))
    raw = max(oof_score(p, labels, metric=metric, num_classes=k) for p in oof)
    if not out:
        return {"estimate": None, "ci95": None, "raw": raw, "bias": None, "configs": c, "resamples": 0}
    est = float(np.mean(out))
    return {"estimate": est, "ci95": [float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))],
            "raw": raw, "bias": raw - est, "configs": c, "resamples": len(out)}


def _best(pred: np.ndarray, labels: np.ndarray, weight: np.ndarray, k: int, metric: str) -> int:
    """The configuration with the best metric on the in-bag images (each counted ``weight`` times)."""
    codes = labels[None, :] * k + pred  # (C, N)
    conf = np.stack([np.bincount(row, weights=weight, minlength=k * k).reshape(k, k) for row in codes])
    scores = metrics_from_confusion(conf)[metric]
    return int(np.argmax(scores))


@dataclass(frozen=True)
class TopK:
    """The chosen ensemble: how many of the best trials, and the out-of-fold score of each k tried."""

    k: int
    scores: tuple[float, ...]  # out-of-fold score of the top-1, top-2, ... averages

    @property
    def why(self) -> str:
        tried = ", ".join(f"top-{i + 1} {s:.4f}" for i, s in enumerate(self.scores))
        return (f"top-{self.k}: the best out-of-fold score of the averaged probabilities ({tried}); "
                "ties go to fewer trials")


def choose_top_k(oof: Sequence[np.ndarray], labels: np.ndarray, *, metric: str, num_classes: int) -> TopK:
    """How many of the best trials (``oof`` in rank order) to average, by their out-of-fold score."""
    if not len(oof):
        raise ValueError("no out-of-fold predictions to choose from")
    scores = tuple(oof_score(np.mean(oof[: i + 1], axis=0), labels, metric=metric, num_classes=num_classes)
                   for i in range(len(oof)))
    best = max(scores)
    k = next(i + 1 for i, s in enumerate(scores) if s >= best - 1e-12)
    return TopK(k=k, scores=scores)


@dataclass(frozen=True)
class Selection:
    """What the final step exports and what the out-of-fold evidence says about it."""

    members: list[FrozenTrial]  # the exported trial first (the winner, or the default), then the ensemble's others
    top_k: TopK | None = None
    bbc: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # why a piece of evidence is missing
    versus_default: dict[str, Any] | None = None  # the winner against the default trial, out of fold

    def block(self) -> dict[str, Any]:
        """The ``selection`` block of metrics.json and the model card."""
        why = self.top_k.why if self.top_k else (self.notes[0] if self.notes else "one trial")
        if self.versus_default:
            why = f"{self.versus_default['why']}; {why}"
        return {"trials": [t.number for t in self.members], "top_k": self.top_k.k if self.top_k else 1,
                "top_k_oof_scores": list(self.top_k.scores) if self.top_k else None, "why": why,
                "versus_default": self.versus_default, "bias_corrected": self.bbc, "notes": self.notes}


def versus_default(winner: tuple[FrozenTrial, np.ndarray], default: tuple[FrozenTrial, np.ndarray],
                   labels: np.ndarray, *, groups: np.ndarray, metric: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Whether the winner's out-of-fold ``metric`` beats the default trial's: the paired difference, its
    95 % interval, and ``kept`` (``winner`` only when the interval lies above 0, else ``default``)."""
    (w, w_oof), (d, d_oof) = winner, default
    diff = paired_difference(w_oof[None], d_oof[None], labels, metric=metric, groups=groups, n_boot=n_boot, seed=seed)
    ci = diff["ci95"]
    kept = "winner" if ci is not None and ci[0] > 0 else "default"
    shown = f"{diff['difference']:+.3f}" + (f" [95 % {ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else " (no interval)")
    why = (f"trial {w.number} beats the default configuration (trial {d.number}) out of fold by {shown}"
           if kept == "winner" else
           f"the default configuration (trial {d.number}) is exported: the best trial {w.number} is {shown} "
           f"from it out of fold, not distinguishable from 0 (final.keep_default)")
    return {"winner_trial": w.number, "default_trial": d.number, "difference": diff["difference"], "ci95": ci,
            "kept": kept, "why": why}


def select(study: optuna.Study, winner: FrozenTrial, *, top_k: int, labels: np.ndarray, groups: np.ndarray,
           metric: str, num_classes: int, n_boot: int, seed: int, keep_default: bool = False) -> Selection:
    """The members of the exported ensemble and the winner's bias-corrected score, from out-of-fold evidence.

    With ``keep_default`` the study's complete ``default`` trial takes the winner's place unless
    :func:`versus_default` says the winner is better. Candidates for the ensemble share the exported
    trial's input (size, colour, resize: one preprocessing).
    """
    def oof(t: FrozenTrial) -> np.ndarray | None:
        probs = TrialRecord.of(t).oof_probs(num_classes)
        return probs if probs is not None and len(probs) == len(labels) else None

    done = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None),
                  key=lambda t: (-t.value, t.number))
    with_oof = [(t, p) for t in done if (p := oof(t)) is not None]
    notes = []
    bbc = None
    if len(with_oof) >= 2:
        bbc = bbc_estimate(np.stack([p for _, p in with_oof]), labels, metric=metric, groups=groups,
                           n_boot=n_boot, seed=seed)
    else:
        notes.append("fewer than two complete trials record out-of-fold predictions: no bias-corrected estimate")
    win_oof = oof(winner)
    if win_oof is None:
        notes.insert(0, f"trial {winner.number} records no out-of-fold predictions: exported alone")
        return Selection(members=[winner], bbc=bbc, notes=notes)
    def input_of(t: FrozenTrial) -> Any:
        return (TrialRecord.of(t).config or {}).get("input")

    versus = None
    default = next(((t, p) for t, p in with_oof if TrialRecord.of(t).preset == "default"), None)
    if keep_default and default is not None and default[0].number != winner.number:
        # The decision needs an interval even where final.bootstrap = 0 turns the reported ones off.
        versus = versus_default((winner, win_oof), default, labels, groups=groups, metric=metric,
                                n_boot=n_boot or 1000, seed=seed)
        if versus["kept"] == "default":
            winner, win_oof = default
    elif keep_default and default is None:
        notes.append("no complete 'default' trial with out-of-fold predictions: the best trial is exported")
    pool = [(winner, win_oof)] + [(t, p) for t, p in with_oof
                                  if t.number != winner.number and input_of(t) == input_of(winner)]
    pool = pool[:top_k]
    chosen = choose_top_k([p for _, p in pool], labels, metric=metric, num_classes=num_classes)
    return Selection(members=[t for t, _ in pool[:chosen.k]], top_k=chosen, bbc=bbc, notes=notes,
                     versus_default=versus)
