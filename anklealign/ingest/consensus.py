"""The consensus (test) set: the list of images, each annotator's labels for them, and the vote.

Identity. A line ``anklealign\\<CODE>\\<file>`` of the list names one image in one participant folder;
that pair is the identity of a test image, so a file name that occurs in two folders gives two test
images.

Matching annotator tasks to listed images. A task names only a file, so it is matched with the
file-name rules of :mod:`anklealign.ingest.filenames` against the listed images. When the name fits several listed
images (the same name in two folders), a participant code in the task's references
(``photo_D6AE9F.jpg``, ``.../D6AE9F/photo.jpg``) picks the folder. What is left is decided per annotator
and name:

* As many tasks as listed images still unclaimed: tasks and images are paired in upload order (task id)
  and list order. If the tasks' labels agree, every pairing gives the same votes and nothing is
  assumed. If they differ, the archive does not record which image got which label; the pairing then
  assumes the annotator uploaded the images in list order, and such votes are counted in the report
  (``order_paired_votes``). Dropping them instead would not be neutral: it would keep only annotators
  who saw both images alike and so pull the two images' majorities together.
* Otherwise, if the tasks agree and the images are duplicates of one another (the same picture), each
  image gets the label.
* Otherwise the tasks give no vote and are reported.

An annotator whose tasks for one image disagree gives that image no vote.

Tie rule. The majority is the class with most votes. When classes tie, the tie goes to the class whose
voters are the more reliable: each annotator is weighted by their (Laplace-smoothed) agreement with the
majority on the untied images, ``(agree + 1) / (labelled + 2)``, and the tied class with the larger sum
of weights wins. This uses only the annotations themselves (one step of a Dawid-Skene-style
reliability estimate) rather than a fixed preference. If the weights tie too, the tied class that is
more frequent among the untied majorities wins, then the lower class id. ``test_ties`` marks every tie so
that metrics can report them separately or score against the soft votes instead.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from anklealign.ingest.filenames import NameIndex
from anklealign.ingest.labelstudio import Task

__all__ = ["Listed", "Tally", "annotator_labels", "fleiss_kappa", "parse_list", "tally"]


@dataclass(frozen=True)
class Listed:
    """A listed test image: its id, its file name and the participant folder (code) it lies in."""

    id: str
    name: str
    folder: str


def parse_list(data: bytes) -> list[tuple[int, list[str]]]:
    """Non-empty lines of the consensus list (BOM, CRLF tolerated) as ``(line number, path parts)``."""
    for encoding in ("utf-8-sig", "cp1250"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - cp1250 decodes nearly anything
        text = data.decode("latin-1")
    return [(number, [p for p in re.split(r"[\\/]+", line.strip()) if p])
            for number, line in enumerate(text.splitlines(), 1) if line.strip()]


@dataclass
class AnnotatorResult:
    """Labels of the usable annotators and what could not be used."""

    labels: np.ndarray                  # (A, M) int64, -1 = no label
    annotators: list[str]
    unusable: dict[str, str] = field(default_factory=dict)      # annotator -> why no vote counts
    order_paired: int = 0   # votes placed by the upload-order assumption (labels that differ)
    notes: list[dict[str, str]] = field(default_factory=list)   # unmatched / ambiguous / conflicting


def _by_code(candidates: tuple[str, ...], ref: str, folders: Mapping[str, str]) -> tuple[str, ...]:
    text = ref.casefold()
    hits = tuple(c for c in candidates
                 if re.search(rf"(?<![0-9a-z]){re.escape(folders[c].casefold())}(?![0-9a-z])", text))
    return hits if len(hits) == 1 else candidates


def annotator_labels(listed: Sequence[Listed], exports: Mapping[str, Sequence[Task]], *,
                     codes: Iterable[str], same_content: Callable[[Sequence[str]], bool]) -> AnnotatorResult:
    """Match every annotator's tasks to the listed images (rules in the module docstring).

    Args:
        listed: the test images, in list order (column order of the result).
        exports: annotator code -> parsed tasks.
        codes: every participant/annotator code that may have been added to a file name.
        same_content: whether the given image ids are all duplicates of one another.
    """
    index = NameIndex(((item.id, item.name) for item in listed), codes)
    column = {item.id: m for m, item in enumerate(listed)}
    folders = {item.id: item.folder for item in listed}
    rows, annotators, result = [], [], AnnotatorResult(np.zeros((0, len(listed)), np.int64), [])
    for code in sorted(exports):
        given: dict[int, list[int]] = defaultdict(list)   # column -> labels
        claimed: set[int] = set()                          # columns a task names unambiguously
        ambiguous: dict[tuple[str, ...], list[Task]] = defaultdict(list)
        for task in exports[code]:
            candidates = index.candidates(task.name)[1]
            if len(candidates) > 1:
                candidates = _by_code(candidates, task.ref, folders)
            if len(candidates) == 1:
                claimed.add(column[candidates[0]])
                if task.label is not None:
                    given[column[candidates[0]]].append(task.label)
            elif candidates:
                ambiguous[candidates].append(task)
            elif task.label is not None:
                result.notes.append({"annotator": code, "task": task.name, "problem": "names no listed image"})
        for candidates, tasks in ambiguous.items():
            _resolve(code, candidates, tasks, [column[c] for c in candidates if column[c] not in claimed],
                     given, result, same_content)
        row = np.full(len(listed), -1, dtype=np.int64)
        for m, labels in given.items():
            if len(set(labels)) == 1:
                row[m] = labels[0]
            else:
                result.notes.append({"annotator": code, "task": listed[m].id,
                                     "problem": f"conflicting labels {sorted(labels)}; no vote"})
        if (row >= 0).any():
            rows.append(row)
            annotators.append(code)
        else:
            result.unusable[code] = "yields no label for any listed image"
    if rows:
        result.labels = np.stack(rows)
    result.annotators = annotators
    return result


def _resolve(code: str, candidates: tuple[str, ...], tasks: list[Task], open_columns: list[int],
             given: dict[int, list[int]], result: AnnotatorResult,
             same_content: Callable[[Sequence[str]], bool]) -> None:
    """Votes of one annotator's tasks whose name fits several listed images (module docstring)."""
    tasks = sorted(tasks, key=lambda t: t.upload_order)
    labels = {t.label for t in tasks if t.label is not None}
    if not labels or not open_columns:
        return
    if len(tasks) == len(open_columns):   # one task per image: pair in upload order = list order
        for task, m in zip(tasks, open_columns, strict=True):
            if task.label is not None:
                given[m].append(task.label)
        if len({t.label for t in tasks}) > 1:   # the pairing decides who got which label (or none)
            result.order_paired += sum(t.label is not None for t in tasks)
        return
    if len(labels) == 1 and same_content(candidates):   # the same picture: the label describes each
        label = next(iter(labels))
        for m in open_columns:
            given[m].append(label)
        return
    problem = (f"ambiguous: {len(tasks)} task{'s' * (len(tasks) != 1)} for {len(open_columns)} images "
               f"({', '.join(candidates)}); no vote")
    result.notes.extend({"annotator": code, "task": t.name, "problem": problem} for t in tasks if t.label is not None)


@dataclass(frozen=True)
class Tally:
    """Per-image votes, majority (tie rule applied), tie flags and agreement statistics."""

    votes: np.ndarray      # (M, K) int64
    majority: np.ndarray   # (M,) int64, -1 where no vote
    ties: np.ndarray       # (M,) bool
    agreement: dict[str, float | None]


def tally(labels: np.ndarray, num_classes: int) -> Tally:
    """Vote the (A, M) annotator labels (-1 = none) with the tie rule of the module docstring."""
    num_images = labels.shape[1]
    votes = np.zeros((num_images, num_classes), dtype=np.int64)
    for a, m in zip(*np.nonzero(labels >= 0), strict=True):
        votes[m, labels[a, m]] += 1
    top = votes.max(axis=1, initial=0)
    tied_classes = [np.flatnonzero((votes[m] == top[m]) & (top[m] > 0)) for m in range(num_images)]
    ties = np.array([len(c) > 1 for c in tied_classes], dtype=bool)
    majority = np.array([c[0] if len(c) else -1 for c in tied_classes], dtype=np.int64)
    clear = ~ties & (majority >= 0)
    labelled = (labels >= 0) & clear[None, :]
    agree = (labels == majority[None, :]) & labelled
    weight = (agree.sum(axis=1) + 1.0) / (labelled.sum(axis=1) + 2.0)   # (A,)
    prior = np.bincount(majority[clear], minlength=num_classes)
    for m in np.flatnonzero(ties):
        candidates = tied_classes[m]
        score = {int(c): float(weight[labels[:, m] == c].sum()) for c in candidates}
        majority[m] = max(candidates, key=lambda c: (round(score[int(c)], 9), prior[c], -c))
    return Tally(votes=votes, majority=majority, ties=ties, agreement=_agreement(votes, majority))


def _agreement(votes: np.ndarray, majority: np.ndarray) -> dict[str, float | None]:
    totals = votes.sum(axis=1)
    voted = totals > 0
    with_majority = (votes[voted, majority[voted]] / totals[voted]).mean() if voted.any() else None
    pairs = totals >= 2
    pairwise = None
    if pairs.any():
        n = totals[pairs]
        pairwise = float(((votes[pairs] * (votes[pairs] - 1)).sum(axis=1) / (n * (n - 1))).mean())
    return {"mean_with_majority": None if with_majority is None else float(with_majority),
            "pairwise": pairwise, "fleiss_kappa": fleiss_kappa(votes)}


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of an (items, categories) count table; items may have different numbers of raters.

    Per item ``P_i = sum_c n_ic (n_ic - 1) / (n_i (n_i - 1))`` over items with ``n_i >= 2``;
    ``P_e = sum_c p_c**2`` with ``p_c`` the share of all ratings in category c;
    ``kappa = (mean(P_i) - P_e) / (1 - P_e)``. ``None`` when undefined (no item with two ratings,
    or every rating in one category).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    counts, n = counts[n >= 2], n[n >= 2]
    if len(n) == 0:
        return None
    p_i = (counts * (counts - 1)).sum(axis=1) / (n * (n - 1))
    p_c = counts.sum(axis=0) / n.sum()
    p_e = float((p_c**2).sum())
    if p_e >= 1.0:
        return None
    return float((p_i.mean() - p_e) / (1.0 - p_e))
