#!/usr/bin/env python
"""Search throughput on the synthetic twin: ingest times, pruning savings, loop overhead, final step.

1. Ingest: the twin (``anklealign.synth``, scale 1.0) into a temp folder, then ``anklealign.load``
   cold (empty cache) and again from the cache; the full-size twin (``full_size=True``, the real
   data's sizes) cold.
2. Studies: the default study (``studies/default.toml`` plus ``--set`` overrides) for a fixed
   number of trials through ``search.run.runner.run_study`` (temp SQLite storage, the default of
   ``make run``), once per pruner (default: the study's pruner and ``none``), same sampler seed,
   same enqueued seed nets. Per study: wall time, trials/hour, pruned fraction, epochs trained,
   best value, and ``overhead_fraction`` = 1 - sum(trials' epoch_seconds) / wall time of the
   optimisation loop (the one-time data load excluded: the cache is warmed first).
3. ``--final``: the final step (best trial x ``final.seeds`` + baseline presets) on the first
   pruner's study, timed, and an estimate of ``make run`` (``--estimate-trials``, default 100).

    python benchmarks/search.py [--json] [--quick] [--trials N] [--pruners median,none] [--compare]
                                [--final] [--no-full-size] [--set SECTION.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# This file is benchmarks/search.py: take its folder off the path, so that `import search` below
# finds the package and not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import optuna  # noqa: E402
import torch  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

import anklealign  # noqa: E402
from search.run.runner import RunOptions, run_study  # noqa: E402
from search.study.definition import StudyDef, load_study_def  # noqa: E402
from search.study.provenance import provenance  # noqa: E402
from search.study.storage import default_url  # noqa: E402
from space.search_space import SearchSpace  # noqa: E402

_log = logging.getLogger("bench.search")

GOALS = {"epochs_saved_fraction": 0.5, "best_value_gap": 0.01, "overhead_fraction": 0.02,
         "cache_ingest_s": 2.0, "full_size_cold_ingest_s": 30.0, "make_run_s": 1800.0}
ALL_PRUNERS = ("median", "successive_halving", "hyperband", "wilcoxon", "none")
# Pruner settings replayed on the recorded curves of the unpruned study: (name, n_startup_trials, n_warmup_steps).
REPLAY_VARIANTS = [("median", 5, 2), ("median", 8, 2), ("median", 8, 4), ("median", 10, 6),
                   ("successive_halving", 0, 2), ("successive_halving", 0, 4), ("hyperband", 0, 2),
                   ("hyperband", 0, 4), ("wilcoxon", 0, 2), ("wilcoxon", 0, 4)]
QUICK_SET = ["training.max_epochs=3", "space.image_size=[32]", "cv.folds=2", "space.n_blocks=[2, 4]",
             "space.channels=[8, 16, 32, 64]", 'study.enqueue_presets=["net0", "net6"]',
             "pruner.n_startup_trials=2", "pruner.n_warmup_steps=1", "sampler.n_startup_trials=4",
             "final.seeds=2", "final.bootstrap=50"]


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def ingest(tmp: Path, sizes: tuple[int, ...], *, full_size: bool, color: str) -> tuple[Path, Path, dict[str, Any]]:
    """Write the twin, time cold/cached loads (warming the cache for every image size of the space)."""
    manifest, synth_s = _timed(anklealign.synth, tmp / "twin", seed=0, scale=1.0)
    cache = tmp / "cache"
    _, cold = _timed(anklealign.load, manifest.root, image_size=sizes[0], color=color, cache_dir=cache)
    cached = statistics.median(_timed(anklealign.load, manifest.root, image_size=sizes[0], color=color,
                                      cache_dir=cache)[1] for _ in range(3))
    other = {str(s): round(_timed(anklealign.load, manifest.root, image_size=s, color=color, cache_dir=cache)[1], 3)
             for s in sizes[1:]}  # a new size decodes from the scan cache once
    out: dict[str, Any] = {"twin_synth_s": round(synth_s, 2), "cold_ingest_s": round(cold, 3),
                           "cache_ingest_s": round(cached, 3), "other_size_first_load_s": other,
                           "image_size": sizes[0]}
    if full_size:
        full, fsynth = _timed(anklealign.synth, tmp / "twin-full", seed=0, scale=1.0, full_size=True)
        ds, fcold = _timed(anklealign.load, full.root, image_size=sizes[0], color=color, cache_dir=tmp / "cache-full")
        out.update({"full_size_synth_s": round(fsynth, 2), "full_size_cold_ingest_s": round(fcold, 2),
                    "full_size_files": len(full.images), "full_size_train_images": int(len(ds.train.labels))})
    return manifest.root, cache, out


def run_one(defn: StudyDef, *, trials: int, tmp: Path, cache: Path, tag: str, storage: str) -> dict[str, Any]:
    """One study run to ``trials`` finished trials; its figures from the trials' user attributes."""
    run_dir = tmp / "runs" / tag / defn.name
    run_dir.mkdir(parents=True, exist_ok=True)
    url = default_url(run_dir) if storage == "sqlite" else f"journal:///{run_dir.resolve() / 'journal.log'}"
    opts = RunOptions(trials=trials, storage_url=url, run_dir=run_dir, device="cpu",
                      cache_dir=cache, show_progress=False)
    space = SearchSpace.from_dict(dict(defn.space))
    # The data loads inside run_study come from the warm cache; measured here to subtract them.
    src = defn.data.source
    load_s = sum(_timed(anklealign.load, src, image_size=s, color=space.color[0], cache_dir=cache)[1]
                 for s in space.image_size)
    _log.info("study %s: pruner %s, %d trials ...", tag, defn.pruner.name, trials)
    cpu0 = time.process_time()
    with contextlib.redirect_stdout(sys.stderr):  # the runner's per-trial lines; stdout stays for --json
        _, wall = _timed(run_study, defn, opts, stop=threading.Event())
    cpu = time.process_time() - cpu0
    study = _load(defn.name, opts.storage_url)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    epoch_s = sum(sum(t.user_attrs.get("epoch_seconds", [])) for t in done)
    in_trial = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    loop = max(wall - load_s, 1e-9)
    rows = [{"number": t.number, "state": t.state.name.lower(), "value": t.value,
             "preset": t.user_attrs.get("preset"), "epochs_run": t.user_attrs.get("epochs_run"),
             "seconds": t.user_attrs.get("seconds"), "epoch_s": round(sum(t.user_attrs.get("epoch_seconds", [])), 3),
             "image_size": (t.user_attrs.get("config") or {}).get("input", {}).get("image_size"),
             "macs": t.user_attrs.get("macs"), "params": t.user_attrs.get("params_count"),
             "images_per_s": t.user_attrs.get("train_images_per_s")} for t in done]
    try:
        best = study.best_value
    except ValueError:
        best = None
    return {
        "pruner": defn.pruner.name, "storage": storage, "trials": len(done), "wall_s": round(wall, 2),
        "process_cpu_s": round(cpu, 1),
        "trials_per_hour": round(3600 * len(done) / wall, 1),
        "pruned": sum(t.state == TrialState.PRUNED for t in done),
        "failed": sum(t.state == TrialState.FAIL for t in done),
        "pruned_fraction": round(sum(t.state == TrialState.PRUNED for t in done) / max(len(done), 1), 3),
        "epochs": sum(int(t.user_attrs.get("epochs_run", 0)) for t in done),
        "epoch_seconds": round(epoch_s, 2), "best_value": best,
        "overhead_fraction": round(1 - epoch_s / loop, 4),
        "overhead_in_trials_s": round(in_trial - epoch_s, 2), "overhead_between_trials_s": round(loop - in_trial, 2),
        "data_load_in_loop_s": round(load_s, 3),
        "preset_seconds": round(sum(r["seconds"] or 0 for r in rows if r["preset"]), 2),
        "searched_seconds_mean": round(statistics.mean([r["seconds"] or 0 for r in rows if not r["preset"]] or [0]),
                                       2),
        "run_dir": str(run_dir), "storage_url": opts.storage_url, "trial_rows": rows,
    }


def _load(name: str, url: str) -> optuna.Study:
    from search.study.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url, load_study_def("anklealign").storage,
                                                                   heartbeat=False))


def replay(defn: StudyDef, none_run: dict[str, Any], *, permutations: int, seed: int = 0) -> list[dict[str, Any]]:
    """Each pruner of :data:`REPLAY_VARIANTS` decides on the unpruned study's recorded learning curves.

    The seed nets stay first (as enqueued); the searched trials are replayed in their own order and
    in ``permutations`` shuffled orders. Unlike a real run, a pruned trial does not change which
    configs the sampler proposes next: this isolates the pruner's decisions, with no new training.
    """
    from search.run.strategies import make_pruner
    from search.study.definition import study_def_from_dict

    study = _load(defn.name, none_run["storage_url"])
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    curves = [[t.intermediate_values[k] for k in sorted(t.intermediate_values)] for t in done]
    secs = [t.user_attrs.get("epoch_seconds", [1.0] * len(c)) for t, c in zip(done, curves, strict=True)]
    presets = [i for i, t in enumerate(done) if t.user_attrs.get("preset")]
    searched = [i for i in range(len(done)) if i not in presets]
    rng = random.Random(seed)
    orders = [presets + searched] + [presets + rng.sample(searched, len(searched)) for _ in range(permutations)]
    full_epochs, full_s = sum(map(len, curves)), sum(map(sum, secs))
    best_all = max(max(c) for c in curves)
    out = []
    for name, startup, warmup in REPLAY_VARIANTS:
        raw = defn.to_dict()
        raw["pruner"] = {"name": name, "n_startup_trials": startup, "n_warmup_steps": warmup}
        pdefn = study_def_from_dict(raw)
        saved, tsaved, gaps = [], [], []
        for order in orders:
            sim = optuna.create_study(direction="maximize", pruner=make_pruner(pdefn))
            epochs, spent, best = 0, 0.0, float("-inf")
            for i in order:
                trial = sim.ask()
                for step, value in enumerate(curves[i]):
                    trial.report(value, step)
                    epochs, spent = epochs + 1, spent + secs[i][step]
                    if trial.should_prune():
                        sim.tell(trial, state=TrialState.PRUNED)
                        break
                else:
                    sim.tell(trial, max(curves[i]))
                    best = max(best, max(curves[i]))
            saved.append(1 - epochs / full_epochs)
            tsaved.append(1 - spent / full_s)
            gaps.append(best_all - best)
        out.append({"pruner": name, "n_startup_trials": startup, "n_warmup_steps": warmup, "orders": len(orders),
                    "epochs_saved_fraction": round(statistics.median(saved), 3),
                    "epochs_saved_in_order": round(saved[0], 3),
                    "time_saved_fraction": round(statistics.median(tsaved), 3),
                    "best_value_gap_median": round(statistics.median(gaps), 4),
                    "best_value_gap_in_order": round(gaps[0], 4),
                    "p_gap_within_0.01": round(sum(g <= 0.01 for g in gaps) / len(gaps), 3)})
    return out


def run_final(defn: StudyDef, run: dict[str, Any], cache: Path) -> dict[str, Any]:
    from search.final.finalize import finalize

    study = _load(defn.name, run["storage_url"])
    _log.info("final step on the %s study ...", run["pruner"])
    with contextlib.redirect_stdout(sys.stderr):
        metrics, secs = _timed(finalize, defn, study, run_dir=Path(run["run_dir"]), device="cpu",
                               data_source=defn.data.source or None, cache_dir=cache)
    return {"final_s": round(secs, 2), "epochs": metrics.get("epochs"), "seeds": len(metrics.get("seeds", []))}


def estimate(run: dict[str, Any], final_s: float | None, n: int, presets: int) -> dict[str, Any]:
    """Extrapolate to ``n`` trials: the presets once, then the searched trials at their measured mean cost."""
    per_trial = run["wall_s"] / max(run["trials"], 1)
    searched = run["trials"] - presets
    overhead_share = (run["wall_s"] - run["epoch_seconds"]) / max(run["trials"], 1)
    searched_mean = run["searched_seconds_mean"] + overhead_share
    est = run["preset_seconds"] + presets * overhead_share + max(n - presets, 0) * searched_mean
    return {"trials": n, "measured_trials": run["trials"], "measured_searched_trials": searched,
            "seconds_per_trial_measured": round(per_trial, 2), "seconds_per_searched_trial": round(searched_mean, 2),
            "trials_s": round(est, 1), "final_s": final_s, "total_s": round(est + (final_s or 0), 1),
            "formula": "preset trials as measured + (n - presets) x mean searched-trial time (+ loop overhead) "
                       "+ final step"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    ap.add_argument("--quick", action="store_true", help="smoke check: a tiny study (3 epochs, 32 px, 2 folds)")
    ap.add_argument("--trials", type=int, default=None, help="finished trials per study (default 20; quick 6)")
    ap.add_argument("--pruners", default=None, help="comma list (default: the study's pruner and none)")
    ap.add_argument("--compare", action="store_true", help="all pruners: " + ", ".join(ALL_PRUNERS))
    ap.add_argument("--final", action="store_true", help="also time the final step and estimate make run")
    ap.add_argument("--estimate-trials", type=int, default=100)
    ap.add_argument("--replay", type=int, default=0, metavar="K",
                    help="replay pruner settings on the unpruned study's curves, in its order and K shuffles")
    ap.add_argument("--no-full-size", action="store_true", help="skip the full-size twin ingest")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--storage", default="sqlite", choices=("sqlite", "journal"),
                    help="the study storage: sqlite (the default of make run) or Optuna's journal file")
    ap.add_argument("--study", default="anklealign")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("search", "anklealign", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    trials = args.trials or (6 if args.quick else 20)
    if trials < 1:
        ap.error(f"--trials must be >= 1, got {trials}")
    # A fixed study name: each study of this harness has a run folder of its own (tag) anyway.
    overrides = ["study.name=bench", *(QUICK_SET if args.quick else []), *args.overrides]
    base = load_study_def(args.study, overrides)
    pruners = (list(ALL_PRUNERS) if args.compare else
               args.pruners.split(",") if args.pruners else [base.pruner.name, "none"])
    space = SearchSpace.from_dict(dict(base.space))

    out: dict[str, Any] = {"benchmark": "search", "provenance": provenance(),
                           "torch": torch.__version__, "optuna": optuna.__version__,
                           "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "study": base.name,
                           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                           "overrides": overrides, "trials": trials, "goals": GOALS,
                           "loadavg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp_s:
        tmp = Path(tmp_s)
        root, cache, out["ingest"] = ingest(tmp, space.image_size, full_size=not (args.quick or args.no_full_size),
                                            color=space.color[0])
        _log.info("ingest: %s", json.dumps(out["ingest"]))
        # One-time process costs stay out of the loop's clock like the data load: the first
        # torch.optim optimizer imports torch._dynamo (~1 s).
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        runs = []
        for p in pruners:
            defn = load_study_def(args.study, [*overrides, f"pruner.name={p}", f"data.source={json.dumps(str(root))}"])
            runs.append(run_one(defn, trials=trials, tmp=tmp, cache=cache, tag=p, storage=args.storage))
            _log.info("  %s", _line(runs[-1]))
        out["studies"] = runs
        ref = next((r for r in runs if r["pruner"] == "none"), None)
        for r in runs:
            if ref is not None and r is not ref:
                r["epochs_saved_fraction"] = round(1 - r["epochs"] / max(ref["epochs"], 1), 3)
                r["time_saved_fraction"] = round(1 - r["wall_s"] / ref["wall_s"], 3)
                r["best_value_gap"] = (None if r["best_value"] is None or ref["best_value"] is None
                                       else round(ref["best_value"] - r["best_value"], 4))
        if args.replay and ref is not None:
            defn = load_study_def(args.study, [*overrides, f"data.source={json.dumps(str(root))}"])
            out["replay"] = replay(defn, ref, permutations=args.replay)
        if args.final:
            defn = load_study_def(args.study, [*overrides, f"pruner.name={runs[0]['pruner']}",
                                               f"data.source={json.dumps(str(root))}"])
            out["final"] = run_final(defn, runs[0], cache)
            presets = len(base.study.enqueue_presets)
            out["estimate"] = estimate(runs[0], out["final"]["final_s"], args.estimate_trials, presets)
    out["loadavg_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print_summary(out)
    return 0


def _line(r: dict[str, Any]) -> str:
    best = "-" if r["best_value"] is None else f"{r['best_value']:.4f}"
    return (f"{r['pruner']:<19}{r['trials']:>4} trials {r['wall_s']:>8.1f} s {r['trials_per_hour']:>7.1f}/h  "
            f"pruned {r['pruned_fraction']:>5.0%}  epochs {r['epochs']:>5}  best {best}  "
            f"overhead {r['overhead_fraction']:>6.2%}")


def print_summary(out: dict[str, Any]) -> None:
    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    g, ing = out["goals"], out["ingest"]
    print(f"search benchmark: study {out['study']}, {out['trials']} trials per study, {out['threads']} threads, "
          f"load average {out['loadavg_start']:.1f} -> {out['loadavg_end']:.1f}")
    if out["overrides"]:
        print("  overrides: " + " ".join(out["overrides"]))
    print(f"ingest: twin written in {ing['twin_synth_s']:.1f} s; load cold {ing['cold_ingest_s']:.2f} s, "
          f"from the cache {ing['cache_ingest_s']:.3f} s (goal < {g['cache_ingest_s']:.0f} s: "
          f"{ok(ing['cache_ingest_s'] < g['cache_ingest_s'])})")
    if "full_size_cold_ingest_s" in ing:
        print(f"        full-size twin ({ing['full_size_files']} files) written in {ing['full_size_synth_s']:.1f} s; "
              f"load cold {ing['full_size_cold_ingest_s']:.1f} s (goal < {g['full_size_cold_ingest_s']:.0f} s: "
              f"{ok(ing['full_size_cold_ingest_s'] < g['full_size_cold_ingest_s'])})")
    for r in out["studies"]:
        print(_line(r))
        if "epochs_saved_fraction" in r:
            saved, gap = r["epochs_saved_fraction"], r["best_value_gap"]
            print(f"{'':<19}epochs saved vs none {saved:.0%} (goal >= {g['epochs_saved_fraction']:.0%}: "
                  f"{ok(saved >= g['epochs_saved_fraction'])}); best value gap {gap} (goal <= "
                  f"{g['best_value_gap']}: {ok(gap is not None and gap <= g['best_value_gap'])}); "
                  f"wall time saved {r['time_saved_fraction']:.0%}")
        passed = ok(r["overhead_fraction"] <= g["overhead_fraction"])
        print(f"{'':<19}overhead goal <= {g['overhead_fraction']:.0%}: {passed}"
              f" (in trials {r['overhead_in_trials_s']:.1f} s, between trials {r['overhead_between_trials_s']:.1f} s)")
    if "replay" in out:
        print(f"replay on the unpruned study's curves (its order + shuffles; goal: >= "
              f"{g['epochs_saved_fraction']:.0%} epochs saved, best within {g['best_value_gap']}):")
        print(f"  {'pruner':<19}{'startup':>8}{'warmup':>7}{'epochs saved':>13}{'time saved':>11}"
              f"{'gap median':>11}{'P(gap<=0.01)':>13}")
        for r in out["replay"]:
            print(f"  {r['pruner']:<19}{r['n_startup_trials']:>8}{r['n_warmup_steps']:>7}"
                  f"{r['epochs_saved_fraction']:>13.0%}{r['time_saved_fraction']:>11.0%}"
                  f"{r['best_value_gap_median']:>11.4f}{r['p_gap_within_0.01']:>13.0%}")
    if "final" in out:
        e = out["estimate"]
        print(f"final step: {out['final']['final_s']:.1f} s ({out['final']['seeds']} seeds x {out['final']['epochs']} "
              f"epochs + baselines)")
        print(f"estimate for {e['trials']} trials: {e['trials_s'] / 60:.1f} min trials + "
              f"{(e['final_s'] or 0) / 60:.1f} min final = {e['total_s'] / 60:.1f} min (goal <= "
              f"{g['make_run_s'] / 60:.0f} min: {ok(e['total_s'] <= g['make_run_s'])})")


if __name__ == "__main__":
    sys.exit(main())
