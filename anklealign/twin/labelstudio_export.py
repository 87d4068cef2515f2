"""Label Studio JSON exports for the synthetic twin.

The layout follows Label Studio's documented JSON export: a top-level list of tasks, each with
``data.image`` = ``/data/upload/<project>/<upload>``, ``file_upload`` = ``<8 hex>-<original name>``
and ``annotations[0].result[0]`` a ``choices`` region (``from_name``/``to_name`` name the control
and the image tags of the labelling config).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

__all__ = ["LsTask", "export_json"]

_CONFIGS = (("choice", "image"), ("label", "image"), ("class", "img"), ("choices", "image"))
_EPOCH = datetime(2025, 10, 6, 9, 0, 0)


@dataclass(frozen=True)
class LsTask:
    """One task as a participant's or annotator's export holds it.

    Attributes:
        name: the uploaded file name (after Label Studio's ``<8 hex>-`` prefix).
        label: the choice as written, or None for an empty ``result``.
        cancelled: the annotation was skipped (``was_cancelled``).
    """

    name: str
    label: str | None
    cancelled: bool = False


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token(rng: np.random.Generator, n: int, alphabet: str) -> str:
    return "".join(alphabet[int(i)] for i in rng.integers(len(alphabet), size=n))


def export_json(tasks: Sequence[LsTask], *, rng: np.random.Generator, project: int) -> bytes:
    """A Label Studio JSON export of ``tasks`` (in upload order) for one user's ``project``.

    Args:
        tasks: the tasks, in the order they were uploaded (task ids follow it).
        rng: random source for ids, upload prefixes and timestamps.
        project: the Label Studio project id.
    """
    from_name, to_name = _CONFIGS[int(rng.integers(len(_CONFIGS)))]
    user = int(rng.integers(1, 40))
    first_task = int(rng.integers(1, 4000))
    first_annotation = int(rng.integers(1, 4000))
    start = _EPOCH + timedelta(days=float(rng.uniform(0, 12)))
    out = []
    for i, task in enumerate(tasks):
        upload = f"{_token(rng, 8, '0123456789abcdef')}-{task.name}"
        created = start + timedelta(seconds=float(rng.uniform(0, 60)))
        done = created + timedelta(minutes=float(rng.uniform(5, 600)))
        lead = round(float(rng.uniform(1.5, 45.0)), 3)
        result = [] if task.label is None else [{
            "value": {"choices": [task.label]},
            "id": _token(rng, 10, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"),
            "from_name": from_name, "to_name": to_name, "type": "choices", "origin": "manual",
        }]
        annotation = {
            "id": first_annotation + i, "completed_by": user, "result": result,
            "was_cancelled": task.cancelled, "ground_truth": False,
            "created_at": _stamp(done), "updated_at": _stamp(done), "draft_created_at": None,
            "lead_time": lead, "prediction": {}, "result_count": 0,
            "unique_id": str(uuid.UUID(bytes=rng.bytes(16), version=4)), "import_id": None,
            "last_action": None, "bulk_created": False, "task": first_task + i, "project": project,
            "updated_by": user, "parent_prediction": None, "parent_annotation": None, "last_created_by": None,
        }
        out.append({
            "id": first_task + i, "annotations": [annotation], "file_upload": upload, "drafts": [],
            "predictions": [], "data": {"image": f"/data/upload/{project}/{upload}"}, "meta": {},
            "created_at": _stamp(created), "updated_at": _stamp(done), "inner_id": i + 1,
            "total_annotations": 0 if task.cancelled else 1, "cancelled_annotations": int(task.cancelled),
            "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": project, "updated_by": user, "comment_authors": [],
        })
    return json.dumps(out, ensure_ascii=False, indent=int(rng.choice((0, 2, 4))) or None).encode("utf-8")
