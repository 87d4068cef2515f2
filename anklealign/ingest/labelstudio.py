"""Label Studio JSON exports: one task per image reference, with its label or why it has none."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from anklealign.ingest.filenames import ref_name
from anklealign.ingest.labels import normalize_label

__all__ = ["ExportError", "Task", "parse_export"]


class ExportError(Exception):
    """An export that yields no tasks at all (empty, not JSON, not a task list); the message is the reason."""


@dataclass(frozen=True)
class Task:
    """One Label Studio task.

    Attributes:
        name: the file name it refers to (see :func:`anklealign.ingest.filenames.ref_name`); "" if none.
        ref: the raw references (``file_upload`` and ``data.image``), kept for messages and for
            finding a participant code in a path.
        label: class id, or ``None`` when the task gives no usable label.
        raw_label: the label as written in the export, if any.
        status: ``"labelled"``, ``"cancelled"``, ``"empty result"``, ``"no annotation"`` or
            ``"unknown label"``.
        upload_order: the task id (Label Studio numbers tasks in upload order), else the position
            in the file.
    """

    name: str
    ref: str
    label: int | None
    raw_label: str | None
    status: str
    upload_order: int = 0


def parse_export(data: bytes) -> list[Task]:
    """Parse the bytes of a Label Studio JSON export (standard or JSON-MIN format).

    Raises:
        ExportError: the file is empty, not UTF-8 JSON, or not a list of tasks.
    """
    if not data.strip():
        raise ExportError("empty file")
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ExportError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(obj, dict) and "data" in obj:
        obj = [obj]  # a single task exported on its own
    if not isinstance(obj, list):
        raise ExportError(f"not a Label Studio export (top level is a JSON {type(obj).__name__})")
    return [_task(item, position) for position, item in enumerate(obj) if isinstance(item, dict)]


def _task(item: dict[str, Any], position: int) -> Task:
    data = item.get("data") if isinstance(item.get("data"), dict) else {}
    refs = [r for r in (item.get("file_upload"), data.get("image"), item.get("image"))
            if isinstance(r, str) and r.strip()]
    if not refs:  # any other string field of `data` may hold the image (custom labelling configs)
        refs = [v for v in data.values() if isinstance(v, str) and v.strip()][:1]
    name = ref_name(refs[0]) if refs else ""
    raw, status = _choice(item)
    label = normalize_label(raw) if raw is not None else None
    if raw is not None:
        status = "labelled" if label is not None else "unknown label"
    task_id = item.get("id")
    order = task_id if isinstance(task_id, int) and not isinstance(task_id, bool) else position
    return Task(name=name, ref=" ".join(refs), label=label, raw_label=raw, status=status, upload_order=order)


def _choice(item: dict[str, Any]) -> tuple[str | None, str]:
    """The first choice of the first non-cancelled annotation, or None and the reason."""
    if isinstance(item.get("choice"), str):  # JSON-MIN export
        return item["choice"], "labelled"
    annotations = item.get("annotations") or item.get("completions") or []
    annotations = [a for a in annotations if isinstance(a, dict)]
    if not annotations:
        return None, "no annotation"
    active = [a for a in annotations if not a.get("was_cancelled")]
    if not active:
        return None, "cancelled"
    for annotation in active:
        for result in annotation.get("result") or []:
            value = result.get("value") if isinstance(result, dict) else None
            choices = value.get("choices") if isinstance(value, dict) else None
            if isinstance(choices, list) and choices and isinstance(choices[0], str):
                return choices[0], "labelled"
    return None, "empty result"
