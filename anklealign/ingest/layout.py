"""Finding the dataset inside a source by its content, and sorting its files by role.

AnkleAlign root: the folder whose children include participant folders and/or a ``consensus``
folder, wherever it sits (``anklealign/``, ``anklealign/anklealign/``, or the top itself). A participant
folder is named by a 6-character code of letters and digits; because a plain word such as ``sample``
also has six letters, a code must contain a digit or be written in capitals.

Image-folder root: a folder with ``train/<class>/`` and ``test/<class>/`` sub-folders.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from anklealign.errors import DataError
from anklealign.report import twin_brief, twin_lines

__all__ = ["MARKER", "MARKER_JSON", "Layout", "find_layout", "is_participant_code", "twin_figures"]

MARKER = "synthetic_twin.txt"   # compared case-insensitively
MARKER_JSON = "The twin's figures (anklealign.synth), as JSON:"   # the marker's figures follow this line
_CODE = re.compile(r"^[A-Za-z0-9]{6}$")


def is_participant_code(name: str) -> bool:
    """``D6AE9F``, ``NC1O2T``, ``b8v41y`` are codes; ``sample`` (a lower-case word) is not."""
    return bool(_CODE.match(name)) and (any(ch.isdigit() for ch in name) or name.isupper())


@dataclass
class Layout:
    """The roles of a source's files. Paths are the source's own (relative to its top)."""

    kind: str                                    # "anklealign" | "imagefolder"
    root: str                                    # "" or "a/b/" (trailing slash)
    synthetic: bool = False
    marker: str | None = None                    # the twin's marker file, if any
    participants: dict[str, list[str]] = field(default_factory=dict)   # folder -> non-JSON files
    labels_files: dict[str, list[str]] = field(default_factory=dict)   # folder -> its JSON exports
    consensus_lists: list[str] = field(default_factory=list)
    consensus_exports: list[str] = field(default_factory=list)
    splits: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # train/test -> class -> files
    other: list[tuple[str, str]] = field(default_factory=list)           # (path, why it is not used)


def _children(files: Sequence[str]) -> dict[str, set[str]]:
    """Child folder names per folder ("" = the top, else "a/b/"); only folders that hold files."""
    children: dict[str, set[str]] = defaultdict(set)
    for name in files:
        parts = name.split("/")[:-1]
        for depth in range(len(parts)):
            children["".join(p + "/" for p in parts[:depth])].add(parts[depth])
    return children


def find_layout(files: Sequence[str], where: str) -> Layout:
    """Locate the root and assign every file under it a role.

    The shallowest candidate root wins; at equal depth an AnkleAlign root with a consensus folder
    beats a train/test root, which beats participant folders without a consensus folder.

    Raises:
        DataError: neither participant folders / a consensus folder nor a train/test layout exists.
    """
    children = _children(files)
    candidates = []
    for folder, names in children.items():
        depth = folder.count("/")
        by_case = {n.casefold(): n for n in names}
        if all(children.get(f"{folder}{by_case.get(s, '?')}/") for s in ("train", "test")):
            candidates.append((depth, 1, 0, folder, "imagefolder"))
        codes = sum(is_participant_code(n) for n in names)
        if "consensus" in by_case or codes:
            candidates.append((depth, 0 if "consensus" in by_case else 2, -codes, folder, "anklealign"))
    if not candidates:
        zips = [name for name in files if name.casefold().endswith(".zip")]
        hint = f"; to read {zips[0]}, pass the zip itself" if zips else ""
        raise DataError(f"{where}: not an AnkleAlign dataset (no participant folders or consensus folder) "
                        f"and not an image-folder dataset (no train/<class>/ and test/<class>/ folders){hint}")
    *_, root, kind = min(candidates)
    layout = Layout(kind=kind, root=root)
    for name in files:
        path = PurePosixPath(name)
        if path.name.casefold() == MARKER and root.startswith("".join(p + "/" for p in path.parts[:-1])):
            layout.synthetic = True   # the marker sits at the root or above it
            layout.marker = name
            continue
        if not name.startswith(root):
            continue   # outside the dataset (e.g. __MACOSX/ next to anklealign/): not ours to judge
        parts = name[len(root):].split("/")
        if kind == "imagefolder":
            _classify_split(layout, name, parts)
        else:
            _classify_anklealign(layout, name, parts)
    return layout


def _classify_split(layout: Layout, name: str, parts: list[str]) -> None:
    split = parts[0].casefold()
    if split in ("train", "test") and len(parts) >= 3:
        layout.splits.setdefault(split, {}).setdefault(parts[1], []).append(name)
    else:
        layout.other.append((name, "not in train/<class>/ or test/<class>/"))


def _classify_anklealign(layout: Layout, name: str, parts: list[str]) -> None:
    top = parts[0]
    if len(parts) > 1 and is_participant_code(top):
        if parts[-1].casefold().endswith(".json"):
            layout.labels_files.setdefault(top, []).append(name)
        else:
            layout.participants.setdefault(top, []).append(name)
            layout.labels_files.setdefault(top, [])
    elif len(parts) > 1 and top.casefold() == "consensus":
        suffix = parts[-1].casefold().rsplit(".", 1)[-1]
        if suffix == "txt":
            layout.consensus_lists.append(name)
        elif suffix == "json":
            layout.consensus_exports.append(name)
        else:
            layout.other.append((name, "in the consensus folder, which holds only the list and the votes"))
    else:
        where = f"{top}/" if len(parts) > 1 else "the dataset root"
        layout.other.append((name, f"not in a participant folder (in {where})"))


def twin_figures(marker_text: str) -> dict:
    """The figures a twin's marker file carries after :data:`MARKER_JSON` (empty if none or unreadable), with
    the generator seed its first line names (``seed``: reports say when it is one the defaults were chosen on)."""
    head, found, rest = marker_text.partition(MARKER_JSON)
    if not found:
        return {}
    try:
        figures = json.loads(rest)
        twin_brief(figures)   # the shape every reader of the figures relies on; else they are not used
        twin_lines(figures)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return {}
    seed = re.search(r"\bwith seed (\d+)\b", head)
    if seed and "seed" not in figures:
        figures["seed"] = int(seed.group(1))
    return figures
