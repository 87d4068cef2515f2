"""What a twin is worth learning: its splits' priors, label noise and ceiling; the evaluation draw (private).

:func:`expected_summary` is known from the difficulty alone (it goes into the archive's marker file);
:func:`realised` adds what one generated twin actually holds (it goes into ``twin.json`` beside the
archive). :func:`write_eval_draw` writes ``eval/<class>/*.png``: fresh pictures from the same
generator, labelled with their true class, that no archive file shows.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ._draw import tilt_class
from ._synth_images import picture_image
from ._synth_manifest import CLASSES
from ._synth_model import CLASS_PRIOR, CONSENSUS_SHOWN, TILT_RANGE, Picture, shown_tilt
from ._twin_ceiling import Mixture, ceiling, chance_macro_f1
from ._twin_difficulty import LEVELS, Difficulty

__all__ = ["EVAL_PRIORS", "expected_summary", "realised", "write_eval_draw", "write_sheet"]

# The true tilt distributions of the splits (anklealign._synth_plan draws them so).
TRAIN_MIX = Mixture(weights=CLASS_PRIOR, ranges=TILT_RANGE)
TEST_MIX = Mixture(weights=(0.10, 0.035, 0.865), ranges=((-17.0, -10.0), (-6.5, -5.5), (-3.0, 2.5)),
                   shown_within=(None, None, CONSENSUS_SHOWN))
EVAL_PRIORS = {"train": TRAIN_MIX, "test": TEST_MIX}
CONSENSUS_READERS = 16  # 15-18 annotators label each consensus image
_EVAL_STREAM, _EVAL_SHOWN_STREAM, _EVAL_KEY = 7, 8, 10**7  # random streams no archive picture uses
_EVAL_LONG = 256  # evaluation pictures: long side in pixels (the search reads 32-128 px)


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
            # No consensus image has a supination majority (DATA.md): the generator ends such votes as neutral.
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


def _eval_size(rng: np.random.Generator) -> tuple[int, int]:
    aspect = float(rng.choice((4 / 3, 3 / 4, 16 / 9, 9 / 16, 1.0), p=(0.35, 0.35, 0.1, 0.1, 0.1)))
    return (_EVAL_LONG, round(_EVAL_LONG / aspect)) if aspect >= 1 else (round(_EVAL_LONG * aspect), _EVAL_LONG)


def write_eval_draw(out: Path, *, n: int, seed: int, difficulty: Difficulty, prior: str) -> dict[str, Any]:
    """Write ``n`` fresh pictures to ``out/<class>/eval_00000.png``, labelled with their true class.

    The pictures come from the generator's random streams that no archive picture uses, so none
    of them is a copy of an archive image. Returns the draw's block of ``twin.json``.
    """
    if prior not in EVAL_PRIORS:
        raise ValueError(f"eval prior must be one of {', '.join(EVAL_PRIORS)}, got {prior!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the evaluation draw needs a positive number of images, got {n!r}")
    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it or choose another --out")
    rng = np.random.default_rng([seed, _EVAL_STREAM])
    mix = EVAL_PRIORS[prior]
    tilts, components = mix.sample(rng, n)
    counts: Counter[str] = Counter()
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")  # appears complete or not at all
    try:
        for c in CLASSES:
            (partial / c).mkdir(parents=True)
        for i, (t, k) in enumerate(zip(tilts.tolist(), components.tolist(), strict=True)):
            key = _EVAL_KEY + i
            pic = Picture(key, round(t, 3), 2 if rng.random() < 0.3 else 1, _eval_size(rng),
                          shown_tilt(t, key, seed, difficulty, stream=_EVAL_SHOWN_STREAM, within=mix.bound(k)))
            cls = CLASSES[tilt_class(pic.tilt)]
            picture_image(pic, seed, difficulty, stream=_EVAL_STREAM).save(partial / cls / f"eval_{i:05d}.png")
            counts[cls] += 1
        partial.replace(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {"images": n, "prior": prior, "path": str(out), "class_counts": {c: counts.get(c, 0) for c in CLASSES},
            "labels": "true class (no annotator noise)", "label_noise": 0.0}


def write_sheet(path: Path, *, seed: int = 0, tile: int = 144, per_class: int = 2) -> Path:
    """A PNG contact sheet: one row per named difficulty, ``per_class`` pictures of each class."""
    tilts = {"pronation": (-14.0, -9.0), "neutral": (-2.0, 3.0), "supination": (9.0, 14.0)}
    label_h = 18
    cols = len(CLASSES) * per_class
    sheet = Image.new("RGB", (110 + cols * tile, label_h + len(LEVELS) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for j, cls in enumerate(CLASSES):
        draw.text((110 + j * per_class * tile + 4, 3), f"{cls} (true tilt {tilts[cls][0]:+g}, {tilts[cls][1]:+g})",
                  fill="black")
    for row, name in enumerate(LEVELS):
        difficulty = Difficulty.at(LEVELS[name])
        y = label_h + row * tile
        draw.text((6, y + tile // 2 - 6), name, fill="black")
        for j, cls in enumerate(CLASSES):
            for k in range(per_class):
                t = tilts[cls][k % 2]
                key = 2 * 10**7 + j * per_class + k
                pic = Picture(key, t, 1, (tile, tile), shown_tilt(t, key, seed, difficulty))
                img = picture_image(pic, seed, difficulty, stream=9)
                sheet.paste(img, (110 + (j * per_class + k) * tile, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path

