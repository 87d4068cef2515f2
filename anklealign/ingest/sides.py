"""From labelled, decoded images to the train and test sides: duplicates, leakage and label votes.

Rules (docs/INGEST.md):

* Groups are formed over *all* decodable images, train side and test side (:mod:`anklealign.ingest.dedup`).
* A group that holds a test image is test-side: its other members never train ("leakage"); the test
  image itself stays a test image even when a participant also labelled it.
* In a training group every member's own labels vote. A unique majority labels the group (other
  labels are reported as conflicts); a tie drops the labelled members with the reason.
* Exact duplicates (same bytes or same pixels) add nothing but weight: one representative of each
  exact set is kept (its first labelled member by id) and the others are skipped as copies of it.
  Near-duplicates (resized or re-encoded copies) are all kept, with the same group id, so that
  cross-validation folds never split them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from anklealign.ingest.dedup import Groups
from anklealign.ingest.participants import Item

__all__ = ["Sides", "build_sides"]


@dataclass
class Sides:
    """What :func:`build_sides` decided."""

    group: dict[str, int]                                      # image id -> group id (decodable images)
    train: list[tuple[str, int]] = field(default_factory=list)  # (id, label), sorted by id
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    duplicate_groups: int = 0
    leakage_removed: int = 0


def _votes_text(votes: Counter, classes: Sequence[str]) -> str:
    return ", ".join(f"{classes[c]} {n}" for c, n in sorted(votes.items()))


def build_sides(items: Mapping[str, Item], ids: Sequence[str], groups: Groups, test_side: Sequence[str], *,
                classes: Sequence[str], relabel: bool = True) -> Sides:
    """Keep test-side groups out of training and vote the training labels.

    Args:
        items: every image file (id -> its own labels).
        ids: the decodable images, in the order ``groups`` was computed for.
        groups: their duplicate groups (:func:`anklealign.ingest.dedup.find_groups`).
        test_side: ids that belong to the test side (their groups never train).
        classes: class names, for messages.
        relabel: whether a group's labels are voted (the AnkleAlign archive: several students label the same
            picture). False (class folders): every image keeps its own label; a group with several is reported
            as a conflict and kept whole.
    """
    sides = Sides(group=dict(zip(ids, groups.group, strict=True)),
                  duplicate_groups=groups.count_duplicate_groups())
    exact = dict(zip(ids, groups.exact, strict=True))
    test = set(test_side)
    for members in groups.members().values():
        names = [ids[i] for i in members]
        in_test = [n for n in names if n in test]
        if in_test:
            for name in names:
                if items[name].labels:
                    sides.leakage_removed += 1
                if name not in test:
                    sides.skipped.append((name, f"duplicate of test image {in_test[0]}"))
            continue
        _vote_group(names, items, exact, classes, sides, relabel)
    sides.train.sort()
    return sides


def _vote_group(names: list[str], items: Mapping[str, Item], exact: Mapping[str, int],
                classes: Sequence[str], sides: Sides, relabel: bool) -> None:
    labelled = [n for n in names if items[n].labels]
    votes = Counter(label for n in labelled for label in items[n].labels)
    ranked = votes.most_common()
    tie = len(ranked) > 1 and ranked[0][1] == ranked[1][1]
    if len(votes) > 1 and not relabel:
        sides.conflicts.append({"images": ", ".join(labelled), "votes": _votes_text(votes, classes),
                                "resolution": "kept with their own folder labels, in one duplicate group"})
        kept_exact: dict[tuple[int, int], str] = {}
        for name in labelled:
            label = items[name].labels[0]
            key = (exact[name], label)
            if key in kept_exact:
                sides.skipped.append((name, f"exact duplicate of {kept_exact[key]}"))
            else:
                kept_exact[key] = name
                sides.train.append((name, label))
        return
    if len(votes) > 1:
        what = "duplicate group" if len(names) > 1 else "image"
        sides.conflicts.append({
            "images": ", ".join(labelled), "votes": _votes_text(votes, classes),
            "resolution": "tie: dropped" if tie else f"majority {classes[ranked[0][0]]} used for the {what}"})
    kept: dict[int, str] = {}
    for name in names:
        item = items[name]
        if not item.labels:
            copy = next((n for n in labelled if exact[n] == exact[name]), None)
            sides.skipped.append((name, f"exact duplicate of {copy}" if copy else item.why_unlabelled))
        elif tie:
            sides.skipped.append((name, f"conflicting labels ({_votes_text(votes, classes)}): tie, dropped"))
        elif exact[name] in kept:
            sides.skipped.append((name, f"exact duplicate of {kept[exact[name]]}"))
        else:
            kept[exact[name]] = name
            sides.train.append((name, ranked[0][0]))
