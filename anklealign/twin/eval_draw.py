"""Fresh pictures outside the archive: the evaluation draw and the difficulty contact sheet.

:func:`write_eval_draw` writes ``eval/<class>/*.png``: fresh pictures from the same generator,
labelled with their true class, that no archive file shows. :func:`write_sheet` draws a few
pictures of each class at each named difficulty (``python -m anklealign synth --sheet``). Both use
random streams and picture keys that no archive picture uses.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from anklealign.twin.difficulty import LEVELS, Difficulty
from anklealign.twin.draw import tilt_class
from anklealign.twin.images import picture_image
from anklealign.twin.manifest import CLASSES
from anklealign.twin.planner import Picture, shown_tilt
from anklealign.twin.summary import EVAL_PRIORS

__all__ = ["write_eval_draw", "write_sheet"]

_EVAL_STREAM, _EVAL_SHOWN_STREAM, _EVAL_KEY = 7, 8, 10**7  # random streams no archive picture uses
_EVAL_LONG = 256  # evaluation pictures: long side in pixels (the search reads 32-128 px)


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

