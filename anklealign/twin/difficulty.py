"""How hard the synthetic twin is: one number in [0, 1] sets signal, nuisance and label noise.

Each generator setting has three anchors, at difficulty 0 (``easy`` end), 0.5 (``realistic``, the
default) and 1 (``hard`` end), and is interpolated linearly between them. The class lives in the
heel tilt ``t``; the picture shows ``r = t + N(0, presentation_noise)`` (posture, soft tissue, the
camera's angle), drawn ``tilt_gain`` times as strongly as the geometry says, among nuisance variation
(pose, lighting, background, scale, blur, sensor noise). Participants and consensus annotators label
what they see, ``r``, through a personal bias and their noise. Easy twins show a large, clean heel
angle that people read alike; hard ones a small angle among strong nuisance, read noisily.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LEVELS", "Difficulty", "parse_difficulty"]

# Named levels (``--difficulty easy|realistic|hard``).
LEVELS = {"easy": 0.0, "realistic": 0.5, "hard": 1.0}

# setting -> (value at 0, at 0.5, at 1). Degrees for the tilt settings; factors of the first twin's
# nuisance for the scene settings. The realistic anchors were calibrated with
# benchmarks/twin_learnability.py (docs/TWIN.md): a clear drawn tilt among moderate
# nuisance, but a shown tilt 4.5 degrees off the true one and ~25 % of training labels off the true
# class, so that a good from-scratch CNN closes about 60 % of the gap from chance to the ceiling in
# 40 epochs while the net6 seed recipe stays far below, as on the real data (from-scratch CNNs 0.45-0.61
# accuracy, the seed nets 0.16-0.41 consensus accuracy).
_ANCHORS: dict[str, tuple[float, float, float]] = {
    "tilt_gain": (2.6, 2.0, 0.25),  # drawn heel angle per degree of shown tilt
    "presentation_noise": (0.5, 4.5, 6.0),  # degrees between the true tilt t and the shown tilt r
    "participant_noise": (1.0, 2.0, 7.0),  # degrees, a participant's reading of r
    "participant_bias": (0.5, 1.0, 2.5),  # degrees, spread of the participants' personal offsets
    "annotator_noise": (3.0, 5.4, 8.0),  # degrees, a consensus annotator's reading of r
    "annotator_bias": (1.0, 2.2, 3.4),  # degrees, spread of the annotators' personal offsets
    "foot_scale": (1.35, 1.3, 0.7),  # foot size relative to the original twin's
    "lean": (0.5, 0.8, 3.0),  # degrees, std of the leg's lean (the angle is measured against it)
    "light": (0.2, 0.4, 1.0),  # maximum strength of the lighting gradient
    "texture": (0.4, 0.7, 1.6),  # strength of the wall texture
    "blur": (0.3, 0.6, 2.0),  # camera blur factor
    "grain": (2.0, 4.0, 12.0),  # maximum sensor noise, grey levels
    "lines": (0.8, 0.65, 0.0),  # chance of the clinician's bisection lines on leg and heel
}


def _at(anchors: tuple[float, float, float], level: float) -> float:
    lo, mid, hi = anchors
    return lo + (mid - lo) * level / 0.5 if level <= 0.5 else mid + (hi - mid) * (level - 0.5) / 0.5


@dataclass(frozen=True)
class Difficulty:
    """The generator's settings at one difficulty level (see the module docstring)."""

    level: float
    tilt_gain: float
    presentation_noise: float
    participant_noise: float
    participant_bias: float
    annotator_noise: float
    annotator_bias: float
    foot_scale: float
    lean: float
    light: float
    texture: float
    blur: float
    grain: float
    lines: float

    @classmethod
    def at(cls, level: float) -> Difficulty:
        """The settings at ``level`` in [0, 1]."""
        if isinstance(level, bool) or not isinstance(level, int | float) or not math.isfinite(level) \
                or not 0.0 <= level <= 1.0:
            raise ValueError(f"difficulty must be easy, realistic, hard or a number in [0, 1], got {level!r}")
        return cls(level=float(level), **{k: round(_at(v, float(level)), 6) for k, v in _ANCHORS.items()})

    @property
    def name(self) -> str:
        """``easy``/``realistic``/``hard`` at those levels, else the number."""
        return next((n for n, v in LEVELS.items() if v == self.level), f"{self.level:g}")

    @property
    def label_noise(self) -> float:
        """Std in degrees of a participant's reading of the shown tilt (bias and noise together)."""
        return math.hypot(self.participant_noise, self.participant_bias)


def parse_difficulty(value: str | float | Difficulty) -> Difficulty:
    """``easy``, ``realistic``, ``hard``, a number in [0, 1] (or its text), or a :class:`Difficulty`."""
    if isinstance(value, Difficulty):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LEVELS:
            return Difficulty.at(LEVELS[text])
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"difficulty must be easy, realistic, hard or a number in [0, 1], got {value!r}") from None
        return Difficulty.at(number)
    return Difficulty.at(value)
