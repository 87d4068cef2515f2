#!/usr/bin/env python
"""Several trial processes sharing one GPU: images/s per trial and trials/hour for K = 1, 2, 4, 8.

Each of K child processes runs the real training path (``search.run.train.fit_folds``: uint8 pool on
the GPU, batched augmentation there, bf16 autocast, channels_last) for a fixed number of
"trials" of net6 (default 128 px, 3 folds, 12 epochs) on a random uint8 pool of the twin's size.
The children warm up, wait for a common start time, run, and report; the parent sums them up:

  images_per_s_per_trial  mean over the K processes of a trial's training images/s
  images_per_s_total      sum over the processes
  trials_per_hour         all finished trials / wall time from the common start to the last end

Without a CUDA device it prints a message and exits 0 (nothing to measure).

    python benchmarks/gpu_jobs.py [--jobs 1,2,4,8] [--size 128] [--epochs 12] [--trials-per-job 5] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# benchmarks/search.py shares its name with the package: take this folder off the path, so that
# `import search` below finds the package and not that script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from search.run.train import FitResult, TrainPool, fit_folds, make_folds  # noqa: E402
from search.study.provenance import provenance  # noqa: E402
from space import PRESET_TRIALS, InputCfg  # noqa: E402

POOL = 252  # training images of the twin (scale 1.0)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One trial process: warm up, wait for the common start, run ``trials_per_job`` trials."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.k))  # K processes share the CPU too
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    cfg = PRESET_TRIALS[args.model]
    cfg = dataclasses.replace(cfg, input=InputCfg(image_size=args.size),
                              train=dataclasses.replace(cfg.train, max_epochs=args.epochs))
    gen = torch.Generator().manual_seed(args.rank)
    images = torch.randint(0, 256, (POOL, 1, args.size, args.size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 3, (POOL,), generator=gen)
    groups = np.arange(POOL)
    pool = TrainPool(images=images.to(device), labels=labels.to(device), groups=groups, num_classes=3)
    folds = make_folds(labels.numpy(), groups, args.folds, seed=0)
    warm = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=1))
    fit_folds(pool, folds, warm, metric="macro_f1", seed=args.rank)  # CUDA context, cuDNN plans, allocator
    _sync(device)
    while time.time() < args.start_at:
        time.sleep(0.005)
    t0 = time.perf_counter()
    results: list[FitResult] = []
    for i in range(args.trials_per_job):
        results.append(fit_folds(pool, folds, cfg, metric="macro_f1", seed=1000 * args.rank + i))
    _sync(device)
    wall = time.perf_counter() - t0
    images = sum(r.images_trained for r in results)
    train_s = sum(r.train_seconds for r in results)
    return {"rank": args.rank, "trials": len(results), "wall_s": wall, "end_at": time.time(),
            "images_per_s": images / train_s, "trial_s": train_s / len(results),
            "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(k: int, args: argparse.Namespace) -> dict[str, Any]:
    start_at = time.time() + args.warmup_s
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--k", str(k), "--start-at", str(start_at),
           "--size", str(args.size), "--epochs", str(args.epochs), "--folds", str(args.folds),
           "--trials-per-job", str(args.trials_per_job), "--model", args.model,
           *(["--cpu-dry-run"] if args.cpu_dry_run else [])]
    procs = [subprocess.Popen([*cmd, "--rank", str(r)], stdout=subprocess.PIPE, text=True) for r in range(k)]
    outs = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"a child process for K={k} failed with exit code {p.returncode}")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    starts = [o["end_at"] - o["wall_s"] for o in outs]
    if max(starts) - start_at > 1.0:
        print(f"warning: K={k}: a child started {max(starts) - start_at:.1f} s late, so the processes did not all "
              f"overlap (raise --warmup-s)", file=sys.stderr)
    wall = max(o["end_at"] for o in outs) - min(starts)
    trials = sum(o["trials"] for o in outs)
    return {"jobs": k, "trials": trials, "wall_s": round(wall, 2),
            "images_per_s_per_trial": round(float(np.mean([o["images_per_s"] for o in outs])), 1),
            "images_per_s_total": round(float(sum(o["images_per_s"] for o in outs)), 1),
            "trial_s_mean": round(float(np.mean([o["trial_s"] for o in outs])), 2),
            "trials_per_hour": round(3600 * trials / wall, 1),
            "peak_memory_mb_per_process": max((o["peak_memory_mb"] or 0) for o in outs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", default="1,2,4,8", help="comma list of K (processes on the one GPU)")
    ap.add_argument("--model", default="net6", choices=sorted(PRESET_TRIALS))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--trials-per-job", type=int, default=5)
    ap.add_argument("--warmup-s", type=float, default=30.0, help="time the children get to start and warm up")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--cpu-dry-run", action="store_true", help=argparse.SUPPRESS)  # checks the plumbing only
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print("gpu_jobs.py: no CUDA device here; it measures concurrent trials on a GPU, so there is nothing "
              "to do (run it on a machine with an NVIDIA GPU)")
        return 0
    if args.child:
        print(json.dumps(child(args)))
        return 0
    ks = [int(k) for k in args.jobs.split(",")]
    if any(k < 1 for k in ks):
        ap.error(f"--jobs values must be >= 1, got {args.jobs}")
    rows = []
    for k in ks:
        rows.append(measure(k, args))
        print(f"K={k}: {json.dumps(rows[-1])}", file=sys.stderr)
    base = rows[0]["trials_per_hour"]
    for r in rows:
        r["speedup_vs_first"] = round(r["trials_per_hour"] / base, 2)
    gpu = "cpu (dry run)" if args.cpu_dry_run else torch.cuda.get_device_name(0)
    out = {"benchmark": "gpu_jobs", "provenance": provenance(), "gpu": gpu, "torch": torch.__version__,
           "model": args.model, "image_size": args.size, "epochs": args.epochs, "folds": args.folds,
           "pool_images": POOL, "trials_per_job": args.trials_per_job, "rows": rows}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['gpu']}: {args.model} @ {args.size} px, {args.folds} folds x {args.epochs} epochs per trial")
        print(f"{'K':>3}{'img/s per trial':>17}{'img/s total':>13}{'s/trial':>9}{'trials/h':>10}{'speedup':>9}"
              f"{'peak MB':>9}")
        for r in rows:
            print(f"{r['jobs']:>3}{r['images_per_s_per_trial']:>17.0f}{r['images_per_s_total']:>13.0f}"
                  f"{r['trial_s_mean']:>9.2f}{r['trials_per_hour']:>10.0f}{r['speedup_vs_first']:>9.2f}"
                  f"{r['peak_memory_mb_per_process']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
