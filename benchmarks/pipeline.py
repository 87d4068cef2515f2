#!/usr/bin/env python
"""Training throughput (images/s): our on-device loop vs compute only vs a typical PIL DataLoader.

For the same model, image size and batch size, one epoch over the twin's training pool with

  (a) ``ours``: search.run.train's real path (uint8 pool tensor, gather by index, batched augmentation
      with net6's settings via ``space.augment_batch``, normalise, forward/backward/step);
  (b) ``compute``: the same model stepping on one pre-made normalised batch over and over
      (no input pipeline at all: the upper bound);
  (c) ``pil``: what most public AnkleAlign projects do: a torch ``Dataset`` that opens and decodes
      every image file with PIL each epoch and applies torchvision transforms per sample
      (Grayscale, Resize, RandomHorizontalFlip, RandomRotation, ToTensor, Normalize) through a
      ``DataLoader`` with ``num_workers=2`` (``pil_w0``: ``num_workers=0``).

The variants run interleaved, round after round, and every figure is the median over the rounds,
so that a neighbour's load on a shared machine hits all of them alike. Goals (CPU):
``ratio_vs_compute`` = a/b >= 0.9 and ``ratio_vs_pil_loader`` = a/c >= 3.

The PIL loader's cost depends on the files it decodes: by default the twin is written at the real
archive's sizes (median about 1280x960, as docs/DATA.md describes the photographs); ``--small-files``
keeps the default twin's small files (median ~280 px), where decoding is cheap and, at 128 px,
even the compute-only bound is only about 2x the PIL loader.

    python benchmarks/pipeline.py [--json] [--quick] [--small-files] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# benchmarks/search.py shares its name with the package: take this folder off the path, so that
# `import search` below finds the package and not that script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.data import Dataset as TorchDataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

import anklealign  # noqa: E402
from search.run import train as tr  # noqa: E402
from search.study.provenance import provenance  # noqa: E402
from space import (  # noqa: E402
    PRESET_TRIALS,
    BlockCfg,
    InputCfg,
    ModelCfg,
    TrialCfg,
    augment_batch,
    build_cnn,
    count_macs,
    count_params,
    normalize,
)

_log = logging.getLogger("bench.pipeline")

GOAL_VS_COMPUTE = 0.9
GOAL_VS_PIL = 3.0
NET6 = PRESET_TRIALS["net6"]
MODELS: dict[str, ModelCfg] = {
    "net6": NET6.model,
    # A mid-size point of the search space: 5 blocks 16-32-64-64-64, maxpool + batchnorm, head 128.
    "mid": ModelCfg(blocks=tuple(BlockCfg(c, downsample="maxpool", batchnorm=True) for c in (16, 32, 64, 64, 64)),
                    head_hidden=(128,), head_dropout=0.2),
}
CASES = [("net6", 64), ("net6", 128), ("mid", 64), ("mid", 128)]
QUICK_CASES = [("net6", 64)]


def trial_cfg(model: str, size: int) -> TrialCfg:
    """net6's training and augmentation settings with the given model and input size."""
    return dataclasses.replace(NET6, model=MODELS[model], input=InputCfg(image_size=size))


class PilFiles(TorchDataset):
    """The usual public-project dataset: open and decode the file on every access."""

    def __init__(self, files: list[Path], labels: list[int], transform: Callable[[Image.Image], torch.Tensor]):
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as im:
            img = im.convert("RGB")
        return self.transform(img), self.labels[i]


def pil_transform(size: int) -> T.Compose:
    return T.Compose([T.Grayscale(1), T.Resize((size, size)), T.RandomHorizontalFlip(0.3), T.RandomRotation(15),
                      T.ToTensor(), T.Normalize([0.5], [0.5])])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case:
    """The three pipelines of one (model, image size) case, each timed one epoch at a time."""

    def __init__(self, model: str, size: int, ds: anklealign.Dataset, files: list[Path], device: torch.device):
        self.model, self.size, self.device = model, size, device
        self.cfg = trial_cfg(model, size)
        self.n = len(ds.train.labels)
        self.pool = tr.TrainPool(images=ds.train.images.to(device), labels=ds.train.labels.to(device),
                                 groups=ds.train.groups.numpy(), num_classes=len(ds.classes))
        # (a) the real path: a fold over the whole pool, trained an epoch at a time.
        self.fold = tr._Fold(self.cfg, self.pool, np.arange(self.n), 0, device)
        # (b) the same model, one pre-made normalised (augmented) batch, no input pipeline.
        torch.manual_seed(0)
        bs = self.cfg.train.batch_size
        # All three use the memory layout of search.run.train (channels_last), so that the ratios
        # measure the input pipelines, not the layout.
        self.c_model = build_cnn(self.cfg.model).to(device, memory_format=torch.channels_last)
        self.c_opt = tr.OPTIMIZERS[self.cfg.train.optimizer](self.c_model, self.cfg.train)
        x = self.pool.images[:bs]
        self.c_x = normalize(augment_batch(x, self.cfg.augment, generator=torch.Generator(device).manual_seed(0)))
        self.c_x = self.c_x.contiguous(memory_format=torch.channels_last)
        self.c_y = self.pool.labels[:bs]
        self.c_steps = len(tr._batches(torch.arange(self.n), bs))
        # (c) files decoded with PIL every epoch, torchvision transforms per sample, a DataLoader.
        self.p_model = build_cnn(self.cfg.model).to(device, memory_format=torch.channels_last)
        self.p_opt = tr.OPTIMIZERS[self.cfg.train.optimizer](self.p_model, self.cfg.train)
        self.p_data = PilFiles(files, ds.train.labels.tolist(), pil_transform(size))
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def _amp(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def ours(self) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        seen, _ = tr._train_epoch(self.fold, self.pool, self.cfg, None)
        _sync(self.device)
        return seen / (time.perf_counter() - t0)

    def compute(self) -> float:
        self.c_model.train()
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(self.c_steps):
            with self._amp():
                loss = self.loss_fn(self.c_model(self.c_x), self.c_y)
            self.c_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.c_opt.step()
        _sync(self.device)
        return self.c_steps * len(self.c_y) / (time.perf_counter() - t0)

    def pil(self, workers: int) -> float:
        cuda = self.device.type == "cuda"
        loader = DataLoader(self.p_data, batch_size=self.cfg.train.batch_size, shuffle=True, num_workers=workers,
                            pin_memory=cuda, drop_last=False)
        self.p_model.train()
        _sync(self.device)
        t0, seen = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)
            x = x.contiguous(memory_format=torch.channels_last)
            with self._amp():
                loss = self.loss_fn(self.p_model(x), y)
            self.p_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.p_opt.step()
            seen += len(y)
        _sync(self.device)
        return seen / (time.perf_counter() - t0)


def run_case(case: Case, rounds: int) -> dict[str, Any]:
    variants: dict[str, Callable[[], float]] = {"ours": case.ours, "compute": case.compute,
                                                "pil_w2": lambda: case.pil(2), "pil_w0": lambda: case.pil(0)}
    for fn in variants.values():  # warm-up: allocator, oneDNN primitives, page cache
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(fn())
    med = {k: statistics.median(v) for k, v in samples.items()}
    vs_compute, vs_pil, vs_pil0 = med["ours"] / med["compute"], med["ours"] / med["pil_w2"], med["ours"] / med["pil_w0"]
    return {
        "model": case.model, "image_size": case.size, "params": count_params(case.cfg.model),
        "macs": count_macs(case.cfg.model, case.size), "batch_size": case.cfg.train.batch_size,
        "ours_images_per_s": round(med["ours"], 1), "compute_only_images_per_s": round(med["compute"], 1),
        "pil_loader_images_per_s": round(med["pil_w2"], 1), "pil_loader_w0_images_per_s": round(med["pil_w0"], 1),
        "ratio_vs_compute": round(vs_compute, 3), "ratio_vs_pil_loader": round(vs_pil, 3),
        "ratio_vs_pil_loader_w0": round(vs_pil0, 3),
        "pass_vs_compute": vs_compute >= GOAL_VS_COMPUTE, "pass_vs_pil_loader": vs_pil >= GOAL_VS_PIL,
        "samples_images_per_s": {k: [round(x, 1) for x in v] for k, v in samples.items()},
    }


def make_twin(tmp: Path, *, scale: float, full_size: bool) -> tuple[Path, float]:
    t0 = time.perf_counter()
    manifest = anklealign.synth(tmp / "twin", seed=0, scale=scale, full_size=full_size)
    return manifest.root, time.perf_counter() - t0


def _files(root: Path, ids: tuple[str, ...]) -> list[Path]:
    """Image ids are ``<PARTICIPANT>/<path>`` below the data root, which may sit one or two folders down."""
    for base in (root, root / "anklealign", root / "anklealign" / "anklealign"):
        if ids and (base / ids[0]).is_file():
            return [base / i for i in ids]
    raise SystemExit(f"error: cannot find the image files of {root} (first id {ids[0] if ids else None!r})")


def _median_size(files: list[Path]) -> list[int]:
    sizes = []
    for f in files:
        with Image.open(f) as im:
            sizes.append(im.size)
    return [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--quick", action="store_true", help="smoke check: net6 at 64 px only, 3 rounds")
    ap.add_argument("--small-files", action="store_true",
                    help="the default twin's small files (median ~280 px) instead of the real data's sizes "
                         "(~1280x960), which the PIL loader decodes every epoch; --quick implies it")
    ap.add_argument("--twin", type=Path, default=None,
                    help="use this existing twin folder instead of writing one (e.g. a test fixture)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case (default 5; quick 3)")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--cases", default=None, help="comma list of MODEL@SIZE, e.g. net6@64,mid@128")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    device = tr.resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 1:
        ap.error(f"--rounds must be >= 1, got {rounds}")
    cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        cases = [(c.split("@")[0], int(c.split("@")[1])) for c in args.cases.split(",")]
        for m, _ in cases:
            if m not in MODELS:
                ap.error(f"unknown model {m!r} in --cases (known: {', '.join(MODELS)})")
    scale = 1.0
    full_size = not (args.small_files or args.quick)

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        if args.twin is not None:
            root, scale = args.twin.resolve(), None
        else:
            root, synth_s = make_twin(Path(tmp), scale=scale, full_size=full_size)
            _log.info("twin (scale %.1f%s) written in %.1f s", scale, ", full size" if full_size else "",
                      synth_s)
        results = []
        for model, size in cases:
            ds = anklealign.load(root, image_size=size, cache_dir=Path(tmp) / "cache")
            files = _files(root, ds.train.ids)  # the same training images, as files
            case = Case(model, size, ds, files, device)
            _log.info("case %s @ %d px: %d training images, %d rounds ...", model, size, case.n, rounds)
            results.append(run_case(case, rounds))
        file_size = _median_size(files)
    out = {
        "benchmark": "pipeline", "provenance": provenance(), "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "rounds": rounds,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg()[0],
        "train_images": case.n, "twin": {"scale": scale, "full_size": full_size and args.twin is None,
                                                        "file_median_wh": file_size},
        "goals": {"ratio_vs_compute": GOAL_VS_COMPUTE, "ratio_vs_pil_loader": GOAL_VS_PIL},
        "cases": results,
        "all_pass": all(r["pass_vs_compute"] and r["pass_vs_pil_loader"] for r in results),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_table(out)
    return 0


def print_table(out: dict[str, Any]) -> None:
    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    print(f"training throughput, images/s (median of {out['rounds']} interleaved rounds; device {out['device']}, "
          f"{out['threads']} threads; {out['train_images']} training images/epoch; twin files median "
          f"{out['twin']['file_median_wh'][0]}x{out['twin']['file_median_wh'][1]} px; load average "
          f"{out['loadavg_start']:.1f} -> {out['loadavg_end']:.1f}; OMP_WAIT_POLICY={out['omp_wait_policy']})")
    head = (f"{'case':<12}{'ours':>8}{'compute':>9}{'pil w2':>8}{'pil w0':>8}   "
            f"{'ours/compute (goal>=0.9)':<26}{'ours/pil w2 (goal>=3)':<24}{'ours/pil w0':>11}")
    print(head)
    print("-" * len(head))
    for r in out["cases"]:
        print(f"{r['model'] + '@' + str(r['image_size']):<12}{r['ours_images_per_s']:>8.0f}"
              f"{r['compute_only_images_per_s']:>9.0f}{r['pil_loader_images_per_s']:>8.0f}"
              f"{r['pil_loader_w0_images_per_s']:>8.0f}   "
              f"{r['ratio_vs_compute']:>6.2f} {ok(r['pass_vs_compute']):<19}"
              f"{r['ratio_vs_pil_loader']:>6.2f} {ok(r['pass_vs_pil_loader']):<17}{r['ratio_vs_pil_loader_w0']:>11.2f}")


if __name__ == "__main__":
    sys.exit(main())
