#!/usr/bin/env python
"""A/B of two versions of search/train.py: training images/s of one epoch, side by side, interleaved.

The other version is a file (e.g. ``git show HEAD~1:search/train.py > /tmp/old_train.py``); both
train the same models on the same random uint8 pool (the twin's size) in one process, round after
round in alternating order, so a neighbour's load hits both alike. Prints ``after/before`` per case.

    python benchmarks/ab_train.py /tmp/old_train.py [--rounds 9] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

# benchmarks/search.py shares its name with the package: take this folder off the path, so that
# `import search` below finds the package and not that script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from search.run import train as current  # noqa: E402
from search.study.provenance import provenance  # noqa: E402
from space import PRESET_TRIALS, BlockCfg, InputCfg, ModelCfg  # noqa: E402

POOL = 252  # training images of the twin (scale 1.0); a fold trains on two thirds of them
MID = ModelCfg(blocks=tuple(BlockCfg(c, downsample="maxpool", batchnorm=True) for c in (16, 32, 64, 64, 64)),
               head_hidden=(128,), head_dropout=0.2)
CASES = [("net6", 64), ("net6", 128), ("mid", 64), ("mid", 128)]


def load_other(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_other", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_other"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _fold(mod: ModuleType, cfg: object, pool: object) -> object:
    """A fold of either version (older ones also took the schedule's epoch count)."""
    try:
        return mod._Fold(cfg, pool, np.arange(POOL * 2 // 3), 0, torch.device("cpu"))
    except TypeError:
        return mod._Fold(cfg, pool, np.arange(POOL * 2 // 3), 0, torch.device("cpu"), 100)


def _epoch(mod: ModuleType, pool: object, fold: object, cfg: object) -> float:
    """Images/s of one training epoch of ``fold`` with that version's loop."""
    t0 = time.perf_counter()
    seen = mod._train_epoch(fold, pool, cfg, None)
    seen = seen[0] if isinstance(seen, tuple) else seen  # newer versions also return the epoch's loss
    return seen / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path, help="the other search/train.py (the 'before')")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.before.is_file():
        ap.error(f"no such file: {args.before}")
    versions = {"before": load_other(args.before), "after": current}
    rows = []
    for model, size in CASES:
        cfg = PRESET_TRIALS["net6"]
        cfg = dataclasses.replace(cfg, model=cfg.model if model == "net6" else MID, input=InputCfg(image_size=size))
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (POOL, 1, size, size), dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, 3, (POOL,), generator=gen)
        state = {}
        for tag, mod in versions.items():
            pool = mod.TrainPool(images=images, labels=labels, groups=np.arange(POOL), num_classes=3)
            state[tag] = (mod, pool, _fold(mod, cfg, pool))

        for tag in state:  # warm-up
            _epoch(*state[tag], cfg)
        samples: dict[str, list[float]] = {"before": [], "after": []}
        for r in range(args.rounds):
            for tag in (("before", "after") if r % 2 == 0 else ("after", "before")):
                samples[tag].append(_epoch(*state[tag], cfg))
        before, after = statistics.median(samples["before"]), statistics.median(samples["after"])
        rows.append({"model": model, "image_size": size, "before_images_per_s": round(before, 1),
                     "after_images_per_s": round(after, 1), "after_over_before": round(after / before, 3)})
        print(f"{model}@{size}: before {before:.0f} img/s, after {after:.0f} img/s, x{after / before:.2f}",
              file=sys.stderr)
    if args.json:
        print(json.dumps({"benchmark": "ab_train", "provenance": provenance(),
                          "rounds": args.rounds, "threads": torch.get_num_threads(),
                          "cases": rows}, indent=2))
    else:
        for r in rows:
            print(f"{r['model'] + '@' + str(r['image_size']):<10} before {r['before_images_per_s']:>7.0f}  "
                  f"after {r['after_images_per_s']:>7.0f}  after/before {r['after_over_before']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
