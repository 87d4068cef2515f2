#!/usr/bin/env python
"""Render the tables of docs/ from the benchmark results in benchmarks/results/, or check that they match.

Every table in a Markdown page between ``<!-- BEGIN table:NAME -->`` and ``<!-- END table:NAME -->`` is
rendered here from a results file (JSON lines, one measured row each, with its command, commit, date and
machine). A figure in a table therefore always has a file behind it, and ``--check`` (run by the test suite)
fails when a page's table differs from what its file renders to, so no table can drift from its data.

    python benchmarks/render.py            # rewrite the tables in place
    python benchmarks/render.py --check    # exit 1 and name the tables that differ
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(<!-- BEGIN table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END table:(?P=name) -->)", re.S)


def rows(name: str) -> list[dict]:
    path = RESULTS / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _ci(block: dict, digits: int = 3) -> str:
    ci = block.get("ci95")
    return f"{block['mean']:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _source(name: str, rs: list[dict]) -> str:
    prov = [r.get("provenance") or {} for r in rs]
    commits = sorted({p.get("commit") or "?" for p in prov})
    dates = sorted({(p.get("date") or "?")[:10] for p in prov})
    machines = sorted({p.get("machine") or "?" for p in prov})
    commands = sorted({p.get("command") or "?" for p in prov})
    return (f"\n<sub>From `benchmarks/results/{name}.jsonl` ({len(rs)} rows; code {', '.join(commits)}; "
            f"{', '.join(dates)}; {'; '.join(machines)}): `{'`; `'.join(commands)}`.</sub>\n")


def selection_power() -> str:
    rs = rows("selection_power")
    lines = ["| level | trials disagree on | studies | any of 21 equal trials declared better | best trial vs "
             "default alone, as before | a trial +0.08 better found (power) |", "|---|---|---|---|---|---|"]
    for r in sorted(rs, key=lambda r: (r.get("alpha", 0.025), r["disagreement"])):
        lines.append(f"| {r.get('alpha', 0.025):.1%} | {r['disagreement']:.1%} of images | {r['studies']} | "
                     f"{r['error_rate']:.1%} | {r['error_rate_best_vs_default']:.1%} | {r['power']:.1%} |")
    return "\n".join(lines) + "\n" + _source("selection_power", rs)


def _nets(r: dict) -> tuple[str, dict]:
    nets = {k: v for k, v in r["eval"]["baselines"].items() if k.startswith("net") or k == "baseline"}
    best = max(nets, key=lambda k: nets[k]["macro_f1"]["mean"])
    return best, nets[best]["macro_f1"]


def _gap(r: dict) -> float:
    random = r["eval"]["baselines"]["stratified_random"]["macro_f1"]["mean"]
    return (r["eval"]["ensemble"]["macro_f1"]["mean"] - random) / (r["ceiling"] - random)


def heldout() -> str:
    rs = [r for r in rows("search_quality") if r["config"] == "new"]
    lines = ["| twin seed | trials complete/pruned | CPU min | exported | exported, eval macro-F1 | default config, "
             "no search | best seed net | random | ceiling | gap closed | exported − default (paired) | consensus set: "
             "macro-F1, accuracy |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rs, key=lambda r: r["seed"]):
        vs = r["winner"].get("versus_default") or {}
        what = {"default": "the default", "winner": "the best trial", "other": "another trial"}.get(vs.get("kept"), "?")
        net, net_score = _nets(r)
        d = r["search_gain"]["vs"].get("default") or {}
        diff = (f"{d['difference']:+.3f}" + (f" [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d.get("ci95") else "")
                if d else "-")
        test = r["test_set"]["ensemble"]
        lines.append(
            f"| {r['seed']} | {r['trials'].get('COMPLETE', 0)}/{r['trials'].get('PRUNED', 0)} | "
            f"{r['cpu_minutes']:.0f} | "
            f"{what} (#{r['winner']['trial']}) | **{_ci(r['eval']['ensemble']['macro_f1'])}** | "
            f"{_ci(r['eval']['baselines']['default']['macro_f1'])} | {net} {_ci(net_score)} | "
            f"{r['eval']['baselines']['stratified_random']['macro_f1']['mean']:.3f} | {r['ceiling']:.3f} | "
            f"{_gap(r):.0%} | {diff} | {test['macro_f1']['mean']:.3f}, {test['accuracy']['mean']:.3f} |")
    mean = lambda f: sum(f(r) for r in rs) / len(rs)  # noqa: E731
    lines.append(f"| **mean** | | {mean(lambda r: r['cpu_minutes']):.0f} | | "
                 f"**{mean(lambda r: r['eval']['ensemble']['macro_f1']['mean']):.3f}** | "
                 f"{mean(lambda r: r['eval']['baselines']['default']['macro_f1']['mean']):.3f} | "
                 f"{mean(lambda r: _nets(r)[1]['mean']):.3f} | "
                 f"{mean(lambda r: r['eval']['baselines']['stratified_random']['macro_f1']['mean']):.3f} | "
                 f"{mean(lambda r: r['ceiling']):.3f} | {mean(_gap):.0%} | | "
                 f"{mean(lambda r: r['test_set']['ensemble']['macro_f1']['mean']):.3f}, "
                 f"{mean(lambda r: r['test_set']['ensemble']['accuracy']['mean']):.3f} |")
    return "\n".join(lines) + "\n" + _source("search_quality", rs)


def ranks() -> str:
    rs = [r for r in rows("search_quality") if r["config"] == "new"]
    lines = ["| twin seed | exported model's rank [95 %] | always the training majority | always the test majority "
             "(ORACLE) | random guessing | of |", "|---|---|---|---|---|---|"]
    show = lambda x: f"{x['rank']}" + (f" [{x['rank_ci95'][0]:.0f}, {x['rank_ci95'][1]:.0f}]" if x.get("rank_ci95") else "")  # noqa: E731,E501
    for r in sorted(rs, key=lambda r: r["seed"]):
        rk = r["test_set"]["ranks"]
        const = next((v for k, v in rk.items() if v.get("kind") == "constant" and "ORACLE" not in k), None)
        oracle = next((v for k, v in rk.items() if v.get("kind") == "constant" and "ORACLE" in k), const)
        rand = next((v for k, v in rk.items() if v.get("kind") == "random"), None)
        cell = lambda x: show(x) if x else "-"  # noqa: E731
        lines.append(f"| {r['seed']} | {show(rk['ensemble'])} | {cell(const)} | {cell(oracle)} | {cell(rand)} | "
                     f"{rk['ensemble']['of']} |")
    return "\n".join(lines) + "\n" + _source("search_quality", rs)


def calibration_clean() -> str:
    rs = [r for r in rows("search_quality") if r["config"] == "new" and r.get("calibration_vs_true")]
    lines = ["| twin seed | temperature (fitted on OOF, training labels) | eval NLL vs true class: before → after | "
             "ECE: before → after | Brier: before → after |", "|---|---|---|---|---|"]
    for r in sorted(rs, key=lambda r: r["seed"]):
        c = r["calibration_vs_true"]
        lines.append(f"| {r['seed']} | {c['temperature']:.2f} | {c['nll'][0]:.3f} → {c['nll'][1]:.3f} | "
                     f"{c['ece'][0]:.3f} → {c['ece'][1]:.3f} | {c['brier'][0]:.3f} → {c['brier'][1]:.3f} |")
    if rs:
        m = lambda i, k: sum(r["calibration_vs_true"][k][i] for r in rs) / len(rs)  # noqa: E731
        lines.append(f"| **mean** | | {m(0, 'nll'):.3f} → {m(1, 'nll'):.3f} | {m(0, 'ece'):.3f} → {m(1, 'ece'):.3f} | "
                     f"{m(0, 'brier'):.3f} → {m(1, 'brier'):.3f} |")
    return "\n".join(lines) + "\n" + _source("search_quality", rs)


def task_suite() -> str:
    """The task suite's table (benchmarks/task_suite.py renders it from the same rows)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import task_suite as suite
    finally:
        if str(ROOT / "benchmarks") in sys.path:  # task_suite drops the folder itself (it holds a search.py)
            sys.path.remove(str(ROOT / "benchmarks"))
    rs = [r for r in rows("task_suite") if not r.get("quick")]
    return suite.table(suite.summarise(rs)) + "\n" + _source("task_suite", rs)


TABLES: dict[str, Callable[[], str]] = {"task-suite": task_suite, "selection-power": selection_power,
                                        "heldout": heldout, "ranks": ranks,
                                        "calibration-clean": calibration_clean}


def render(text: str) -> str:
    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise SystemExit(f"render: unknown table {name!r} (known: {', '.join(TABLES)})")
        return m.group(1) + TABLES[name]() + m.group(4)
    return _BLOCK.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"render: tables differ from benchmarks/results in {', '.join(map(str, stale))}: run "
              "python benchmarks/render.py", file=sys.stderr)
        return 1
    print(f"render: {'checked' if args.check else 'rendered'} {len(PAGES)} pages"
          + (f"; rewrote {', '.join(map(str, stale))}" if stale and not args.check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
