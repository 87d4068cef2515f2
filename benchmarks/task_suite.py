#!/usr/bin/env python
"""Does the search's choice beat its default on data no decision has seen? A suite of tasks and seeds.

Each task (``benchmarks/suite_tasks.py``) is a ``train/<class>``, ``test/<class>`` folder with a held-out
draw. Per task, seed and rule (``--rule``: a name for the code under test, run from ``--code``) it runs
``python -m search run --data FOLDER`` with nothing set but the run's name and seed (arm ``tpe``), the same
with a random sampler (arm ``random``; its final step retrains no reference nets), and, where the task's
construction knows the one setting the default gets wrong, that default with the setting corrected (arm
``oracle``: one trial, the space restricted to the right value, so the default is projected onto it). Every
kept model is applied to the held-out draw; the per-image predictions go into the results file, so that
paired intervals between arms (which are separate runs) are computed from it alone.

    python benchmarks/task_suite.py --tasks colour,flip --seeds 11,12 --rule new           # run (resumable)
    python benchmarks/task_suite.py --rule today --code /work/wt-today --tasks twin --seeds 201
    python benchmarks/task_suite.py --table [--json]                                       # the table only
    python benchmarks/task_suite.py --quick                                                # smoke: seconds

Rows are appended to ``--results`` (default ``benchmarks/results/task_suite.jsonl``) as each arm ends; a
(task, seed, rule, arm, study seed) already there is not run again. The twin's development seeds
(``anklealign.report.DEVELOPMENT_SEEDS``) and the held-out headline seeds (100-102) are refused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file's folder holds benchmarks/search.py, which shares its name with the package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import numpy as np  # noqa: E402

ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import suite_tasks  # noqa: E402

sys.path.remove(str(HERE))

from anklealign.report import DEVELOPMENT_SEEDS  # noqa: E402
from search.final.scoring import group_bootstrap, weighted_metrics  # noqa: E402
from search.run.metrics import cell_codes  # noqa: E402
from search.study.provenance import provenance  # noqa: E402

HEADLINE_SEEDS = (100, 101, 102)  # docs/SEARCH_QUALITY.md's held-out twin seeds: never tuned on, never reused
RESULTS = ROOT / "benchmarks" / "results" / "task_suite.jsonl"
QUICK = ["study.trials=3", "training.max_epochs=2", "cv.folds=2", "final.seeds=1", "final.bootstrap=20",
         'final.baseline_presets=["default", "net0"]', 'study.enqueue_presets=["default", "net0"]',
         "sampler.n_startup_trials=1"]
ARM_SETTINGS = {"tpe": [], "random": ['sampler.name="random"', "final.baseline_presets=[]"]}
# Another final step on the tpe arm's finished trials (a copy of its run folder): a choice rule measured on the
# same trials, so that only the rule differs.
REFITS = {"greedy": ['final.ensemble="greedy"', "final.top_k=5", "final.baseline_presets=[]"]}
SEED_NETS = ("baseline", "net0", "net1", "net2", "net3", "net4", "net5", "net6")


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _encode(pred: np.ndarray) -> str:
    return "".join("0123456789abcdefghijklmnopqrstuvwxyz"[int(k)] for k in pred)


def _decode(text: str) -> np.ndarray:
    return np.asarray([int(c, 36) for c in text], dtype=np.int64)


def run_arm(task: str, seed: int, arm: str, *, rule: str, code: Path, work: Path, study_seed: int,
            quick: bool) -> dict:
    """One ``search run`` and its models on the held-out draw: one row of the results file."""
    from search.final.score import predictions

    data, heldout = suite_tasks.make_task(task, seed, work / "tasks" / f"{task}-{seed}", quick=quick)
    study = f"{task}-{seed}-{rule}-{arm}-s{study_seed}"
    sets = [*ARM_SETTINGS.get(arm, []), *(QUICK if quick else [])]
    if arm == "oracle":
        sets += [*suite_tasks.ORACLE[task], "study.trials=1", 'study.enqueue_presets=["default"]',
                 "final.baseline_presets=[]", "final.keep_default=false"]
    argv = [sys.executable, "-m", "search", "-q", "run", "--data", str(data), "--out", str(work / "runs"),
            "--seed", str(study_seed), "--set", f"study.name={study}"]
    for s in sets:
        argv += ["--set", s]
    runs = work / "runs"
    if arm in REFITS:
        tpe = runs / f"{task}-{seed}-{rule}-tpe-s{study_seed}"
        if not (tpe / "best" / "metrics.json").is_file():
            raise RuntimeError(f"arm {arm} refits the tpe arm's trials: run the tpe arm of {tpe.name} first")
        runs = work / "refit" / arm
        shutil.rmtree(runs / tpe.name, ignore_errors=True)
        shutil.copytree(tpe, runs / tpe.name, ignore=shutil.ignore_patterns("best"))
        study, sets = tpe.name, REFITS[arm]  # the quick settings come with the copied study.toml
        argv = [sys.executable, "-m", "search", "-q", "finalize", "--out", str(runs), "--study", study]
        for s in sets:
            argv += ["--set", s]
    cpu0, t0 = _cpu_children(), time.perf_counter()
    proc = subprocess.run(argv, cwd=code, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(code)})
    cpu, wall = _cpu_children() - cpu0, time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{study}: search run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    p = predictions(runs / study, heldout)
    final = p.final
    models = {"exported": _encode(p.exported.argmax(1))}
    models.update({name: _encode(probs.argmax(1)) for name, probs in p.presets.items()})
    selection = final.get("selection") or {}
    return {"task": task, "seed": seed, "rule": rule, "arm": arm, "study_seed": study_seed, "quick": quick,
            "settings": sets, "classes": p.classes, "truth": _encode(p.labels), "models": models,
            "exported": final.get("exported"), "trial": final.get("trial"),
            "chosen_by": {k: v for k, v in (selection.get("versus_default") or {}).items() if k != "why"},
            "cv_value": (final.get("cv") or {}).get("value"),
            "cpu_minutes": round(cpu / 60, 2), "wall_minutes": round(wall / 60, 2),
            "code": _commit(code), "provenance": provenance()}


def _commit(code: Path) -> str:
    """The commit of the checkout that ran (``+`` when it has uncommitted changes)."""
    git = lambda *a: subprocess.run(["git", *a], cwd=code, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


# --- the table ----------------------------------------------------------------------------------------

def _macro_f1(truth: np.ndarray, preds: list[np.ndarray], k: int, n_boot: int, seed: int) -> tuple:
    """Macro-F1 of each prediction vector, and 95 % percentile intervals of each and of each minus the first."""
    codes = np.stack([cell_codes(truth, p, k) for p in preds])
    point = weighted_metrics(codes, np.ones((1, len(truth))), k)["macro_f1"][:, 0]

    def stat(w: np.ndarray) -> np.ndarray:
        f = weighted_metrics(codes, w, k)["macro_f1"]  # (S, B)
        return np.concatenate([f, f[:1] - f[1:]])

    cis = group_bootstrap(stat, None, len(truth), n_boot=n_boot, seed=seed, method="percentile")
    return point, cis[:len(preds)], cis[len(preds):]


def summarise(rows: list[dict], n_boot: int = 1000) -> list[dict]:
    """Per (task, seed, rule, study seed): each arm's held-out macro-F1 and the exported model's paired gains."""
    out = []
    keys = sorted({(r["task"], r["seed"], r["rule"], r["study_seed"]) for r in rows if r["arm"] == "tpe"})
    for task, seed, rule, study_seed in keys:
        arms = {r["arm"]: r for r in rows if (r["task"], r["seed"], r["study_seed"]) == (task, seed, study_seed)
                and (r["rule"] == rule or r["arm"] == "oracle")}
        tpe = arms["tpe"]
        truth, k = _decode(tpe["truth"]), len(tpe["classes"])
        named = {"exported": _decode(tpe["models"]["exported"])}
        if "default" in tpe["models"]:
            named["default"] = _decode(tpe["models"]["default"])
        nets = {n: _decode(tpe["models"][n]) for n in SEED_NETS if n in tpe["models"]}
        if nets:  # the best seed net on the held-out draw itself: an upper bound of what the nets offer
            f = {n: weighted_metrics(cell_codes(truth, p, k)[None], np.ones((1, len(truth))), k)["macro_f1"][0, 0]
                 for n, p in nets.items()}
            best = max(f, key=f.get)
            named[f"best net ({best})"] = nets[best]
        for arm in ("random", "oracle", *REFITS):
            if arm in arms and arms[arm]["truth"] == tpe["truth"]:
                named[arm] = _decode(arms[arm]["models"]["exported"])
        point, cis, diffs = _macro_f1(truth, list(named.values()), k, n_boot, seed)
        scores = {n: {"macro_f1": round(float(v), 4), "ci95": ci} for n, v, ci in zip(named, point, cis, strict=True)}
        gains = {n: {"diff": round(float(point[0] - point[i + 1]), 4), "ci95": ci}
                 for i, (n, ci) in enumerate(zip(list(named)[1:], diffs, strict=True))}
        row = {"task": task, "seed": seed, "rule": rule, "study_seed": study_seed, "images": len(truth),
               "scores": scores, "exported_minus": gains, "exported_trial": tpe["trial"],
               "cpu_minutes": {a: r["cpu_minutes"] for a, r in arms.items()}}
        if "default" in scores and "oracle" in scores:
            gap = scores["oracle"]["macro_f1"] - scores["default"]["macro_f1"]
            row["gap_closed"] = (round((scores["exported"]["macro_f1"] - scores["default"]["macro_f1"]) / gap, 3)
                                 if gap > 0.02 else None)  # no gap to close: the default is the oracle here
        out.append(row)
    return out


def table(summary: list[dict]) -> str:
    f = lambda s: f"{s['macro_f1']:.3f}" if s else "-"  # noqa: E731
    d = lambda g: (f"{g['diff']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]" if g and g.get("ci95")  # noqa: E731
                   else "-")
    lines = ["| task | seed | rule | exported | default | best seed net | random | oracle | exported - default | "
             "exported - random | gap closed | greedy refit (- exported) | CPU min (tpe/random/oracle) |",
             "|" + "---|" * 13]
    for r in summary:
        s, g = r["scores"], r["exported_minus"]
        net = next((k for k in s if k.startswith("best net")), None)
        cpu = "/".join(f"{r['cpu_minutes'][a]:.0f}" if a in r["cpu_minutes"] else "-"
                       for a in ("tpe", "random", "oracle"))
        gc = r.get("gap_closed")
        ss = "" if r["study_seed"] == 0 else f" (study seed {r['study_seed']})"
        lines.append(f"| {r['task']} | {r['seed']}{ss} "
                     f"| {r['rule']} | {f(s['exported'])} | {f(s.get('default'))} | "
                     f"{f'{f(s[net])} ({net[10:-1]})' if net else '-'} | {f(s.get('random'))} | {f(s.get('oracle'))} | "
                     f"{d(g.get('default'))} | {d(g.get('random'))} | {'-' if gc is None else f'{gc:.0%}'} | "
                     f"{f(s.get('greedy'))} {_neg(g.get('greedy'))} | {cpu} |")
    return "\n".join(lines)


def _neg(g: dict | None) -> str:
    """exported - X as X - exported, with its interval."""
    if not g or not g.get("ci95"):
        return ""
    neg = lambda v: 0.0 - v + 0.0  # noqa: E731 - no "-0.000"
    return f"({neg(g['diff']):+.3f} [{neg(g['ci95'][1]):+.3f}, {neg(g['ci95'][0]):+.3f}])"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(suite_tasks.TASKS), help="comma-separated tasks")
    parser.add_argument("--seeds", default="11,12,13", help="task seeds (the twin: generator seeds)")
    parser.add_argument("--study-seeds", default="0", help="study seeds of the tpe arm (the spread of its choice)")
    parser.add_argument("--arms", default="tpe,random,oracle",
                        help="tpe, random, oracle (where the task has one), greedy (the tpe trials, another final "
                             "step)")
    parser.add_argument("--rule", default="new", help="a name for the code under test, e.g. today or new")
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose 'python -m search' runs")
    parser.add_argument("--work", default="", help="task folders and runs (default: a temp folder)")
    parser.add_argument("--results", default=str(RESULTS), help="the JSONL file rows are appended to")
    parser.add_argument("--table", action="store_true", help="print the table of --results; run nothing")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny tasks and studies, figures meaningless")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if not args.table:
        tasks = [t for t in args.tasks.split(",") if t]
        seeds = [int(s) for s in args.seeds.split(",") if s]
        if "twin" in tasks and set(seeds) & {*DEVELOPMENT_SEEDS, *HEADLINE_SEEDS}:
            parser.error(f"twin seeds {sorted(set(seeds) & {*DEVELOPMENT_SEEDS, *HEADLINE_SEEDS})} were used by "
                         "earlier decisions (development) or are the headline's held-out seeds: pick others")
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="task-suite-"))
        done = {(r["task"], r["seed"], r["rule"] if r["arm"] != "oracle" else "-", r["arm"], r["study_seed"],
                 r.get("quick", False)) for r in read_rows(results)}
        for task in tasks:
            for seed in seeds:
                for study_seed in [int(s) for s in args.study_seeds.split(",") if s]:
                    for arm in [a for a in args.arms.split(",") if a]:
                        if arm == "oracle" and (task not in suite_tasks.ORACLE or study_seed != 0):
                            continue
                        if arm in ("random", *REFITS) and study_seed != 0:
                            continue
                        key = (task, seed, args.rule if arm != "oracle" else "-", arm, study_seed, args.quick)
                        if key in done:
                            continue
                        print(f"task suite: {task} seed {seed} {arm} (rule {args.rule}, study seed {study_seed}) ...",
                              file=sys.stderr, flush=True)
                        row = run_arm(task, seed, arm, rule=args.rule if arm != "oracle" else "-",
                                      code=Path(args.code), work=work, study_seed=study_seed, quick=args.quick)
                        results.parent.mkdir(parents=True, exist_ok=True)
                        with results.open("a", encoding="utf-8") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"  {row['cpu_minutes']:.1f} CPU min, exported trial {row['trial']}", file=sys.stderr,
                              flush=True)
    summary = summarise([r for r in read_rows(results) if r.get("quick", False) == args.quick],
                        n_boot=200 if args.quick else 1000)
    print(json.dumps(summary, indent=1) if args.json else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
