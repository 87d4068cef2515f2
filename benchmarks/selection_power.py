#!/usr/bin/env python
"""Error rate and power of the final step's test against the default configuration, by simulation.

For each spread (how often two equally good trials disagree) it simulates ``--studies`` studies of 21 trials on
250 images (:mod:`search.final.simulation`): with every trial as good as the default (how often *any* is
declared better: the error rate), and with one trial truly ``--gain`` more accurate (how often *it* is declared
better: the power). Next to the test (Hansen's superior predictive ability over all trials) it measures the
rule it replaced, the best trial's paired 95 % interval against the default, which ignores the selection.

    python benchmarks/selection_power.py [--studies 400] [--spreads 0.2,0.25,0.3,0.4] [--json]

Each spread's row is appended to ``--out`` (JSON lines) as it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

from search.final.gain import paired_difference  # noqa: E402
from search.final.selection import ALPHA, oof_score, superiority  # noqa: E402
from search.final.simulation import disagreement, simulated_trials  # noqa: E402
from search.study.provenance import provenance  # noqa: E402


def row(spread: float, *, studies: int, gain: float, n: int, trials: int, n_boot: int, alpha: float) -> dict:
    rng = np.random.default_rng(int(spread * 1000))
    declared = naive = found = 0
    dis = []
    t0 = time.perf_counter()
    for i in range(studies):
        oof, labels = simulated_trials(rng, n=n, trials=trials, spread=spread)
        dis.append(disagreement(oof))
        declared += bool(superiority(oof, labels, default=0, metric="macro_f1", n_boot=n_boot, seed=i,
                                     alpha=alpha)["better"].any())
        best = int(np.argmax([oof_score(p, labels, metric="macro_f1", num_classes=3) for p in oof]))
        if best:
            ci = paired_difference(oof[best][None], oof[0][None], labels, metric="macro_f1", groups=None,
                                   n_boot=n_boot, seed=i)["ci95"]
            naive += bool(ci and ci[0] > 0)
        oof, labels = simulated_trials(rng, n=n, trials=trials, spread=spread, gain=gain)
        found += bool(superiority(oof, labels, default=0, metric="macro_f1", n_boot=n_boot, seed=i,
                                  alpha=alpha)["better"][1])
    return {"spread": spread, "disagreement": round(float(np.mean(dis)), 3), "studies": studies,
            "error_rate": declared / studies, "error_rate_best_vs_default": naive / studies,
            "power": found / studies, "gain": gain, "alpha": alpha, "images": n, "trials": trials, "resamples": n_boot,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--spreads", default="0.2,0.25,0.3,0.4")
    parser.add_argument("--gain", type=float, default=0.08)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=ALPHA, help="the test's level (default: the final step's)")
    parser.add_argument("--out", default="", help="append each row here (JSON lines)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    made = provenance()
    rows = []
    for spread in (float(s) for s in args.spreads.split(",") if s):
        r = {**row(spread, studies=args.studies, gain=args.gain, n=250, trials=21, n_boot=args.resamples,
                   alpha=args.alpha),
             "provenance": made}
        rows.append(r)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(r) + "\n")
        print(f"  spread {spread}: disagreement {r['disagreement']:.3f}, error rate {r['error_rate']:.3f} "
              f"(best vs default alone {r['error_rate_best_vs_default']:.3f}), power at +{args.gain} "
              f"{r['power']:.3f} ({r['seconds']} s)", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"benchmark": "selection_power", "rows": rows}, indent=1))
    else:
        print("| trials disagree on | error rate (21 equal trials) | best-vs-default alone | power, +0.08 |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['disagreement']:.1%} | {r['error_rate']:.1%} | {r['error_rate_best_vs_default']:.1%} | "
                  f"{r['power']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
