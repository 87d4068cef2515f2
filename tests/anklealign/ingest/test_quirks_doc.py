"""anklealign/ingest/QUIRKS.md: every section of docs/DATA.md is there, and every name it cites exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import anklealign

PACKAGE = Path(anklealign.__file__).parent
ROOT = PACKAGE.parent
QUIRKS = (ROOT / "anklealign/ingest/QUIRKS.md").read_text(encoding="utf-8")


def _resolves(dotted: str) -> bool:
    """Whether ``anklealign.<dotted>`` is a module, or an attribute reached from the longest module prefix."""
    parts = f"anklealign.{dotted}".split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_cited_name_exists() -> None:
    cited = set(re.findall(r"`((?:ingest|twin)\.[A-Za-z_][\w.]*)`", QUIRKS))
    assert len(cited) > 50
    assert sorted(name for name in cited if not _resolves(name)) == []


def test_every_cited_test_exists() -> None:
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", QUIRKS):
        assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), (path, name)


def test_every_section_of_data_md_is_covered() -> None:
    data = (ROOT / "docs/DATA.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)$", data, flags=re.MULTILINE)
    assert sections and [s for s in sections if f"\n## {s}\n" not in QUIRKS] == []
