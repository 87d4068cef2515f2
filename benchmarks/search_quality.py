#!/usr/bin/env python
"""Does the search find models that beat the hand-made nets? Measured on held-out evaluation draws.

For each generator seed it writes a realistic twin (scale 1.0) with an evaluation draw of ``--eval-n``
fresh images labelled with their true class, then runs ``python -m search run`` with each
configuration (``new``: today's defaults; ``old``: the defaults before 2026-12-03) at that
configuration's default trial count, and scores the run with ``python -m search score`` on the draw.
Per seed and configuration it reports, with 95 % intervals: the final model (mean of its seeds), the
exported ensemble, each seed net and the default configuration retrained with the same final protocol,
stratified random; the winner's cross-validated estimate (raw and bias-corrected) next to its eval
score; CPU minutes (``getrusage`` of the child processes) and wall minutes; chance and the ceiling.

``--pruners successive_halving,none`` adds, on the first seed and right after its rows, the new defaults
with each pruner under the same time budget (``--timeout`` = the trial phase of the guarded run, or
``--budget-s``) and no trial cap, so that what pruning saves buys more trials: quality per CPU-minute.

    python benchmarks/search_quality.py [--seeds 0,1,2] [--configs new,old] [--pruners ...] [--set K=V] [--json]
    python benchmarks/search_quality.py --quick     # a smoke run: seconds, figures meaningless

Every finished (seed, configuration) is appended to ``--out/results.jsonl`` as it ends, so an
interrupted benchmark keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file's folder holds benchmarks/search.py, which shares its name with the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

import anklealign  # noqa: E402
from search.study.provenance import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALL_PRESETS = '["default", "baseline", "net0", "net1", "net2", "net3", "net4", "net5", "net6"]'
# The defaults before 2026-12-03 (studies/anklealign.toml at 079b78b..fcc3f16), with every seed net and the
# default configuration retrained as baselines so that both rows of the table have the same comparisons.
OLD = ["study.trials=100", 'study.objective="best_epoch"', "training.max_epochs=12",
       'pruner.name="successive_halving"', "pruner.n_warmup_steps=2", "space.image_size=[64, 96]",
       "space.channels=[8, 16, 32, 64, 128]", "space.n_blocks=[2, 7]",
       'study.enqueue_presets=["baseline", "net0", "net1", "net2", "net3", "net4", "net5", "net6"]',
       "final.seeds=5", "final.top_k=1", f"final.baseline_presets={ALL_PRESETS}"]
NEW: list[str] = []
QUICK = ["study.trials=4", "training.max_epochs=2", "space.image_size=[32]", "cv.folds=2", "final.seeds=1",
         "final.bootstrap=20", 'final.baseline_presets=["default", "net6"]',
         'study.enqueue_presets=["default", "net6"]']


def _truth(twin_dir: Path, seed: int, scale: float, eval_n: int) -> dict[str, str]:
    """id -> true class of every image of the twin (written as ``truth.json`` when the twin is made)."""
    path = twin_dir / "truth.json"
    if not path.is_file():
        kwargs = {"seed": seed, "scale": scale, "difficulty": "realistic", "eval_n": eval_n}
        if twin_dir.exists():  # a twin of an older run of this script: the generator is deterministic, so
            with tempfile.TemporaryDirectory() as tmp:  # the same twin made aside gives its truth
                manifest = anklealign.synth(Path(tmp) / "twin", **kwargs)
        else:
            manifest = anklealign.synth(twin_dir, **kwargs)
        path.write_text(json.dumps({i: t.true_class for i, t in manifest.images.items()}))
    return json.loads(path.read_text())


def oof_scores(run_dir: Path, study: str, trial_number: int, twin: Path, truth: dict[str, str]) -> dict:
    """The winner's out-of-fold macro-F1 against the training labels and against the true classes."""
    import optuna

    from search.final.selection import oof_score
    from search.study.records import TrialRecord

    ds = anklealign.load(twin, image_size=32)  # only the ids, labels and class names are read
    trial = optuna.load_study(study_name=study, storage=f"sqlite:///{run_dir / 'study.db'}").trials[trial_number]
    probs = TrialRecord.of(trial).oof_probs(len(ds.classes))
    if probs is None or len(probs) != len(ds.train.ids):
        return {}
    noisy = ds.train.labels.numpy()
    true = [ds.classes.index(truth[i]) if truth.get(i) in ds.classes else -1 for i in ds.train.ids]
    known = [k for k, t in enumerate(true) if t >= 0]
    k = len(ds.classes)
    return {"oof_vs_noisy": round(oof_score(probs, noisy, metric="macro_f1", num_classes=k), 4),
            "oof_vs_true": round(oof_score(probs[known], np.asarray([true[i] for i in known]), metric="macro_f1",
                                           num_classes=k), 4),
            "label_noise": round(float(sum(true[k] != noisy[k] for k in known) / max(1, len(known))), 4),
            "images": len(known)}


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_config(name: str, overrides: list[str], *, twin: Path, eval_dir: Path, out: Path, seed: int,
               timeout: float | None, n_boot: int, truth: dict[str, str]) -> dict:
    """One ``search run`` + ``search score``: the figures of one row."""
    study = f"q{seed}-{name}"
    argv = [sys.executable, "-m", "search", "-q", "run", "--data", str(twin), "--out", str(out),
            "--set", f"study.name={study}", "--seed", str(seed)]
    for o in overrides:
        argv += ["--set", o]
    if timeout is not None:
        argv += ["--timeout", str(round(timeout))]
    cpu0, t0 = _cpu_children(), time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    cpu, wall = _cpu_children() - cpu0, time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} seed {seed}: search run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    score = subprocess.run([sys.executable, "-m", "search", "score", str(out / study), str(eval_dir), "--json",
                            "--bootstrap", str(n_boot)], cwd=ROOT, capture_output=True, text=True)
    if score.returncode != 0:
        raise RuntimeError(f"{name} seed {seed}: search score failed: {score.stderr[-2000:]}")
    m = json.loads(score.stdout)
    final = json.loads((out / study / "best" / "metrics.json").read_text())
    counts, search_seconds = _trial_counts(out / study / "trials.csv")
    pick = lambda block: {k: block[k] for k in ("mean", "ci95")}  # noqa: E731
    row = {"config": name, "seed": seed, "overrides": overrides, "cpu_minutes": round(cpu / 60, 2),
           "wall_minutes": round(wall / 60, 2), "search_minutes": round(search_seconds / 60, 2), "trials": counts,
           "winner": {"trial": final["trial"], "cv_value": final["cv"]["value"], "objective": final["cv"]["objective"],
                      "cv_bias_corrected": ((final.get("selection") or {}).get("choice_estimate")
                                            or final["cv"].get("bias_corrected") or {}).get("estimate"),
                      "exported": final.get("exported"),
                      "versus_default": {k: v for k, v in ((final.get("selection") or {}).get("versus_default")
                                                           or {}).items() if k != "why"}},
           "eval": {"model": {k: pick(m["test"][k]) for k in ("macro_f1", "balanced_accuracy")},
                    "ensemble": {k: pick(m["ensemble"][k]) for k in ("macro_f1", "balanced_accuracy")},
                    "baselines": {b: {k: pick(v[k]) for k in ("macro_f1", "balanced_accuracy")}
                                  for b, v in m["baselines"].items() if "macro_f1" in v}},
           "search_gain": m["search_gain"], "eval_images": m["data"]["images"],
           # The eval draw is labelled with the true class: calibration against clean labels.
           "calibration_vs_true": _calibration(m.get("calibration")),
           "test_set": {"images": final["test_set"]["images"],
                        "ensemble": {k: pick(final["ensemble"][k]) for k in ("macro_f1", "accuracy")},
                        "ranks": {n: {k: r.get(k) for k in ("rank", "rank_ci95", "of", "kind")}
                                  for n, r in ((final.get("annotators") or {}).get("model_rank") or {}).items()}}}
    row["winner"]["optimism"] = (row["winner"]["cv_value"] - row["eval"]["ensemble"]["macro_f1"]["mean"]
                                 if row["winner"]["cv_value"] is not None else None)
    row["winner"].update(oof_scores(out / study, study, final["trial"], twin, truth))
    return row


def _calibration(cal: dict | None) -> dict | None:
    if not cal or not cal.get("scored"):
        return None
    before, after = cal["scored"]["before"], cal["scored"]["after"]
    return {"temperature": cal["temperature"], "nll": [before["nll"], after["nll"]],
            "ece": [before["ece"], after["ece"]], "brier": [before["brier"], after["brier"]]}


def _trial_counts(path: Path) -> tuple[dict[str, int], float]:
    """Trials per state, and the wall time of the trial phase (first start to last end)."""
    import csv
    import datetime as dt

    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    states = [r.get("state", "") for r in rows]
    starts = [dt.datetime.fromisoformat(r["datetime_start"]) for r in rows if r.get("datetime_start")]
    ends = [dt.datetime.fromisoformat(r["datetime_complete"]) for r in rows if r.get("datetime_complete")]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return {s: states.count(s) for s in sorted(set(states))}, span


def table(rows: list[dict]) -> str:
    head = ("| seed | config | CPU min | trials (complete/pruned) | winner CV (raw / BBC) | ensemble eval macro-F1 | "
            "model (seed mean) | default, no search | best seed net | random | ceiling | bal. acc (ensemble) | "
            "winner OOF vs noisy / vs true labels |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        base = r["eval"]["baselines"]
        nets = {k: v for k, v in base.items() if k.startswith("net") or k == "baseline"}
        best = max(nets, key=lambda k: nets[k]["macro_f1"]["mean"]) if nets else None
        f = lambda b: f"{b['mean']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]" if b.get("ci95") else f"{b['mean']:.3f}"  # noqa: E731,E501
        w = r["winner"]
        bbc = f"{w['cv_bias_corrected']:.3f}" if w.get("cv_bias_corrected") is not None else "-"
        lines.append(f"| {r['seed']} | {r['config']} | {r['cpu_minutes']:.1f} | {r['trials'].get('COMPLETE', 0)}/"
                     f"{r['trials'].get('PRUNED', 0)} | {w['cv_value']:.3f} / {bbc} | "
                     f"{f(r['eval']['ensemble']['macro_f1'])} | {f(r['eval']['model']['macro_f1'])} | "
                     f"{f(base['default']['macro_f1']) if 'default' in base else '-'} | "
                     f"{best}: {f(nets[best]['macro_f1']) if best else '-'} | "
                     f"{base['stratified_random']['macro_f1']['mean']:.3f} | {r.get('ceiling', float('nan')):.3f} | "
                     f"{f(r['eval']['ensemble']['balanced_accuracy'])} | "
                     f"{w.get('oof_vs_noisy', float('nan')):.3f} / {w.get('oof_vs_true', float('nan')):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--configs", default="new,old")
    parser.add_argument("--pruners", default="", help="e.g. guarded,successive_halving,none (first seed only)")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="time budget of each --pruners run (default: the trial phase of the seed's 'new' run)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an override added to every configuration, e.g. final.keep_default=false")
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", default="", help="keep runs and results.jsonl here (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny twin and study, figures meaningless")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    configs = {"new": NEW, "old": OLD}
    scale, eval_n, n_boot = 1.0, args.eval_n, args.bootstrap
    if args.quick:
        seeds, scale, eval_n, n_boot = seeds[:1], 0.2, 60, 20
        configs = {"new": QUICK, "old": [*OLD, *QUICK]}
    configs = {name: [*overrides, *args.extra] for name, overrides in configs.items()}
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="search-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    results, rows_path = [], work / "results.jsonl"
    env_note = {"threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(), "load": os.getloadavg()}
    print(f"search quality: seeds {seeds}, configs {list(configs)}, eval draw {eval_n}, in {work} {env_note}",
          file=sys.stderr, flush=True)
    def record(row: dict, ceiling: float | dict) -> None:
        row["ceiling"] = ceiling["value"] if isinstance(ceiling, dict) else ceiling
        row["provenance"] = provenance()
        results.append(row)
        with rows_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  seed {row['seed']} {row['config']}: ensemble eval macro-F1 "
              f"{row['eval']['ensemble']['macro_f1']['mean']:.3f}, CPU {row['cpu_minutes']:.1f} min",
              file=sys.stderr, flush=True)

    wanted = [c for c in args.configs.split(",") if c]
    pruners = [p for p in args.pruners.split(",") if p]
    if pruners and "new" not in wanted and not args.budget_s:
        parser.error("--pruners takes its time budget from the 'new' row of the first seed: include new in "
                     "--configs, or give --budget-s")
    for seed in seeds:
        twin_dir = work / f"twin{seed}"
        truth = _truth(twin_dir, seed, scale, eval_n)
        twin = json.loads((twin_dir / "twin.json").read_text())
        ceiling = twin["splits"]["eval_train_prior"]["ceiling"]["vs_true"]["macro_f1"]
        common = {"twin": twin_dir / "anklealign", "eval_dir": twin_dir / "eval", "out": work / "runs",
                  "seed": seed, "n_boot": n_boot, "truth": truth}
        for name in wanted:
            record(run_config(name, configs[name], timeout=None, **common), ceiling)
        if pruners and seed == seeds[0]:  # the pruner comparison, on the first seed, right after its rows
            first = next((r for r in results if r["seed"] == seed and r["config"] == "new"), None)
            budget = args.budget_s or first["search_minutes"] * 60  # the trial phase of the guarded run
            for pruner in pruners:  # no trial cap: the time budget ends the study, so pruning buys more trials
                record(run_config(f"new+{pruner}", [*configs["new"], f'pruner.name="{pruner}"', "study.trials=100000"],
                                  timeout=budget, **common), ceiling)
    if args.json:
        print(json.dumps({"benchmark": "search_quality", "quick": args.quick, "eval_n": eval_n, "rows": results},
                         indent=1))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
