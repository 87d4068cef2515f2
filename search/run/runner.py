"""Running trials: ask, train, tell, until the study has N finished ones.

``--trials N`` means "the study has N finished trials" (:func:`search.run.queue.finished_count`):
running the same command again after an interruption continues to N. Ctrl-C ends the running trial
between two batches, re-queues it, and the command returns :data:`EXIT_INTERRUPTED`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from search.run.data import DataContext
from search.run.objective import make_objective
from search.run.queue import ask_next, finished_count, requeue_trial
from search.run.session import Session, open_session
from search.run.train import Interrupted
from search.study import optuna_api
from search.study.definition import StudyDef
from search.study.errors import EXIT_INTERRUPTED, SearchError
from search.study.notes import write_trial_note
from search.study.records import TrialRecord
from search.study.storage import redact

__all__ = ["RunOptions", "RunOutcome", "run_trials", "run_study", "EXIT_INTERRUPTED"]

_log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RunOptions:
    """What a ``run`` or ``worker`` command resolved from its flags."""

    trials: int
    storage_url: str
    run_dir: Path
    device: str = "auto"
    timeout: float | None = None
    worker: bool = False
    cache_dir: Path | None = None
    show_progress: bool = True


@dataclass(frozen=True)
class RunOutcome:
    finished: int
    interrupted: bool
    study_name: str


@contextmanager
def _sigint_to_event(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C asks the running trial to stop between batches; a second one kills at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _state_counts(trials: Sequence[FrozenTrial]) -> dict[TrialState, int]:
    counts: dict[TrialState, int] = {}
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    return counts


def _trial_line(t: FrozenTrial) -> str:
    r = TrialRecord.of(t)
    value = f"{t.value:.4f}" if t.value is not None else "-"
    preset = f" [{r.preset}]" if r.preset else ""
    reason = f" ({r.reason})" if r.reason and t.state != TrialState.COMPLETE else ""
    secs = f"{r.seconds:.1f}s" if r.seconds is not None else "-"
    epochs = "-" if r.epochs_run is None else r.epochs_run
    return f"trial {t.number:>3}{preset} {t.state.name.lower():<8} value={value} epochs={epochs} {secs}{reason}"


def startup_note(defn: StudyDef, trials: int) -> str | None:
    """What a study of ``trials`` finished trials will not do, when it stops before the sampler searches: the
    enqueued presets come first, then TPE's random start-up trials; only after both does TPE propose."""
    presets, startup = len(defn.study.enqueue_presets), defn.sampler.n_startup_trials
    if defn.sampler.name != "tpe" or trials > presets + startup:
        return None
    what = (f"the first {trials} of the {presets} enqueued presets" if trials <= presets else
            f"the {presets} enqueued presets and {trials - presets} random start-up trials")
    return (f"--trials {trials} runs only {what}: TPE proposes nothing before {presets + startup} trials have run "
            f"({presets} presets, then sampler.n_startup_trials = {startup} random ones). For a search use --trials "
            f"{presets + startup + 10} or more, or fewer presets and a shorter start-up: --set "
            "'study.enqueue_presets=[\"default\"]' --set sampler.n_startup_trials=3")


def run_study(defn: StudyDef, opts: RunOptions, *, stop: threading.Event | None = None,
              data: DataContext | None = None) -> RunOutcome:
    """Open the study (:func:`search.run.session.open_session`) and run trials until it has ``opts.trials``."""
    session = open_session(defn, storage_url=opts.storage_url, run_dir=opts.run_dir, data=data, worker=opts.worker,
                           device=opts.device, cache_dir=opts.cache_dir)
    return run_trials(session, opts, stop=stop)


def run_trials(session: Session, opts: RunOptions, *, stop: threading.Event | None = None) -> RunOutcome:
    """Run trials of an opened study until it has ``opts.trials`` finished ones (or the timeout passes)."""
    stop = stop or threading.Event()
    defn, study, storage, data = session.defn, session.study, session.storage, session.data
    device = data.device

    # The bar is for a terminal: in a redirected log it would leave carriage returns; the per-trial lines
    # (printed either way) tell the same story there.
    show = opts.show_progress and sys.stderr.isatty()
    bar = tqdm(total=opts.trials, initial=min(finished_count(study), opts.trials), desc=defn.name, unit="trial",
               dynamic_ncols=True, disable=not show, leave=True)
    best_text = {"value": "-"}

    def progress(number: int, epoch: int, value: float) -> None:  # inside a trial: its epoch and score
        bar.set_postfix_str(f"best={best_text['value']}, trial {number} epoch {epoch + 1}/"
                            f"{defn.training.max_epochs} {defn.study.metric} {value:.3f}", refresh=True)

    objective = make_objective(data=data, space=session.space, max_epochs=defn.training.max_epochs,
                               metric=defn.study.metric, study_seed=defn.study.seed,
                               objective=defn.study.objective, stop=stop, progress=progress if show else None)
    target = opts.trials
    done = finished_count(study)
    _log.info("study %s: %d/%d finished trials, storage %s, device %s", defn.name, done, target,
              redact(opts.storage_url), device)
    if (note := startup_note(defn, target)) is not None:
        _log.warning("%s", note)
    t_start = time.monotonic()
    interrupted = False
    try:
        with _sigint_to_event(stop):
            while True:
                # One read of the trials per loop turn: each read is a round of queries on a server.
                trials = study.get_trials(deepcopy=False)
                done = finished_count(study, trials)
                if done >= target or stop.is_set():
                    break
                if opts.timeout is not None and time.monotonic() - t_start > opts.timeout:
                    _log.info("timeout of %.0f s reached", opts.timeout)
                    break
                counts = _state_counts(trials)
                running, waiting = counts.get(TrialState.RUNNING, 0), counts.get(TrialState.WAITING, 0)
                if waiting == 0 and done + running >= target:
                    # Others' trials will finish the study; wait in case one of them dies (heartbeat).
                    if optuna_api.heartbeat_enabled(storage):
                        optuna_api.fail_stale_trials(study)
                    time.sleep(1.0)
                    continue
                last, interrupted = _run_one_trial(study, storage, objective)
                bar.write(_trial_line(last))
                write_trial_note(study, last, metric=defn.study.metric)
                trials = study.get_trials(deepcopy=False)
                bar.n = min(finished_count(study, trials), target)
                counts = _state_counts(trials)
                best = _best_value(trials)
                best_text["value"] = f"{best:.4f}" if best is not None else "-"
                bar.set_postfix(pruned=counts.get(TrialState.PRUNED, 0), best=best_text["value"], refresh=False)
                bar.refresh()
                if interrupted:
                    break
    finally:
        bar.close()
    return RunOutcome(finished=finished_count(study), interrupted=interrupted or stop.is_set(),
                      study_name=defn.name)


def _run_one_trial(study: optuna.Study, storage: optuna.storages.BaseStorage,
                   objective: Callable[[optuna.Trial], float]) -> tuple[FrozenTrial, bool]:
    """Ask, run, tell: one trial with a heartbeat, its outcome recorded whatever happens.

    Returns the finished trial and whether the user interrupted it (then it is re-queued).
    A failing trial is logged in one line with its reason (the traceback only with --debug).
    """
    if optuna_api.heartbeat_enabled(storage):
        optuna_api.fail_stale_trials(study)
    trial = ask_next(study)
    interrupted = False
    with optuna_api.heartbeat(trial, storage):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            frozen = study.tell(trial, state=TrialState.PRUNED)
        except Interrupted:
            interrupted = True
            frozen = study.tell(trial, state=TrialState.FAIL)
            requeue_trial(study, frozen)
        except Exception as exc:  # a trial's own failure must not stop the study...
            if _poisons_process(exc):
                # ...unless it left the CUDA context unusable: record it, hand its trial to another
                # worker (re-queued), and end this process cleanly.
                frozen = study.tell(trial, state=TrialState.FAIL)
                requeue_trial(study, frozen)
                raise SearchError(f"trial {trial.number} hit a CUDA error that leaves this process unusable "
                                  f"({str(exc).splitlines()[0][:200]}); the trial was re-queued for another "
                                  f"worker. Restart this worker.") from exc
            _log.warning("trial %d failed: %s: %s", trial.number, exc.__class__.__name__, exc,
                         exc_info=_log.isEnabledFor(logging.DEBUG))
            frozen = study.tell(trial, state=TrialState.FAIL)
        else:
            frozen = study.tell(trial, value)
    return frozen, interrupted


def _poisons_process(exc: BaseException) -> bool:
    """A CUDA error (not an out-of-memory) leaves the process's CUDA context unusable."""
    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None and isinstance(exc, accel):
        return True
    return isinstance(exc, RuntimeError) and "CUDA error" in str(exc)


def _best_value(trials: Sequence[FrozenTrial]) -> float | None:
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(values) if values else None


