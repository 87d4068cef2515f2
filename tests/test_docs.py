"""The documentation tells the truth about the code and the measurements.

* every table rendered from ``benchmarks/results/`` matches its file (``benchmarks/render.py --check``);
* no issue numbers (users never see issues), no link to a missing file or heading;
* every command-line flag the docs name is one that some ``--help`` knows;
* every decimal figure in README.md is in a results-backed table;
* the README's cheap commands run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", page.read_text(encoding="utf-8"), re.M)}


def test_rendered_tables_match_their_results_files() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_issue_numbers_and_no_dead_links(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    if page.name != "CHANGELOG.md":
        assert not re.search(r"\bissue #?\d+", text, re.I), "users never see issues: say what changed instead"
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name}: link to {target}: no such heading"


def _known_flags() -> set[str]:
    from anklealign.cli import _parser as anklealign_parser
    from search.cli.parser import build_parser

    flags: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            flags.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    walk(anklealign_parser())
    for script in (ROOT / "benchmarks").glob("*.py"):  # the benchmark scripts' own options
        flags.update(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", script.read_text(encoding="utf-8")))
    return flags


# Flags of other programs the docs show (pip, pytest, ssh ...), not of this tool.
_OTHER_PROGRAMS = {"--upgrade", "--quiet", "--durations", "--import-mode", "--no-deps", "--extra-index-url"}


def test_every_flag_the_docs_name_exists() -> None:
    known = _known_flags() | _OTHER_PROGRAMS
    unknown = {}
    for page in PAGES:
        if page.name == "CHANGELOG.md":  # history may name flags that are gone
            continue
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", page.read_text(encoding="utf-8")):
            if flag not in known:
                unknown.setdefault(flag, page.name)
    assert not unknown, f"flags named in the docs that no --help knows: {unknown}"


def test_every_decimal_figure_in_the_readme_is_backed_by_results() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import render
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    tables = "\n".join(fn() for fn in render.TABLES.values())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    figures = re.findall(r"(?<![\w.])\d+\.\d{2,}(?![\w.])", readme)
    missing = [f for f in figures if f not in tables]
    assert not missing, f"README figures not in any results-backed table: {missing}"


@pytest.mark.parametrize("module", ["search", "anklealign"])
def test_the_readmes_help_commands_run(module: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f".venv/bin/python -m {module} --help" in readme
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr
