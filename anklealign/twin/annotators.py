"""The consensus annotators of the synthetic twin: who labelled which consensus image, and how.

Each usable annotator sees an image's tilt through a personal bias and Gaussian noise, so images
near a class boundary split the vote. With the consensus tilts of :mod:`anklealign.twin.plan` this gives
about 0.72 mean agreement with the majority, 0.57 pairwise agreement and 15-18 labels per image,
as in docs/DATA.md; a few images are planted as exact ties.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from anklealign.twin.draw import tilt_class
from anklealign.twin.planner import Plan

__all__ = ["Annotator", "plan_annotators"]

N_FILES, N_EMPTY, N_NO_LABELS, N_SHARED = 21, 2, 1, 12  # shared: annotators with a participant folder
MIN_LABELS, MAX_LABELS = 15, 18


@dataclass(frozen=True)
class Annotator:
    """One consensus JSON file.

    Attributes:
        code: the annotator's code.
        file_name: its name in ``consensus/`` (the code, sometimes lower-cased, + ``.json``).
        kind: ``usable``, ``empty`` (a 0-byte file) or ``no_labels`` (every result empty).
        vocab: label vocabulary (a key of ``VOCABS``).
        votes: per consensus line (txt order), the class id given, or None.
        gaps: per line, how a missing vote shows: ``absent`` (no task; never for a name listed
            twice), ``empty_result``, ``cancelled``; ``""`` where there is a vote.
    """

    code: str
    file_name: str
    kind: str
    vocab: str
    votes: tuple[int | None, ...]
    gaps: tuple[str, ...]


def _votes(rng: np.random.Generator, tilt: float, bias: np.ndarray, *, tie: bool,
           noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(annotator indices, class ids) for one image (``tilt``: the shown one); a supination majority is redrawn."""
    n = len(bias) - 2 if tie else int(rng.integers(MIN_LABELS, MAX_LABELS + 1))
    who = np.sort(rng.choice(len(bias), size=n, replace=False))
    for _ in range(100):
        seen = tilt + bias[who] + noise * rng.standard_normal(n)
        if tie:  # the lower half of the perceived tilts says pronation: an exact 50/50 split
            return who, np.where(np.argsort(np.argsort(seen)) < n // 2, 0, 1)
        labels = np.array([tilt_class(float(s)) for s in seen])
        counts = np.bincount(labels, minlength=3)
        if counts[2] < max(counts[0], counts[1]):  # the real set has no supination majority
            return who, labels
    return who, np.minimum(labels, 1)


def plan_annotators(plan: Plan, participant_bias: dict[str, float]) -> list[Annotator]:
    """The 21 consensus annotators: 2 empty files, 1 without labels, 18 usable."""
    rng = plan.rng
    pictures = {f"{f.code}/{e.relpath}": plan.pictures[e.picture]  # type: ignore[index]
                for f in plan.folders for e in f.entries if "consensus" in e.quirks}
    participants = sorted(participant_bias)
    shared = [participants[int(i)] for i in rng.choice(len(participants), N_SHARED, replace=False)]
    all_codes = shared + plan.extra_codes[: N_FILES - N_SHARED]
    all_codes = [all_codes[int(i)] for i in rng.permutation(len(all_codes))]
    kinds = ["empty"] * N_EMPTY + ["no_labels"] * N_NO_LABELS
    kinds += ["usable"] * (N_FILES - len(kinds))
    kinds = [kinds[int(i)] for i in rng.permutation(N_FILES)]
    lower = set(rng.choice(N_FILES, 3, replace=False).tolist())
    vocabs = ["english", "accented", "accented", "std_space"] + ["std"] * (N_FILES - N_EMPTY - N_NO_LABELS - 4)
    vocabs = [vocabs[int(i)] for i in rng.permutation(len(vocabs))]
    usable = [i for i, k in enumerate(kinds) if k == "usable"]
    spread = plan.difficulty.annotator_bias
    bias = np.array([participant_bias.get(all_codes[i], spread * float(rng.standard_normal())) for i in usable])
    lines = len(plan.consensus)
    votes: list[list[int | None]] = [[None] * lines for _ in range(N_FILES)]
    for j, image in enumerate(plan.consensus):
        pic = pictures[image]
        who, labels = _votes(rng, pic.shown, bias, tie=pic.key in plan.ties, noise=plan.difficulty.annotator_noise)
        for a, label in zip(who, labels, strict=True):
            votes[usable[int(a)]][j] = int(label)
    # Tasks keep the txt order (task ids ascending), so a name listed twice is told apart by order;
    # that only works if no annotator drops one of the two tasks, hence no "absent" gap there.
    names = Counter(image.split("/", 1)[1] for image in plan.consensus)
    twice = [names[image.split("/", 1)[1]] > 1 for image in plan.consensus]
    gap_styles = ("absent", "empty_result", "empty_result", "cancelled")
    out = []
    for i, (code, kind) in enumerate(zip(all_codes, kinds, strict=True)):
        if kind == "no_labels":
            gaps = ("empty_result",) * lines
        else:
            gaps = tuple("" if v is not None else gap_styles[int(rng.integers(1 if dup else 0, 4))]
                         for v, dup in zip(votes[i], twice, strict=True))
        out.append(Annotator(code=code, file_name=f"{code.lower() if i in lower else code}.json", kind=kind,
                             vocab=vocabs[usable.index(i)] if kind == "usable" else "std",
                             votes=tuple(votes[i]), gaps=gaps))
    return sorted(out, key=lambda a: a.file_name.casefold())
