"""The Optuna objective: suggest -> build -> train folds in lockstep -> report -> prune.

Reads top to bottom like optuna-examples' ``pytorch_simple.py``; the fold loop lives in
:mod:`search.run.train`. Every trial stores its resolved config so the model rebuilds without Optuna,
and both its best-epoch and its last-epoch cross-validated score (:class:`search.study.records.TrialRecord`),
whichever of the two the study optimises.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

import optuna
import torch

from search.run.data import DataContext
from search.run.train import FitResult, Interrupted, NonFiniteLoss, OutOfMemory, fit_folds, peak_memory_mb
from search.study import records
from search.study.records import TrialRecord
from search.study.seeds import trial_seed, worker_id
from space import count_macs, count_params
from space.search_space import SearchSpace, suggest

__all__ = ["make_objective", "OBJECTIVES", "objective_value"]

_log = logging.getLogger(__name__)

# What a trial's value is, by [study] objective (the study optimises exactly one; both are recorded).
OBJECTIVES: dict[str, Callable[[FitResult], float]] = {
    "best_epoch": lambda r: r.best_score,  # the fold-mean score of the best epoch
    "last_epoch": lambda r: r.scores[-1],  # the fold-mean score after the full budget
    "last_mean": lambda r: r.last_mean,  # the mean fold-mean score of the last LAST_EPOCHS epochs
}


def objective_value(name: str, result: FitResult) -> float:
    """The value a study with ``[study] objective = name`` optimises, from a fit's per-epoch scores."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r} (valid: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name](result)


def make_objective(
    *,
    data: DataContext,
    space: SearchSpace,
    max_epochs: int,
    metric: str,
    study_seed: int,
    objective: str = "best_epoch",
    stop: threading.Event | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Callable[[optuna.Trial], float]:
    """Build the objective for one study run. ``progress(trial number, epoch, value)`` hears of every epoch."""

    def run(trial: optuna.Trial) -> float:
        cfg = suggest(trial, space, max_epochs=max_epochs, num_classes=data.num_classes)
        # A re-queued trial (dead worker, Ctrl-C) arrives with its first attempt's seed.
        seed = TrialRecord.of(trial).seed
        seed = trial_seed(study_seed, trial.number) if seed is None else seed
        records.write(trial, config=cfg.to_dict(), seed=seed, params_count=count_params(cfg.model),
                      macs=count_macs(cfg.model, cfg.input.image_size), device=str(data.device),
                      worker=worker_id())

        pool, folds = data.pool(cfg.input)

        def on_epoch(epoch: int, value: float) -> None:
            if progress is not None:
                progress(trial.number, epoch, value)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} (validation {metric} {value:.4f})")

        t0 = time.perf_counter()
        result = FitResult()
        try:
            fit_folds(pool, folds, cfg, metric=metric, seed=seed, on_epoch=on_epoch, stop=stop, result=result)
        except optuna.TrialPruned as exc:
            _record(trial, data, result, t0, objective, prune_reason=str(exc))
            raise
        except NonFiniteLoss as exc:
            # A diverging config is a bad point of the space, not a crash: prune it with the reason.
            _record(trial, data, result, t0, objective, prune_reason=f"non-finite loss: {exc}")
            raise optuna.TrialPruned(f"non-finite loss: {exc}") from exc
        except OutOfMemory as exc:
            # Pruned, not failed: TPE ignores failed trials and would propose the same size again.
            gc.collect()
            if data.device.type == "cuda":
                torch.cuda.empty_cache()
            _record(trial, data, result, t0, objective, prune_reason=f"out of memory: {exc}")
            raise optuna.TrialPruned(f"out of memory: {exc}") from exc
        except Interrupted:
            records.write(trial, fail_reason="interrupted by the user (Ctrl-C); its parameters are re-queued",
                          interrupted=True)
            raise
        except Exception as exc:
            records.write(trial, fail_reason=f"{exc.__class__.__name__}: {exc}"[:500])
            raise
        _record(trial, data, result, t0, objective)
        return objective_value(objective, result)

    return run


def _record(trial: optuna.Trial, data: DataContext, result: FitResult, t0: float, objective: str,
            **extra: object) -> None:
    """The figures of a trial, complete or pruned (its epochs are also its intermediate values).

    The out-of-fold probabilities are those of the state the trial's value describes, the one the final step
    exports: the best epoch's for ``best_epoch`` (a best-epoch retrain stops there), else the last epochs' mean.
    """
    values: dict[str, object] = {}
    if result.best_epoch >= 0:
        # 1-based: the epoch count a best-epoch retrain runs
        values.update(best_epoch=result.best_epoch + 1, cv_best=result.best_score, cv_last=result.scores[-1],
                      cv_last_mean=result.last_mean)
    oof = result.oof_best if objective == "best_epoch" and result.oof is not None else result.oof
    if oof is not None:
        values.update(oof=records.encode_probs(oof))
    records.write(trial, **values, epochs_run=result.epochs_run, epoch_seconds=tuple(result.epoch_seconds),
                  train_images_per_s=round(result.images_trained / max(result.train_seconds, 1e-9), 1),
                  seconds=round(time.perf_counter() - t0, 3), peak_memory_mb=peak_memory_mb(data.device),
                  **extra)
