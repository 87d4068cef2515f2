"""Which code, when and where a measurement was made: every benchmark's JSON carries it.

A figure in the docs is only as good as what stands behind it; ``benchmarks/render.py`` prints this next to
every table it renders from a results file.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["provenance"]

_ROOT = Path(__file__).resolve().parents[2]


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "date", "machine", "python", "command"}`` of the running measurement.

    ``commit`` is the short hash of the checkout the code runs from (None outside a git checkout), ``dirty``
    whether it had uncommitted changes.
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(status) if status is not None else None,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "python": platform.python_version(), "command": " ".join(argv if argv is not None else sys.argv)}
