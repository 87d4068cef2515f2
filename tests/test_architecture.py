"""The architecture of docs/ARCHITECTURE (README "Code layout"), checked on the source.

Imports go one way: ``search.cli`` -> ``search.final`` | ``search.view`` -> ``search.run`` ->
``search.study`` -> ``space`` | ``anklealign``; inside ``anklealign``: the API (``anklealign``,
``cli``, ``dataset``) -> ``twin`` -> ``ingest`` -> (``errors``, ``report``). Every import counts,
at module level or inside a function. No cycle between modules, no private Optuna API outside
one module, no ``user_attrs`` by string outside the records module, no argparse below the command
line, no module over 400 lines, no citation of a Markdown file the repository does not ship.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "space", "anklealign")
MAX_LINES = 400

# The layer of each part of the code (higher may import lower; equal only inside one part).
LAYERS: dict[str, int] = {
    "search.__main__": 6, "search.cli": 5, "search.api": 4.5,
    "search.final": 4, "search.view": 4,
    "search.run": 3,
    "search.study": 2,
    "anklealign": 1.3,  # the API: anklealign/__init__, __main__, cli, dataset
    "anklealign.twin": 1.2,
    "anklealign.ingest": 1.1,
    "anklealign.errors": 1.0, "anklealign.report": 1.0,
    "space": 1.3,  # space and anklealign never import each other (checked below)
    "search": 0,  # the empty package itself
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _sources()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module of this project, line) for every import statement of the file."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in MODULES and t != name:
                yield t, node.lineno


GRAPH = {name: sorted({t for t, _ in _imports(name, path)}) for name, path in MODULES.items()}


def _part(module: str) -> str:
    """The longest key of LAYERS that contains the module."""
    candidates = [k for k in LAYERS if module == k or module.startswith(k + ".")]
    if not candidates:
        raise AssertionError(f"{module} belongs to no layer of LAYERS: add it")
    return max(candidates, key=len)


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _part(module)


def test_imports_go_one_way() -> None:
    wrong = []
    for src, targets in GRAPH.items():
        for dst in targets:
            a, b = _part(src), _part(dst)
            if src == a and dst.startswith(a + "."):
                continue  # a package's __init__ may import its own modules
            if a == b or LAYERS[a] > LAYERS[b]:
                if (a.split(".")[0], b.split(".")[0]) in {("space", "anklealign"), ("anklealign", "space")}:
                    wrong.append(f"{src} -> {dst} (space and anklealign never import each other)")
                elif a.split(".")[0] != "search" and b.split(".")[0] == "search":
                    wrong.append(f"{src} -> {dst} (only search imports search)")
                continue
            wrong.append(f"{src} -> {dst} ({a} may not import {b})")
    assert not wrong, "imports against the direction:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    # A package __init__ re-exporting its modules is not a cycle of its own: leave out its edges into itself.
    graph = {src: [d for d in ds if not (src in LAYERS or d.startswith(src + "."))] for src, ds in GRAPH.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def _grep(pattern: str, *, allowed: set[str]) -> list[str]:
    rx = re.compile(pattern)
    hits = []
    for name, path in MODULES.items():
        if name in allowed:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if rx.search(code):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    return hits


def test_private_and_experimental_optuna_api_only_in_its_wrapper() -> None:
    hits = _grep(r"\._storage\b|\._trial_id\b|\._study_id\b|optuna\.storages\._|optuna\._|ExperimentalWarning"
                 r"|get_heartbeat_thread|is_heartbeat_enabled|(?<!optuna_api\.)(fail_stale_trials|set_metric_names)\(",
                 allowed={"search.study.optuna_api"})
    assert not hits, "use search.study.optuna_api:\n" + "\n".join(hits)


def test_user_attributes_are_read_and_written_only_by_the_records_module() -> None:
    hits = _grep(r"user_attrs\s*\[|user_attrs\.get\(|\"\w+\" in \w+\.user_attrs|set_user_attr\(|user_attrs=\{",
                 allowed={"search.study.records"})
    assert not hits, "use search.study.records (TrialRecord / StudyRecord):\n" + "\n".join(hits)


def test_argparse_only_in_the_command_line() -> None:
    hits = [h for h in _grep(r"\bargparse\b|Namespace", allowed=set())
            if not h.startswith(("search/cli/", "anklealign/cli.py"))]
    assert not hits, "no argparse below search/cli:\n" + "\n".join(hits)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})"


def _cited_markdown() -> Iterator[tuple[Path, str]]:
    texts = [p for pkg in (*PACKAGES, "tests", "benchmarks", "docs", "studies") for p in (ROOT / pkg).rglob("*")
             if p.suffix in (".py", ".md", ".toml") and ".venv" not in p.parts]
    texts += [ROOT / "README.md", ROOT / "Makefile", ROOT / "Dockerfile"]
    for p in texts:
        if p.is_file() and p != Path(__file__).resolve():
            for m in re.finditer(r"(?<![\w./-])([\w./-]+\.md)\b", p.read_text(encoding="utf-8")):
                yield p, m.group(1)


# The twin's marker text is part of its bytes (it names docs/DATA.md without the folder); it changes only
# with a GENERATOR_VERSION bump, which would make every cached twin again.
_CITATIONS_IN_DATA = {("anklealign/twin/archive.py", "DATA.md")}


def test_docs_cite_only_files_that_exist() -> None:
    missing = []
    for path, cited in _cited_markdown():
        if (str(path.relative_to(ROOT)), cited) in _CITATIONS_IN_DATA and (ROOT / "docs" / cited).is_file():
            continue
        candidates = [ROOT / cited, path.parent / cited]
        if not any(c.is_file() for c in candidates):
            missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "\n".join(sorted(set(missing)))
