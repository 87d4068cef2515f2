"""Training on tensors that already sit on the device: cross-validation folds in lockstep.

The image pool is uint8 ``(N, C, H, W)`` on the device. A batch is gathered by index, augmented
there (fresh randomness every epoch, never on validation data), normalised, and fed to the model.
No DataLoader, no per-epoch decoding: the input pipeline costs one gather per batch.

Models and batches are channels_last (NHWC) on every device: cuDNN wants it for bf16 tensor
cores, and oneDNN on the CPU trains the search space's CNNs 1.2-1.6x faster in NHWC than in NCHW
(measured with benchmarks/ab_train.py). Exported weights are copied into fresh NCHW models, so nothing outside
training sees the layout.
"""

from __future__ import annotations

import logging
import math
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

from search.run.metrics import METRICS, confusion, metrics_from_confusion
from space import AugmentCfg, TrainCfg, TrialCfg, augment_batch, build_cnn, normalize

__all__ = [
    "TrainPool",
    "FitResult",
    "NonFiniteLoss",
    "OutOfMemory",
    "Interrupted",
    "make_folds",
    "fit_folds",
    "train_model",
    "Trained",
    "predict_proba",
    "score",
    "resolve_device",
]

_log = logging.getLogger(__name__)


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


class OutOfMemory(Exception):
    """A CUDA or CPU allocation failed during training."""


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C); raised between batches so that state stays consistent."""


# Epochs at the end of the budget whose validation scores (and out-of-fold probabilities) are averaged.
LAST_EPOCHS = 5


@dataclass(frozen=True)
class TrainPool:
    """The training pool a trial may see: never the test set."""

    images: torch.Tensor  # (N, C, H, W) uint8, on the training device
    labels: torch.Tensor  # (N,) int64, on the training device
    groups: np.ndarray  # (N,) int64 duplicate-group ids (CPU)
    num_classes: int


@dataclass
class FitResult:
    """What a cross-validated fit found."""

    best_score: float = float("-inf")
    best_epoch: int = -1  # 0-based index of the best epoch
    scores: list[float] = field(default_factory=list)  # fold-mean validation score per epoch
    epoch_seconds: list[float] = field(default_factory=list)
    images_trained: int = 0
    train_seconds: float = 0.0
    # Out-of-fold probabilities (N, K) of every pool image, averaged over the last LAST_EPOCHS epochs of
    # the budget (None until the fit has run them): what the final step's bias correction and top-k
    # ensemble choice read.
    oof: np.ndarray | None = None
    # The out-of-fold probabilities of the best epoch (the state a best-epoch retrain exports).
    oof_best: np.ndarray | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.scores)

    @property
    def last_mean(self) -> float:
        """The mean fold-mean score of the last :data:`LAST_EPOCHS` epochs run (a lower-variance value
        than the best epoch's, which is the maximum of noisy scores and so biased upwards)."""
        tail = self.scores[-LAST_EPOCHS:]
        return float(np.mean(tail)) if tail else float("-inf")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available (use --device cpu)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def make_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, grouped folds: a duplicate group never spans two folds."""
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ValueError(f"cv.folds={n_folds} needs at least {n_folds} distinct image groups, got {n_groups}")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    x = np.zeros(len(labels))
    return [(tr, va) for tr, va in splitter.split(x, labels, groups)]


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """The validation metric, by the one definition of :mod:`search.run.metrics` (macro-F1 over all classes).

    From one confusion matrix: a few microseconds instead of scikit-learn's ~5 ms of input checks,
    paid 3 folds x every epoch x every trial; the values are scikit-learn's (tests check).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (valid: {', '.join(METRICS)})")
    return float(metrics_from_confusion(confusion(y_true, y_pred, num_classes))[metric])


# foreach: one multi-tensor update per step instead of a Python loop over the parameters. It is the
# default on CUDA already; on the CPU it saves ~5 % of a small net's step.
OPTIMIZERS: dict[str, Callable[[nn.Module, TrainCfg], torch.optim.Optimizer]] = {
    "adam": lambda m, t: torch.optim.Adam(m.parameters(), lr=t.lr, weight_decay=t.weight_decay, foreach=True),
    "adamw": lambda m, t: torch.optim.AdamW(m.parameters(), lr=t.lr, weight_decay=t.weight_decay, foreach=True),
    "sgd": lambda m, t: torch.optim.SGD(m.parameters(), lr=t.lr, momentum=0.9, nesterov=True,
                                        weight_decay=t.weight_decay, foreach=True),
}

# The schedule spans the recipe's whole budget (``max_epochs``); None = a constant learning rate.
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrainCfg], torch.optim.lr_scheduler.LRScheduler | None]] = {
    "cosine": lambda opt, t: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(t.max_epochs, 1)),
    "none": lambda opt, t: None,
}


def _class_weights(labels: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).float().clamp_min(1.0)
    return (counts.sum() / (num_classes * counts)).to(labels.device)


class _Fold:
    """One model, optimiser and schedule, trained an epoch at a time (a CV fold, or the final retrain).

    The schedule always spans the recipe's full budget (``cfg.train.max_epochs``), however many
    epochs are then trained: a retrain that stops at the trial's best epoch has seen exactly the
    learning rates the trial had seen by then.
    """

    def __init__(self, cfg: TrialCfg, pool: TrainPool, train_idx: np.ndarray, seed: int,
                 device: torch.device) -> None:
        torch.manual_seed(seed)
        self.model = build_cnn(cfg.model).to(device, memory_format=torch.channels_last)
        self.opt = OPTIMIZERS[cfg.train.optimizer](self.model, cfg.train)
        self.sched = SCHEDULES[cfg.train.schedule](self.opt, cfg.train)
        self.train_idx = torch.as_tensor(train_idx, device=device)
        weights = _class_weights(pool.labels[self.train_idx], pool.num_classes, cfg.train.class_weighting)
        self.loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.train.label_smoothing)
        self.shuffle_gen = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(seed + 1)

    @property
    def lr(self) -> float:
        """The learning rate the next epoch trains with."""
        return float(self.opt.param_groups[0]["lr"])


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split an epoch's (already shuffled) pool indices into batches, on the indices' device."""
    chunks = list(order.split(batch_size))
    # Drop a trailing batch of one: batchnorm cannot train on it.
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks = chunks[:-1]
    return chunks


def _prepare(x_u8: torch.Tensor, aug: AugmentCfg | None, gen: torch.Generator | None) -> torch.Tensor:
    x = augment_batch(x_u8, aug, generator=gen) if aug is not None and aug.enabled else x_u8
    x = normalize(x)  # (B, C, H, W) float32 in [-1, 1]
    return x.contiguous(memory_format=torch.channels_last)  # NHWC in memory, same shape


def _train_epoch(fold: _Fold, pool: TrainPool, cfg: TrialCfg, stop: threading.Event | None) -> tuple[int, float]:
    """One epoch over the fold's training indices; returns (images trained on, mean batch loss).

    Nothing in the loop waits for the device: the shuffled order moves to the device once per
    epoch (not one index copy per batch), and the loss is summed on the device and checked for
    NaN/inf once at the end of the epoch instead of synchronising on every batch. A diverging
    config therefore runs to the end of the epoch it diverged in before it is stopped.
    """
    model, device = fold.model, pool.images.device
    model.train()
    perm = torch.randperm(len(fold.train_idx), generator=fold.shuffle_gen)  # CPU generator: same order on every device
    order = fold.train_idx[perm.to(device)]  # (n,) pool indices in this epoch's order
    loss_sum = torch.zeros((), device=device)
    seen = batches = 0
    for idx in _batches(order, cfg.train.batch_size):
        if stop is not None and stop.is_set():
            raise Interrupted("stopped by the user")
        x = _prepare(pool.images[idx], cfg.augment, fold.aug_gen)
        y = pool.labels[idx]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = fold.loss_fn(model(x), y)
        fold.opt.zero_grad(set_to_none=True)
        loss.backward()
        fold.opt.step()
        loss_sum += loss.detach()
        seen += len(idx)
        batches += 1
    total = float(loss_sum.item())  # the one device sync of the epoch (CE losses are >= 0)
    if not math.isfinite(total):
        raise NonFiniteLoss(f"training loss became {total} (summed over the epoch)")
    if fold.sched is not None:
        fold.sched.step()
    return seen, total / max(batches, 1)


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities ``(N, K)`` float32 on the CPU for uint8 images ``(N, C, H, W)``."""
    model.eval()
    out = []
    device = images.device
    for start in range(0, len(images), batch_size):
        x = _prepare(images[start:start + batch_size], None, None)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def _guard_memory(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(f"CUDA out of memory: {str(exc).splitlines()[0]}") from exc
    except MemoryError as exc:
        raise OutOfMemory("CPU out of memory") from exc
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
            raise OutOfMemory(str(exc).splitlines()[0]) from exc
        raise


def fit_folds(
    pool: TrainPool,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    cfg: TrialCfg,
    *,
    metric: str,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    stop: threading.Event | None = None,
    result: FitResult | None = None,
) -> FitResult:
    """Train one model per fold in lockstep; after each epoch report the fold-mean validation score.

    ``on_epoch(epoch, score)`` may raise (``optuna.TrialPruned``) to end the fit early; pass
    ``result`` to keep the figures of a fit that ended that way (it is filled in place).
    """
    device = pool.images.device
    epochs = cfg.train.max_epochs
    runs = [_Fold(cfg, pool, tr, seed + 1000 * i, device) for i, (tr, _) in enumerate(folds)]
    val_idx = [torch.as_tensor(va, device=device) for _, va in folds]
    val_true = [pool.labels[v].cpu().numpy() for v in val_idx]
    result = result if result is not None else FitResult()
    oof_sum = np.zeros((len(pool.labels), pool.num_classes), dtype=np.float64)
    oof_from = max(0, epochs - LAST_EPOCHS)
    epoch_oof = np.zeros((len(pool.labels), pool.num_classes), dtype=np.float32)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        fold_scores = []
        for fold, (_, va), vi, yt in zip(runs, folds, val_idx, val_true, strict=True):
            seen, _ = _guard_memory(lambda f=fold: _train_epoch(f, pool, cfg, stop))  # type: ignore[misc]
            result.images_trained += seen
            proba = _guard_memory(lambda f=fold, v=vi: predict_proba(f.model, pool.images[v]))
            fold_scores.append(score(metric, yt, proba.argmax(1).numpy(), pool.num_classes))
            epoch_oof[va] = proba.numpy()
            if epoch >= oof_from:
                oof_sum[va] += proba.numpy()
        dt = time.perf_counter() - t0
        result.train_seconds += dt
        result.epoch_seconds.append(round(dt, 4))
        mean = float(np.mean(fold_scores))
        if not math.isfinite(mean):  # pragma: no cover - scores are bounded
            raise NonFiniteLoss(f"validation score is {mean}")
        result.scores.append(mean)
        if mean > result.best_score:
            result.best_score, result.best_epoch = mean, epoch
            result.oof_best = epoch_oof.copy()
        if epoch == epochs - 1:
            result.oof = (oof_sum / (epochs - oof_from)).astype(np.float32)
        if on_epoch is not None:
            on_epoch(epoch, mean)
    return result


@dataclass(frozen=True)
class Trained:
    """A model trained on a whole pool, and what each of its epochs did."""

    model: nn.Module
    losses: tuple[float, ...]  # mean training loss of each epoch
    lrs: tuple[float, ...]  # learning rate each epoch trained with


def train_model(images: torch.Tensor, labels: torch.Tensor, cfg: TrialCfg, *, epochs: int, seed: int,
                num_classes: int, stop: threading.Event | None = None) -> Trained:
    """Train one model on the whole pool with ``cfg``'s recipe for its first ``epochs`` epochs.

    The recipe is the trial's own: optimiser, batch size, augmentation, precision, and the schedule
    over ``cfg.train.max_epochs`` even when ``epochs`` is fewer (the final retrain of a trial scored at
    its best epoch stops there, having seen the same learning rates).
    """
    if not 1 <= epochs <= cfg.train.max_epochs:
        raise ValueError(f"epochs must be in [1, {cfg.train.max_epochs}] (the recipe's budget), got {epochs}")
    pool = TrainPool(images=images, labels=labels, groups=np.zeros(len(labels), dtype=np.int64),
                     num_classes=num_classes)
    fold = _Fold(cfg, pool, np.arange(len(labels)), seed, images.device)
    losses, lrs = [], []
    for _ in range(epochs):
        lrs.append(fold.lr)
        _, loss = _guard_memory(lambda: _train_epoch(fold, pool, cfg, stop))  # type: ignore[misc]
        losses.append(loss)
    fold.model.eval()
    return Trained(model=fold.model, losses=tuple(losses), lrs=tuple(lrs))


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
