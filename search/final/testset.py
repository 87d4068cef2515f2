"""The test split: read in one place, and every read of its labels logged.

:func:`read_test` is the only function of the search package that reads ``ds.test`` content; each
final step or export reads the test labels once, and that read is appended to the run folder's
``test_reads.jsonl``, which the final table, the model card and the report show.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import anklealign

__all__ = ["TEST_READS", "test_reads", "read_test", "reads_block", "log_test_read", "complete_test_read"]

TEST_READS = "test_reads.jsonl"


def test_reads(run_dir: Path) -> list[dict[str, Any]]:
    """The log of every read of the test labels in a run folder (empty when none).

    A final step's read carries a ``read_id`` and, once its outputs are written, a later ``completed`` line;
    each read comes back with ``interrupted`` true when that line never came (the process died between reading
    the labels and writing metrics.json: the labels were read all the same)."""
    path = Path(run_dir) / TEST_READS
    if not path.is_file():
        return []
    rows, done = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a crash still counted as a read
            row = {"unreadable": line[:200]}
        if "completed" in row:
            done.add(row["completed"])
        else:
            rows.append(row)
    for row in rows:
        if "read_id" in row:
            row["interrupted"] = row["read_id"] not in done
    return rows


def complete_test_read(run_dir: Path, read_id: str) -> None:
    """Say that the read ``read_id`` ended with its outputs written (appended; see :func:`test_reads`)."""
    _append(Path(run_dir), {"completed": read_id})


def log_test_read(run_dir: Path, entry: dict[str, Any]) -> int:
    """Append one line to ``test_reads.jsonl`` (O_APPEND: concurrent commands never interleave a line)."""
    _append(run_dir, entry)
    return len(test_reads(run_dir))


def _append(run_dir: Path, entry: dict[str, Any]) -> None:
    line = json.dumps({"time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **entry}) + "\n"
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / TEST_READS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_test(ds: anklealign.Dataset, *, run_dir: Path | None, why: dict[str, Any] | None = None) -> dict[str, Any]:
    """The test split as arrays: the only function of the search package that reads its content.

    Each final step or export reads the test labels once: that read is logged in
    ``<run_dir>/test_reads.jsonl``. The same images at another input size (for a seed net) are part of
    that read (``run_dir`` None: not logged again).
    """
    read_id = uuid.uuid4().hex[:12]
    entry = {**(why or {}), "test_images": len(ds.test.ids), "read_id": read_id}
    count = log_test_read(run_dir, entry) if run_dir else 0
    return {"read_id": read_id, "images": ds.test.images, "labels": ds.test.labels.cpu().numpy(),
            "groups": ds.test.groups.cpu().numpy(), "votes": ds.test_votes.cpu().numpy(),
            "annotator_labels": ds.test_annotator_labels.cpu().numpy(), "ties": int(ds.test_ties.sum()),
            "ids": tuple(ds.test.ids), "reads": count}


def reads_block(count: int) -> dict[str, Any]:
    block: dict[str, Any] = {"count": count, "log": TEST_READS}
    if count > 1:
        block["warning"] = (f"the test labels of this study have been read {count} times: only the first read is "
                            "untouched by choices made after seeing a test score")
    return block
