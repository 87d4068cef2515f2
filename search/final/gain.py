"""What the search gained: the exported model against each seed net, the default configuration and random.

Each comparison is the difference of one metric between the exported model and a baseline retrained
the same way, on the same images: a *paired* bootstrap over the images' duplicate groups gives its
95 % interval (both models see the same resample, so image difficulty cancels out). When the interval
of the difference to the best seed net, or the exported model's interval against random guessing,
includes zero, the table, the report and ``search score`` say "the search found nothing better than …".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from search.final.scoring import group_bootstrap, weighted_metrics
from search.run.metrics import cell_codes

__all__ = ["net_word", "paired_difference", "search_gain"]


def paired_difference(probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray, *, metric: str,
                      groups: np.ndarray | None, n_boot: int, seed: int) -> dict[str, Any]:
    """Seed-mean ``metric`` of A minus B, ``(S, M, K)`` probabilities each, with a paired 95 % interval."""
    k = probs_a.shape[-1]
    codes_a, codes_b = cell_codes(labels, probs_a.argmax(-1), k), cell_codes(labels, probs_b.argmax(-1), k)

    def statistic(weights: np.ndarray) -> np.ndarray:  # (B, M) -> (1, B)
        a = weighted_metrics(codes_a, weights, k)[metric].mean(0)
        b = weighted_metrics(codes_b, weights, k)[metric].mean(0)
        return (a - b)[None]

    point = float(statistic(np.ones((1, len(labels))))[0, 0])
    (ci,) = group_bootstrap(statistic, groups, len(labels), n_boot=n_boot, seed=seed)
    return {"difference": point, "ci95": ci}


def net_word(data: Mapping[str, Any]) -> str:
    """The student's hand-made nets are "seed nets" on AnkleAlign, where they come from; elsewhere "reference nets"."""
    return "seed net" if data.get("kind") == "anklealign" else "reference net"


def search_gain(model: np.ndarray, presets: Mapping[str, np.ndarray], labels: np.ndarray, *,
                random: Mapping[str, Any] | None, metric: str, groups: np.ndarray | None, n_boot: int, seed: int,
                model_score: Mapping[str, Any], seed_nets: tuple[str, ...],
                net_word: str = "seed net") -> dict[str, Any]:
    """The ``search_gain`` block: the exported model (``model``, (1, M, K)) against each preset's seeds.

    Args:
        presets: name -> (S, M, K) probabilities of each retrained preset (seed nets and ``default``).
        random: the stratified-random baseline's block (its ``metric`` entry), if scored.
        model_score: the exported model's block of :func:`search.final.scoring.score_seeds`.
        seed_nets: which preset names are the student's seed nets (the rest, e.g. ``default``, are ours).
        net_word: what to call them: "seed net" on AnkleAlign, "reference net" on other data.
    """
    vs = {name: paired_difference(model, p, labels, metric=metric, groups=groups, n_boot=n_boot, seed=seed)
          for name, p in presets.items()}
    nets = {n: v for n, v in vs.items() if n in seed_nets}
    best_net = max(nets, key=lambda n: -nets[n]["difference"]) if nets else None  # the smallest gain
    warnings = []
    if best_net is not None:
        d = nets[best_net]
        if d["ci95"] is None or d["ci95"][0] <= 0:
            warnings.append(f"the search found nothing better than the {net_word} {best_net}: the exported model's "
                            f"{metric} is {d['difference']:+.3f} from it" + _ci(d["ci95"]))
    notes = []
    own = vs.get("default")
    if own is not None and (own["ci95"] is None or own["ci95"][0] <= 0):
        notes.append(f"the search found nothing better than its own default configuration: {own['difference']:+.3f}"
                     + _ci(own["ci95"]) + " (the search space and the recipe, not the search, made the model)")
    model_ci = (model_score.get(metric) or {}).get("ci95")
    random_mean = ((random or {}).get(metric) or {}).get("mean")
    if random_mean is not None:
        vs["stratified_random"] = {"difference": float(model_score[metric]["mean"]) - float(random_mean),
                                   "ci95": [model_ci[0] - random_mean, model_ci[1] - random_mean] if model_ci else None,
                                   "paired": False}
        if model_ci is None or model_ci[0] <= random_mean:
            shown = f"[{model_ci[0]:.3f}, {model_ci[1]:.3f}]" if model_ci else "(no interval)"
            warnings.append(f"the search found nothing better than random guessing: the exported model's {metric} "
                            f"interval {shown} reaches the random guesser's {random_mean:.3f}")
    return {"metric": metric, "vs": vs, "closest_seed_net": best_net, "warnings": warnings, "notes": notes,
            "interval": "95 % paired bootstrap (BCa) of the difference over the images' duplicate groups; vs "
                        "random: the model's own interval minus the guesser's expected score"}


def _ci(ci: list[float] | None) -> str:
    return f" [95 % interval {ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else " (no interval)"
