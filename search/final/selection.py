"""What the out-of-fold evidence says about the search's choice: what to export and how good that choice is.

Every complete trial records the out-of-fold probabilities of each training image, averaged over its
last epochs (:attr:`search.study.records.TrialRecord.oof`). These decisions read them, never the test set:

* **The default configuration unless a trial distinguishably beats it** (``final.keep_default``): on a few
  hundred noisy labels the best of 30 CV scores is often a trial that got lucky, and exporting it gives a
  model worse than the recipe the search started from ("overtuning"). Comparing only the best trial with
  the default, as if it had been chosen before looking, declares it better in about a quarter of studies
  whose trials are all equally good. So the decision is a test of superior predictive ability over *every*
  complete trial (:func:`superiority`, Hansen 2005, after White's 2000 Reality Check): a trial replaces the
  default only when its studentised out-of-fold difference exceeds what the largest of all the differences
  reaches under equal skill. Its error rate and power are measured by simulation with these functions.
* **Estimated score of the search's choice** (bootstrap bias corrected CV, Tsamardinos, Greasidou and
  Borboudakis 2018): the study's best value is the maximum of many noisy estimates and so too high. On each
  of B resamples of the training images' duplicate groups the same selection procedure (best in-bag score,
  then the test against the default with its critical value held fixed) runs on the in-bag images, and its
  choice is scored on the out-of-bag images. The mean of those scores estimates how the procedure does on
  new images; its 2.5/97.5 percentiles bound it. It describes the search's procedure, not the exported
  trial: when the default is exported it says what choosing among the trials was worth.
* **Top-k ensemble**: averaging the probabilities of the k best trials (each retrained with R seeds)
  often beats the single winner on small data. k in 1..``final.top_k`` is chosen by the out-of-fold
  score of the averaged out-of-fold probabilities; ties go to the smaller k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from search.final.scoring import resample_weights, weighted_metrics
from search.run.metrics import cell_codes, confusions, metrics_from_confusion
from search.study.records import TrialRecord

__all__ = ["bbc_estimate", "choose_top_k", "greedy_ensemble", "Greedy", "TopK", "oof_score", "Selection", "select",
           "superiority", "versus_default"]


def oof_score(probs: np.ndarray, labels: np.ndarray, *, metric: str, num_classes: int) -> float:
    """The metric of argmax predictions from (N, K) probabilities."""
    conf = confusions(labels, probs.argmax(-1)[None], num_classes)
    return float(metrics_from_confusion(conf)[metric][0])


# The test's level: one-sided 2.5 %, the level of "a 95 % interval above 0" that the rule before it used. At a
# nominal 5 % the bootstrap test declared a winner among 21 equal trials in 5.0 % and 6.3 % of two draws of 600
# simulated studies: no margin under a 5 % error rate. At 2.5 % it stays under it (docs/SELECTION.md).
ALPHA = 0.025


def _scores(pred: np.ndarray, labels: np.ndarray, weights: np.ndarray, k: int, metric: str) -> np.ndarray:
    """``metric`` of (C, N) predictions under (B, N) image weights -> (C, B)."""
    return weighted_metrics(cell_codes(labels, pred, k), weights, k)[metric]


def superiority(oof: np.ndarray, labels: np.ndarray, *, default: int, metric: str, groups: np.ndarray | None = None,
                n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA) -> dict[str, Any]:
    """Which configurations beat ``default`` out of fold, allowing for having looked at all of them.

    A test of superior predictive ability (Hansen 2005, "A Test for Superior Predictive Ability", which
    refines White's 2000 "Reality Check for Data Snooping"): the statistic is the largest studentised
    difference ``t_j = d_j / sd_j`` over every configuration ``j`` (``d_j`` its out-of-fold ``metric`` minus the
    default's, ``sd_j`` its bootstrap standard deviation); its distribution under "no configuration beats the
    default" is the bootstrap distribution of ``max_j (d*_j - d_j + mu_j) / sd_j`` over resamples of the
    duplicate groups, where ``mu_j`` recentres configurations that are clearly worse than the default
    (``t_j <= -sqrt(2 log log G)``) at their own difference so that they cannot inflate the maximum (Hansen's
    consistent version; it gains power, not error, when many trials are bad). ``j`` is declared better when
    ``t_j`` exceeds the ``1 - alpha`` quantile ``c`` of that maximum: the chance that *any* configuration of
    equal true skill is declared better is about ``alpha`` however many were tried (measured by simulation in
    ``tests/search/final/test_selection.py``), where comparing only the best one with the default, as if it had
    been chosen before looking, declared a winner in about a quarter of such studies.

    Args:
        oof: (C, N, K) out-of-fold probabilities of C configurations on the same N images; ``oof[default]``
            is the reference.
        labels, groups: (N,) labels and duplicate-group ids.

    Returns:
        ``difference`` (C,) ``d_j``, ``sd`` (C,), ``t`` (C,), ``critical`` ``c``, ``better`` (C,) bools (never
        the default itself), ``p_value`` of "none is better", ``alpha``, ``resamples``, ``method``.
    """
    oof = np.asarray(oof, dtype=np.float64)
    c, n, k = oof.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if not 0 <= default < c:
        raise ValueError(f"default must index one of the {c} configurations, got {default}")
    if n_boot < 20:
        raise ValueError(f"the test needs at least 20 bootstrap resamples, got {n_boot}")
    pred = oof.argmax(-1)
    point = _scores(pred, labels, np.ones((1, n)), k, metric)[:, 0]
    boot = _scores(pred, labels, resample_weights(groups, n, n_boot, np.random.default_rng(seed)), k, metric)  # (C, B)
    d, d_boot = point - point[default], boot - boot[default]
    sd = d_boot.std(1, ddof=1)
    same = sd < 1e-12  # the default itself, or a configuration that predicts exactly like it
    sd = np.where(same, 1.0, sd)
    t = np.where(same, 0.0, d / sd)
    n_groups = len(np.unique(groups)) if groups is not None else n
    floor = -np.sqrt(2 * np.log(np.log(max(n_groups, 16))))
    mu = np.where(t <= floor, d, 0.0)
    null = np.where(same[:, None], -np.inf, (d_boot - d[:, None] + mu[:, None]) / sd[:, None]).max(0)  # (B,)
    null = np.where(np.isfinite(null), null, 0.0)
    crit = float(np.quantile(null, 1 - alpha))
    better = (t > crit) & ~same
    return {"difference": d, "sd": np.where(same, 0.0, sd), "t": t, "critical": crit, "better": better,
            "p_value": float(np.mean(null >= t.max())), "alpha": alpha, "resamples": int(n_boot),
            "method": "test of superior predictive ability (Hansen 2005) over every complete trial: the largest "
                      "studentised out-of-fold difference from the default against its bootstrap distribution "
                      "over the training images' duplicate groups"}


def bbc_estimate(oof: np.ndarray, labels: np.ndarray, *, metric: str, groups: np.ndarray | None = None,
                 n_boot: int = 1000, seed: int = 0, default: int | None = None,
                 rule: tuple[np.ndarray, float] | None = None) -> dict[str, Any]:
    """Bootstrap bias corrected estimate of the score of the search's choice (BBC-CV, Tsamardinos et al. 2018).

    On each resample of the duplicate groups the selection procedure runs on the in-bag images and its choice is
    scored on the out-of-bag ones; the mean of those scores estimates how the *procedure* does on new images.
    The procedure is the final step's own: the configuration with the best in-bag ``metric`` and, with
    ``default`` and ``rule = (sd, critical)`` (from :func:`superiority` on all images, held fixed), the default
    unless the in-bag winner's studentised difference from it exceeds ``critical``.

    Args:
        oof: (C, N, K) out-of-fold probabilities of C configurations on the same N images.
        labels: (N,) labels the configurations were scored against.
        groups: (N,) duplicate-group ids; groups are resampled whole (near duplicates are one observation).

    Returns:
        ``estimate`` (mean out-of-bag score of the procedure's choice), ``ci95`` [2.5, 97.5] percentiles,
        ``raw`` (the best configuration's score on all images: what selection alone reports), ``bias``
        (raw - estimate), ``configs``, ``resamples`` (those with an empty out-of-bag are skipped),
        ``default_share`` (how often the procedure kept the default in-bag) and ``procedure``.
    """
    oof = np.asarray(oof, dtype=np.float64)
    labels = np.asarray(labels)
    c, n, k = oof.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    pred = oof.argmax(-1)  # (C, N)
    weights = resample_weights(groups, n, n_boot, np.random.default_rng(seed))
    oob = weights == 0
    keep = oob.any(1) & ~oob.all(1)
    weights, oob = weights[keep], oob[keep]
    raw = float(_scores(pred, labels, np.ones((1, n)), k, metric)[:, 0].max())
    procedure = "the configuration with the best in-bag score"
    if not len(weights):
        return {"estimate": None, "ci95": None, "raw": raw, "bias": None, "configs": c, "resamples": 0,
                "default_share": None, "procedure": procedure}
    in_bag = _scores(pred, labels, weights, k, metric)  # (C, B)
    chosen = in_bag.argmax(0)
    if default is not None and rule is not None:
        sd, crit = rule
        t = (in_bag[chosen, np.arange(len(chosen))] - in_bag[default]) / np.where(sd[chosen] > 0, sd[chosen], np.inf)
        chosen = np.where(t > crit, chosen, default)
        procedure += ", unless it does not beat the default configuration by the test's critical value"
    out = _scores(pred, labels, oob.astype(np.float64), k, metric)[chosen, np.arange(len(chosen))]
    est = float(np.mean(out))
    return {"estimate": est, "ci95": [float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))],
            "raw": raw, "bias": raw - est, "configs": c, "resamples": int(len(out)),
            "default_share": float(np.mean(chosen == default)) if default is not None else None,
            "procedure": procedure}


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
class Greedy:
    """An ensemble chosen by greedy forward selection: the weight of each member and the out-of-fold NLL path."""

    weights: tuple[float, ...]  # per member (the pool's order, zeros dropped by the caller), summing to 1
    nll: tuple[float, ...]  # out-of-fold NLL of the ensemble after each step (step 1: the anchor alone)
    steps: int  # the step whose ensemble is kept (the lowest NLL; ties go to the earlier step)

    @property
    def why(self) -> str:
        return (f"greedy ensemble selection (Caruana et al. 2004: members added with replacement while the "
                f"out-of-fold NLL falls): {self.nll[0]:.4f} for the exported trial alone, "
                f"{self.nll[self.steps - 1]:.4f} after {self.steps} step(s), "
                f"{sum(w > 0 for w in self.weights)} trial(s)")


def greedy_ensemble(oof: Sequence[np.ndarray], labels: np.ndarray, *, max_members: int,
                    max_steps: int = 25) -> Greedy:
    """Caruana, Niculescu-Mizil, Crew and Ksikes (2004), "Ensemble Selection from Libraries of Models".

    ``oof[0]`` (the trial the keep-default decision exported) is the first member; each further step adds, with
    replacement, the pool member whose addition gives the averaged out-of-fold probabilities the lowest negative
    log-likelihood (a proper score: smoother and less noisy than the macro-F1 of argmax predictions), using at
    most ``max_members`` distinct trials. The ensemble of the step with the lowest NLL is kept; its weights are
    how often each member was added. With one trial in the pool, or nothing that lowers the NLL, the anchor alone.
    """
    probs = np.clip(np.stack(oof), 1e-7, 1.0)  # (C, N, K)
    if not len(probs):
        raise ValueError("no out-of-fold predictions to choose from")
    picked = probs[:, np.arange(len(labels)), labels]  # (C, N): each member's probability of the label
    counts = np.zeros(len(probs), dtype=np.int64)
    counts[0], total = 1, picked[0].copy()
    path, kept, best = [float(-np.log(total).mean())], counts.copy(), 1
    for step in range(2, max_steps + 1):
        allowed = counts > 0 if (counts > 0).sum() >= max_members else np.ones(len(probs), dtype=bool)
        nll = np.where(allowed, -np.log((total[None] + picked) / step).mean(1), np.inf)
        j = int(np.argmin(nll))  # ties: the better-ranked member
        counts[j] += 1
        total += picked[j]
        path.append(float(nll[j]))
        if path[-1] < path[best - 1] - 1e-12:
            kept, best = counts.copy(), step
    return Greedy(weights=tuple(float(c) for c in kept / kept.sum()), nll=tuple(path), steps=best)


@dataclass(frozen=True)
class Selection:
    """What the final step exports and what the out-of-fold evidence says about it."""

    members: list[FrozenTrial]  # the exported trial first (the winner, or the default), then the ensemble's others
    top_k: TopK | None = None
    bbc: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # why a piece of evidence is missing
    versus_default: dict[str, Any] | None = None  # the winner against the default trial, out of fold
    greedy: Greedy | None = None  # a greedy ensemble: ``greedy.weights`` are the members' weights

    @property
    def weights(self) -> list[float]:
        """Each member's share of the exported average (equal unless the greedy selection weighted them)."""
        if self.greedy is not None:
            return [w for w in self.greedy.weights if w > 0]
        return [1.0 / len(self.members)] * len(self.members)

    def block(self) -> dict[str, Any]:
        """The ``selection`` block of metrics.json and the model card."""
        why = self.greedy.why if self.greedy else (
            self.top_k.why if self.top_k else (self.notes[0] if self.notes else "one trial"))
        if self.versus_default:
            why = f"{self.versus_default['why']}; {why}"
        return {"trials": [t.number for t in self.members], "top_k": self.top_k.k if self.top_k else 1,
                "top_k_oof_scores": list(self.top_k.scores) if self.top_k else None, "why": why,
                "weights": [round(w, 4) for w in self.weights],
                "greedy_nll": list(self.greedy.nll) if self.greedy else None,
                "versus_default": self.versus_default, "choice_estimate": self.bbc, "notes": self.notes}


def versus_default(candidates: list[tuple[FrozenTrial, np.ndarray]], winner: FrozenTrial, default: FrozenTrial,
                   labels: np.ndarray, *, groups: np.ndarray, metric: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Whether any trial beats the default configuration out of fold, allowing for the search having tried them
    all (:func:`superiority`), and which trial that makes the export.

    ``candidates`` are every complete trial with out-of-fold predictions, best value first (the default among
    them). The export is the ``winner`` (best value) when the test declares it better than the default, else
    the best-valued trial it declares better, else the default. ``kept`` says which: ``winner``, ``other`` or
    ``default``.
    """
    oof = np.stack([p for _, p in candidates])
    di = next(i for i, (t, _) in enumerate(candidates) if t.number == default.number)
    wi = next(i for i, (t, _) in enumerate(candidates) if t.number == winner.number)
    test = superiority(oof, labels, default=di, metric=metric, groups=groups, n_boot=n_boot, seed=seed)
    declared = [i for i in range(len(candidates)) if test["better"][i]]
    pick = wi if wi in declared else (declared[0] if declared else di)
    kept = "default" if pick == di else ("winner" if pick == wi else "other")
    d, p_value, others = float(test["difference"][wi]), test["p_value"], len(candidates) - 1
    chance = (f"more than the best of {others} trials of equal skill would by chance (test of superior predictive "
              f"ability, p = {p_value:.3f})")
    if kept == "default" and winner.number == default.number:
        why = (f"the default configuration (trial {default.number}) has the best cross-validated value, and no "
               f"trial beats it out of fold by more than the best of {others} trials of equal skill would by chance")
    elif kept == "winner":
        why = (f"trial {winner.number} beats the default configuration (trial {default.number}) out of fold by "
               f"{d:+.3f}, {chance}")
    elif kept == "other":
        picked = candidates[pick][0].number
        why = (f"trial {picked} beats the default configuration (trial {default.number}) out of fold by "
               f"{float(test['difference'][pick]):+.3f}, {chance}; the best-valued trial {winner.number} "
               f"({d:+.3f}) does not")
    else:
        why = (f"the default configuration (trial {default.number}) is exported: the best trial {winner.number} is "
               f"{d:+.3f} from it out of fold, within what the best of {others} trials of equal skill reaches by "
               f"chance (p = {p_value:.3f}; final.keep_default)")
    return {"winner_trial": winner.number, "default_trial": default.number,
            "exported_trial": candidates[pick][0].number,
            "difference": d, "t": float(test["t"][wi]), "critical": test["critical"], "p_value": p_value,
            "alpha": test["alpha"], "candidates": others,
            "declared_better": [candidates[i][0].number for i in declared], "kept": kept, "why": why,
            "rule": "export the default configuration unless a trial beats it out of fold by more than the "
                    "largest of all trials' differences would under equal skill (Hansen's test of superior "
                    "predictive ability, one-sided 2.5 % level)", "method": test["method"],
            "_rule": (test["sd"], test["critical"], di)}


def select(study: optuna.Study, winner: FrozenTrial, *, top_k: int, labels: np.ndarray, groups: np.ndarray,
           metric: str, num_classes: int, n_boot: int, seed: int, keep_default: bool = False,
           ensemble: str = "top_k") -> Selection:
    """The members of the exported ensemble and the estimated score of the search's choice, from out-of-fold
    evidence.

    With ``keep_default`` the study's complete ``default`` trial takes the winner's place unless
    :func:`versus_default` finds a trial that beats it. The bias-corrected estimate (:func:`bbc_estimate`) is of
    the same procedure. Candidates for the ensemble share the exported trial's input (size, colour, resize: one
    preprocessing).
    """
    def oof(t: FrozenTrial) -> np.ndarray | None:
        probs = TrialRecord.of(t).oof_probs(num_classes)
        return probs if probs is not None and len(probs) == len(labels) else None

    done = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None),
                  key=lambda t: (-t.value, t.number))
    with_oof = [(t, p) for t in done if (p := oof(t)) is not None]
    notes = []
    win_oof = oof(winner)
    default = next(((t, p) for t, p in with_oof if TrialRecord.of(t).preset == "default"), None)
    versus, rule, di = None, None, None
    n_test = n_boot or 1000  # the decision needs resamples even where final.bootstrap = 0 turns intervals off
    if keep_default and default is not None and win_oof is not None:
        versus = versus_default(with_oof, winner, default[0], labels, groups=groups, metric=metric, n_boot=n_test,
                                seed=seed)
        sd, crit, di = versus.pop("_rule")
        rule = (sd, crit)
        winner, win_oof = next((t, p) for t, p in with_oof if t.number == versus["exported_trial"])
    elif keep_default and default is None:
        notes.append("no complete 'default' trial with out-of-fold predictions: the best trial is exported")
    bbc = None
    if len(with_oof) >= 2:
        bbc = bbc_estimate(np.stack([p for _, p in with_oof]), labels, metric=metric, groups=groups, n_boot=n_test,
                           seed=seed, default=di, rule=rule)
        bbc["label"] = "estimated score of the search's choice (the selection procedure re-run on resamples)"
    else:
        notes.append("fewer than two complete trials record out-of-fold predictions: no estimate of the search's "
                     "choice")
    if win_oof is None:
        notes.insert(0, f"trial {winner.number} records no out-of-fold predictions: exported alone")
        return Selection(members=[winner], bbc=bbc, notes=notes)

    def input_of(t: FrozenTrial) -> Any:
        return (TrialRecord.of(t).config or {}).get("input")

    pool = [(winner, win_oof)] + [(t, p) for t, p in with_oof
                                  if t.number != winner.number and input_of(t) == input_of(winner)]
    if ensemble == "greedy":
        greedy = greedy_ensemble([p for _, p in pool], labels, max_members=top_k)
        members = [t for (t, _), w in zip(pool, greedy.weights, strict=True) if w > 0]
        return Selection(members=members, bbc=bbc, notes=notes, versus_default=versus, greedy=greedy)
    pool = pool[:top_k]
    chosen = choose_top_k([p for _, p in pool], labels, metric=metric, num_classes=num_classes)
    return Selection(members=[t for t, _ in pool[:chosen.k]], top_k=chosen, bbc=bbc, notes=notes,
                     versus_default=versus)
