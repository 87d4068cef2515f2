"""What a twin is worth learning: its splits' priors, label noise and ceiling.

:func:`expected_summary` is known from the difficulty alone (it goes into the archive's marker file);
:func:`realised` adds what one generated twin actually holds (it goes into ``twin.json`` beside the
archive). :data:`EVAL_PRIORS` are the tilt distributions the evaluation draw
(:mod:`anklealign.twin.eval_draw`) can follow.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from anklealign.twin.ceiling import Mixture, ceiling, chance_macro_f1
from anklealign.twin.difficulty import Difficulty
from anklealign.twin.manifest import CLASSES
from anklealign.twin.planner import CLASS_PRIOR, CONSENSUS_SHOWN, TILT_RANGE

__all__ = ["EVAL_PRIORS", "expected_summary", "realised"]

# The true tilt distributions of the splits (anklealign.twin.plan draws them so).
TRAIN_MIX = Mixture(weights=CLASS_PRIOR, ranges=TILT_RANGE)
TEST_MIX = Mixture(weights=(0.10, 0.035, 0.865), ranges=((-17.0, -10.0), (-6.5, -5.5), (-3.0, 2.5)),
                   shown_within=(None, None, CONSENSUS_SHOWN))
EVAL_PRIORS = {"train": TRAIN_MIX, "test": TEST_MIX}
CONSENSUS_READERS = 16  # 15-18 annotators label each consensus image


def _split(mix: Mixture, difficulty: Difficulty, *, reading_noise: float | None, readers: int,
           guess: list[float] | None = None, relabel: dict[int, int] | None = None) -> dict[str, Any]:
    est = ceiling(mix, presentation_noise=difficulty.presentation_noise, reading_noise=reading_noise,
                  readers=readers, relabel=relabel)
    prior = [round(p, 4) for p in mix.class_prior()]
    scored = est.get("label_prior", prior)  # what a score on this split is against: labels, or the true class
    out = {"class_prior": dict(zip(CLASSES, prior, strict=True)),
           "label_noise": est.get("label_noise", 0.0),
           "labels": "true class" if reading_noise is None else
           ("one participant's reading" if readers == 1 else f"majority of ~{readers} annotators"),
           "ceiling": {k: est[k] for k in ("vs_true", "vs_labels") if k in est},
           "chance_macro_f1": chance_macro_f1(scored, guess if guess is not None else scored),
           "samples": est["samples"]}
    if "label_prior" in est:
        out["label_prior"] = dict(zip(CLASSES, est["label_prior"], strict=True))
    return out


def expected_summary(difficulty: Difficulty) -> dict[str, Any]:
    """Per split: true class prior, expected label-noise rate, Bayes ceiling (Monte Carlo, with SE), chance.

    Chance is the expected macro-F1 of guessing at random with the training labels' prior.
    """
    train = _split(TRAIN_MIX, difficulty, reading_noise=difficulty.label_noise, readers=1)
    guess = list(train["label_prior"].values())
    annotator = math.hypot(difficulty.annotator_noise, difficulty.annotator_bias)
    return {
        "difficulty": {"name": difficulty.name, "level": difficulty.level,
                       "settings": {k: v for k, v in vars(difficulty).items() if k != "level"}},
        "splits": {
            "train": train,
            # No consensus image has a supination majority (docs/DATA.md): the generator ends such votes as neutral.
            "test": _split(TEST_MIX, difficulty, reading_noise=annotator, readers=CONSENSUS_READERS, guess=guess,
                           relabel={2: 1}),
            "eval_train_prior": _split(TRAIN_MIX, difficulty, reading_noise=None, readers=1, guess=guess),
            "eval_test_prior": _split(TEST_MIX, difficulty, reading_noise=None, readers=1, guess=guess),
        },
        "method": "Bayes classifier of the shown heel tilt (the only latent variable that carries the class), "
                  "Monte Carlo over the generator's distributions; value +- se. Consensus annotators' "
                  "personal offsets are treated as independent reading noise.",
    }


def realised(labels: dict[str, str], true_classes: dict[str, str], majority: dict[str, str | None]) -> dict[str, Any]:
    """What one twin holds: counts per class and the share of labels that differ from the true class."""
    def block(given: dict[str, str | None]) -> dict[str, Any]:
        pairs = [(label, true_classes[i]) for i, label in given.items() if label is not None]
        counts = Counter(label for label, _ in pairs)
        wrong = sum(label != truth for label, truth in pairs)
        return {"images": len(pairs), "label_counts": {c: counts.get(c, 0) for c in CLASSES},
                "label_noise": round(wrong / max(len(pairs), 1), 4)}

    consensus = set(majority)
    return {"train": block({i: c for i, c in labels.items() if i not in consensus}), "test": block(majority)}
