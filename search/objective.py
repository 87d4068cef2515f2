"""The Optuna objective: suggest -> build -> train folds in lockstep -> report -> prune.

Reads top to bottom like optuna-examples' ``pytorch_simple.py``; the fold loop lives in
:mod:`search.train`. Every trial stores its resolved config so the model rebuilds without Optuna.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import optuna
import torch

from search.data import DataContext
from search.train import FitResult, Interrupted, NonFiniteLoss, OutOfMemory, fit_folds, peak_memory_mb
from space import count_macs, count_params
from space.search_space import SearchSpace, suggest

__all__ = ["make_objective", "trial_seed"]

_log = logging.getLogger(__name__)


def trial_seed(study_seed: int, trial_number: int) -> int:
    """One seed per trial, derived from the study seed and the trial number (stored with the trial)."""
    return (study_seed * 1_000_003 + trial_number * 7919) % (2**31 - 1)


def make_objective(
    *,
    data: DataContext,
    space: SearchSpace,
    max_epochs: int,
    metric: str,
    study_seed: int,
    stop: threading.Event | None = None,
) -> Callable[[optuna.Trial], float]:
    """Build the objective for one study run."""

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest(trial, space, max_epochs=max_epochs, num_classes=data.num_classes)
        seed = trial_seed(study_seed, trial.number)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("params_count", count_params(cfg.model))
        trial.set_user_attr("macs", count_macs(cfg.model, cfg.input.image_size))
        trial.set_user_attr("device", str(data.device))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

        pool, folds = data.pool(cfg.input)

        def on_epoch(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} (validation {metric} {value:.4f})")

        t0 = time.perf_counter()
        result = FitResult()
        try:
            fit_folds(pool, folds, cfg, metric=metric, seed=seed, on_epoch=on_epoch, stop=stop, result=result)
        except optuna.TrialPruned as exc:
            _record(trial, data, result, t0)
            trial.set_user_attr("prune_reason", str(exc))
            raise
        except NonFiniteLoss as exc:
            # A diverging config is a bad point of the space, not a crash: prune it with the reason.
            _record(trial, data, result, t0)
            trial.set_user_attr("prune_reason", f"non-finite loss: {exc}")
            raise optuna.TrialPruned(f"non-finite loss: {exc}") from exc
        except OutOfMemory as exc:
            # Pruned, not failed: TPE ignores failed trials and would propose the same size again.
            gc.collect()
            if data.device.type == "cuda":
                torch.cuda.empty_cache()
            trial.set_user_attr("prune_reason", f"out of memory: {exc}")
            raise optuna.TrialPruned(f"out of memory: {exc}") from exc
        except Interrupted:
            trial.set_user_attr("fail_reason", "interrupted by the user (Ctrl-C); its parameters are re-queued")
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{exc.__class__.__name__}: {exc}"[:500])
            raise
        _record(trial, data, result, t0)
        return result.best_score

    return objective


def _record(trial: optuna.Trial, data: DataContext, result: FitResult, t0: float) -> None:
    """The figures of a trial, complete or pruned (its epochs are also its intermediate values)."""
    if result.best_epoch >= 0:
        trial.set_user_attr("best_epoch", result.best_epoch + 1)  # 1-based: the epoch count to retrain
    trial.set_user_attr("epochs_run", result.epochs_run)
    trial.set_user_attr("epoch_seconds", result.epoch_seconds)
    trial.set_user_attr("train_images_per_s", round(result.images_trained / max(result.train_seconds, 1e-9), 1))
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
    trial.set_user_attr("peak_memory_mb", peak_memory_mb(data.device))
