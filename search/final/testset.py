"""The test split: read in one place, and every read of its labels logged.

:func:`read_test` is the only function of the search package that reads ``ds.test`` content; each
final step or export reads the test labels once, and that read is appended to the run folder's
``test_reads.jsonl``, which the final table, the model card and the report show.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import anklealign

__all__ = ["TEST_READS", "test_reads", "read_test", "reads_block", "log_test_read"]

TEST_READS = "test_reads.jsonl"


def test_reads(run_dir: Path) -> list[dict[str, Any]]:
    """The log of every read of the test labels in a run folder (empty when none)."""
    path = Path(run_dir) / TEST_READS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by a crash still counted as a read
            rows.append({"unreadable": line[:200]})
    return rows


def log_test_read(run_dir: Path, entry: dict[str, Any]) -> int:
    """Append one line to ``test_reads.jsonl`` (O_APPEND: concurrent commands never interleave a line)."""
    line = json.dumps({"time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **entry}) + "\n"
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / TEST_READS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(test_reads(run_dir))


def read_test(ds: anklealign.Dataset, *, run_dir: Path | None, why: dict[str, Any] | None = None) -> dict[str, Any]:
    """The test split as arrays: the only function of the search package that reads its content.

    Each final step or export reads the test labels once: that read is logged in
    ``<run_dir>/test_reads.jsonl``. The same images at another input size (for a seed net) are part of
    that read (``run_dir`` None: not logged again).
    """
    count = log_test_read(run_dir, {**(why or {}), "test_images": len(ds.test.ids)}) if run_dir else 0
    return {"images": ds.test.images, "labels": ds.test.labels.cpu().numpy(), "groups": ds.test.groups.cpu().numpy(),
            "votes": ds.test_votes.cpu().numpy(), "annotator_labels": ds.test_annotator_labels.cpu().numpy(),
            "ties": int(ds.test_ties.sum()), "ids": tuple(ds.test.ids), "reads": count}


def reads_block(count: int) -> dict[str, Any]:
    block: dict[str, Any] = {"count": count, "log": TEST_READS}
    if count > 1:
        block["warning"] = (f"the test labels of this study have been read {count} times: only the first read is "
                            "untouched by choices made after seeing a test score")
    return block
