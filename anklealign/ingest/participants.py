"""Labels of participant images: each folder's Label Studio export, then class-named sub-folders.

Per participant folder, every task of its export(s) is matched to one of the folder's images by the
file-name rules of :mod:`anklealign.ingest.filenames` (the folder's own code may have been added to names).
An image's own labels are those of its matched, labelled tasks; only if it has none does a
class-named sub-folder (``normal/``, ``pronation/``, ``supination/``, by the label rule) label it. What
stays unmatched is reported: every task naming no image, and every image without a label.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from anklealign.ingest.filenames import NameIndex
from anklealign.ingest.labels import CLASSES, normalize_label
from anklealign.ingest.labelstudio import ExportError, Task, parse_export
from anklealign.ingest.layout import Layout

__all__ = ["Item", "LabelNotes", "label_participants"]


@dataclass
class Item:
    """One image file of the data set and what its own folder says about it."""

    id: str                      # "<folder>/<path inside the folder>"
    path: str                    # path inside the source
    folder: str
    labels: list[int] = field(default_factory=list)   # own labels (several tasks may name one image)
    why_unlabelled: str = ""


@dataclass
class LabelNotes:
    """What the labelling step reports."""

    skipped: list[tuple[str, str]] = field(default_factory=list)        # (label file, why ignored)
    unmatched_tasks: list[dict[str, str]] = field(default_factory=list)  # {"file", "task", "reason"}
    conflicts: list[dict[str, str]] = field(default_factory=list)
    unknown_labels: list[dict[str, str]] = field(default_factory=list)
    tasks: int = 0


_STATUS = {"cancelled": "was cancelled", "empty result": "has an empty result",
           "no annotation": "has no annotation", "unknown label": "has an unknown label {!r}"}


def read_export(path: str, read: Callable[[str], bytes], notes: LabelNotes) -> tuple[list[Task] | None, str]:
    """Parse one export: ``(tasks, "")``, or ``(None, reason)`` for an unusable one (also reported)."""
    try:
        tasks = parse_export(read(path))
    except (ExportError, OSError) as exc:
        reason = f"label file ignored: {exc if isinstance(exc, ExportError) else f'unreadable ({exc})'}"
        notes.skipped.append((path, reason))
        return None, reason
    for task in tasks:
        if task.status == "unknown label":
            notes.unknown_labels.append({"file": path, "task": task.name, "label": str(task.raw_label)})
    return tasks, ""


def _folder_label(item_path: str) -> int | None:
    """The class of the nearest class-named sub-folder of the image inside its participant folder."""
    for part in reversed(PurePosixPath(item_path).parts[1:-1]):
        label = normalize_label(part)
        if label is not None:
            return label
    return None


def label_participants(layout: Layout, read: Callable[[str], bytes]) -> tuple[dict[str, Item], LabelNotes]:
    """Every participant image with its own labels (or why it has none), plus the report notes."""
    items: dict[str, Item] = {}
    notes = LabelNotes()
    for folder, paths in sorted(layout.participants.items()):
        inside = {path: path[len(layout.root) + len(folder) + 1:] for path in paths}
        folder_items = {f"{folder}/{rel}": Item(id=f"{folder}/{rel}", path=path, folder=folder)
                        for path, rel in inside.items()}
        items.update(folder_items)
        index = NameIndex(((i.id, PurePosixPath(i.path).name) for i in folder_items.values()), [folder])
        matched: dict[str, list[tuple[str, Task]]] = defaultdict(list)
        usable = []
        for export in sorted(layout.labels_files.get(folder, [])):
            tasks, _ = read_export(export, read, notes)
            if tasks is None:
                continue
            usable.append(PurePosixPath(export).name)
            notes.tasks += len(tasks)
            for task in tasks:
                candidates = index.candidates(task.name)[1] if task.name else ()
                if len(candidates) == 1:
                    matched[candidates[0]].append((export, task))
                else:
                    reason = (f"ambiguous: matches {', '.join(candidates)}" if candidates
                              else f"no such image in {folder}/" if task.name else "the task names no file")
                    notes.unmatched_tasks.append({"file": export, "task": task.name or task.ref,
                                                  "reason": reason})
        for item in folder_items.values():
            _label_item(item, matched.get(item.id, []), usable, notes)
    return items, notes


def _label_item(item: Item, tasks: list[tuple[str, Task]], usable: list[str], notes: LabelNotes) -> None:
    item.labels = [task.label for _, task in tasks if task.label is not None]
    from_folder = _folder_label(item.id)
    if item.labels and from_folder is not None and any(label != from_folder for label in item.labels):
        notes.conflicts.append({"image": item.id, "labels": ", ".join(CLASSES[lab] for lab in item.labels),
                                "resolution": f"label file used; sub-folder says {CLASSES[from_folder]}"})
    if item.labels:
        return
    if from_folder is not None:
        item.labels = [from_folder]
    elif tasks:
        export, task = tasks[0]
        detail = _STATUS.get(task.status, task.status).format(task.raw_label)
        item.why_unlabelled = f"no label: its task in {PurePosixPath(export).name} {detail}"
    elif usable:
        item.why_unlabelled = f"no label: no task in {', '.join(usable)}"
    else:
        item.why_unlabelled = "no label: the folder has no usable label file"
