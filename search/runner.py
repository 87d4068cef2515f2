"""Running a study: create or join it, enqueue the seed nets, run trials until N are finished.

``--trials N`` means "the study has N finished trials" (complete, pruned, or failed for a
reason of its own): running the same command again after an interruption continues to N.
Trials failed by a heartbeat (dead worker) or by Ctrl-C are re-queued with the same parameters
and do not count. Ctrl-C ends the running trial between two batches, re-queues it, and
returns :data:`EXIT_INTERRUPTED`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from search import atomic
from search.dashboard import write_trial_note
from search.data import DataContext, describe
from search.errors import SearchError
from search.objective import make_objective
from search.records import TrialRecord
from search.seeds import sampler_seed
from search.storage import is_sqlite, open_storage, redact
from search.studydef import StudyDef, name_from_data
from search.train import Interrupted, resolve_device
from space import PRESET_TRIALS, InputCfg, TrialCfg
from space.search_space import SearchSpace, to_params

__all__ = [
    "RunOptions",
    "RunOutcome",
    "Prepared",
    "prepare_study",
    "run_study",
    "requeue_trial",
    "finished_count",
    "make_sampler",
    "make_pruner",
    "open_study",
    "open_data",
    "name_study",
    "preset_trial",
]

_log = logging.getLogger(__name__)

_ATTR_DEF_HASH = "definition_hash"
_ATTR_DATA_FP = "data_fingerprint"


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


def make_sampler(defn: StudyDef, *, seed: int) -> optuna.samplers.BaseSampler:
    s = defn.sampler
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                          multivariate=s.multivariate, group=s.multivariate,
                                          constant_liar=True)


def make_pruner(defn: StudyDef) -> optuna.pruners.BasePruner:
    p = defn.pruner
    max_epochs = defn.training.max_epochs
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, p.n_warmup_steps))
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, p.n_warmup_steps), max_resource=max_epochs)
    if p.name == "wilcoxon":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=p.n_warmup_steps)
    return optuna.pruners.NopPruner()


def finished_count(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> int:
    """Complete + pruned + failed trials, minus failures whose parameters were queued again.

    A re-queued failure (its worker died, or Ctrl-C) is named in a later trial's ``retry_history``
    system attribute, as Optuna's heartbeat retry callback writes it; an interrupted trial is
    re-queued by the runner the same way. ``trials``: the study's trials when already read.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in retried and not TrialRecord.of(t).interrupted))


def open_study(defn: StudyDef, storage: optuna.storages.BaseStorage, *, seed: int,
               data_fingerprint: str | None, num_classes: int = 3,
               create: bool = True) -> tuple[optuna.Study, bool]:
    """Create the study (and enqueue the presets) or load it and check it is the same study.

    Returns the study and whether this call created it. Raises :class:`SearchError` when a
    study of that name exists with another definition or other data.
    """
    sampler, pruner = make_sampler(defn, seed=seed), make_pruner(defn)
    created = False
    try:
        if not create:
            raise optuna.exceptions.DuplicatedStudyError
        study = optuna.create_study(study_name=defn.name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="maximize")
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        try:
            study = optuna.load_study(study_name=defn.name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError as exc:
            raise SearchError(f"no study named {defn.name!r} in this storage (start it with 'run' first)") from exc
    if created:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([defn.study.metric])  # the dashboard's axis says macro_f1, not "Objective 0"
        study.set_user_attr(_ATTR_DEF_HASH, defn.definition_hash())
        study.set_user_attr("definition", defn.to_dict())
        if data_fingerprint is not None:
            study.set_user_attr(_ATTR_DATA_FP, data_fingerprint)
        space = SearchSpace.from_dict(dict(defn.space))
        for name in defn.study.enqueue_presets:
            cfg = preset_trial(name, space, defn.training.max_epochs, num_classes=num_classes)
            study.enqueue_trial(to_params(cfg, space), user_attrs={"preset": name}, skip_if_exists=True)
    else:
        _check_same(study, defn, data_fingerprint)
    return study, created


def preset_trial(name: str, space: SearchSpace, max_epochs: int, *, num_classes: int) -> TrialCfg:
    """A seed net with the student's training settings, at the study's first image size.

    The seed nets are grayscale and size-independent (global pooling): the input size, the epoch
    budget and the number of classes (the head's outputs) come from the study and its data.
    """
    cfg = PRESET_TRIALS[name]
    if cfg.input.color not in space.color:
        raise SearchError(f"preset {name} is grayscale but [space] color is {list(space.color)}; "
                          f"add \"gray\" or remove the presets from study.enqueue_presets")
    inp = dataclasses.replace(cfg.input, image_size=space.image_size[0], resize=space.resize[0])
    return dataclasses.replace(cfg, input=inp, model=dataclasses.replace(cfg.model, num_classes=num_classes),
                               train=dataclasses.replace(cfg.train, max_epochs=max_epochs))


def _check_same(study: optuna.Study, defn: StudyDef, data_fingerprint: str | None) -> None:
    deadline = time.monotonic() + 30
    # A creator in another process sets the attributes right after creating the study.
    while _ATTR_DEF_HASH not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
    attrs = study.user_attrs
    if attrs.get(_ATTR_DEF_HASH) not in (None, defn.definition_hash()):
        recorded = attrs.get("definition", {})
        diffs = [f"{s}.{k}: study has {recorded.get(s, {}).get(k)!r}, you have {v!r}"
                 for s, sect in defn.trial_relevant().items() for k, v in sect.items()
                 if recorded.get(s, {}).get(k) != v]
        raise SearchError(f"study {defn.name!r} exists with another definition ("
                          + ("; ".join(diffs[:5]) or "definition differs")
                          + "). Use another --study name or the recorded definition.")
    fp = attrs.get(_ATTR_DATA_FP)
    if data_fingerprint is not None and fp is not None and fp != data_fingerprint:
        raise SearchError(f"study {defn.name!r} was run on other data (fingerprint {fp[:12]}, yours "
                          f"{data_fingerprint[:12]}); point --data at the same source or use another study name")


@contextmanager
def _sigint_to_event(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C asks the running trial to stop between batches; a second one kills at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
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


def requeue_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again, as Optuna's heartbeat retry does.

    The new WAITING trial carries ``failed_trial`` = the original number, so the failed one no
    longer counts as finished (see :func:`finished_count`), and the first attempt's seed and seed-net
    name, so that the retry trains exactly what the first attempt would have.
    """
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    record = TrialRecord.of(trial)
    keep = {k: v for k, v in (("preset", record.preset), ("seed", record.seed)) if v is not None}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions, user_attrs=keep,
        system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                      "retry_history": history},
    ))


@dataclass(frozen=True)
class Prepared:
    """A study ready to take trials: its definition (named), storage, data context and search space."""

    defn: StudyDef
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    data: DataContext
    space: SearchSpace
    device: Any


def open_data(defn: StudyDef, *, device: str, cache_dir: Path | None = None) -> DataContext:
    """The study's data, loaded (and cached) once at its first input size: a bad source fails here."""
    space = SearchSpace.from_dict(dict(defn.space))
    first = InputCfg(image_size=space.image_size[0], color=space.color[0], resize=space.resize[0])
    data = DataContext(source=defn.data.source or None, device=resolve_device(device), folds=defn.cv.folds,
                       seed=defn.study.seed, cache_dir=cache_dir, default_input=first)
    info = describe(data.dataset(first))
    _log.info("data: %s: %s (%d training images, %d test images kept apart)", info["note"], info["source"],
              info["train_images"], info["test_images"])
    return data


def name_study(defn: StudyDef, data: DataContext) -> StudyDef:
    """``defn`` under its own name, or, without one, under the data's (:func:`name_from_data`)."""
    if defn.name:
        return defn
    return defn.named(name_from_data(data.source, data.dataset(data.default_input).fingerprint))


def prepare_study(defn: StudyDef, opts: RunOptions, data: DataContext | None = None) -> Prepared:
    """Check the run folder and storage, load the data once, create or join the study.

    Everything that can fail on bad input fails here, before any trial is asked for.
    """
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(opts.run_dir, os.W_OK):
        raise SearchError(f"output folder is not writable: {opts.run_dir}")
    if opts.worker and is_sqlite(opts.storage_url):
        raise SearchError(
            "several processes on one SQLite file fail with 'database is locked'. For workers use a server "
            "database (--storage postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db) or, on one "
            "machine, Optuna's journal file storage (--storage journal:///path/to/journal.log)")
    data = data or open_data(defn, device=opts.device, cache_dir=opts.cache_dir)
    defn = name_study(defn, data)
    # Bit-for-bit repeatable training where torch offers it (slower on some GPU kernels).
    torch.use_deterministic_algorithms(defn.training.deterministic, warn_only=False)
    ds = data.dataset(data.default_input)
    storage = open_storage(opts.storage_url, defn.storage)
    study, created = open_study(defn, storage, seed=sampler_seed(defn.study.seed, worker=opts.worker),
                                data_fingerprint=ds.fingerprint, num_classes=len(ds.classes))
    if created:
        study.set_user_attr("data", describe(ds))
    atomic.write_text(opts.run_dir / "study.toml", defn.to_toml())
    return Prepared(defn=defn, study=study, storage=storage, data=data, space=SearchSpace.from_dict(dict(defn.space)),
                    device=data.device)


def run_study(defn: StudyDef, opts: RunOptions, *, stop: threading.Event | None = None,
              data: DataContext | None = None) -> RunOutcome:
    """Run trials until the study has ``opts.trials`` finished ones (or the timeout passes)."""
    stop = stop or threading.Event()
    prep = prepare_study(defn, opts, data)
    defn, study, storage, data, space, device = prep.defn, prep.study, prep.storage, prep.data, prep.space, prep.device

    objective = make_objective(data=data, space=space, max_epochs=defn.training.max_epochs,
                               metric=defn.study.metric, study_seed=defn.study.seed,
                               objective=defn.study.objective, stop=stop)
    target = opts.trials
    done = finished_count(study)
    _log.info("study %s: %d/%d finished trials, storage %s, device %s", defn.name, done, target,
              redact(opts.storage_url), device)
    t_start = time.monotonic()
    bar = tqdm(total=target, initial=min(done, target), desc=defn.name, unit="trial", dynamic_ncols=True,
               disable=not opts.show_progress, leave=True)
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
                    if _is_heartbeat(storage):
                        optuna.storages.fail_stale_trials(study)
                    time.sleep(1.0)
                    continue
                last, interrupted = _run_one_trial(study, storage, objective)
                bar.write(_trial_line(last))
                write_trial_note(study, last, metric=defn.study.metric)
                trials = study.get_trials(deepcopy=False)
                bar.n = min(finished_count(study, trials), target)
                counts = _state_counts(trials)
                best = _best_value(trials)
                bar.set_postfix(pruned=counts.get(TrialState.PRUNED, 0), best=f"{best:.4f}" if best is not None
                                else "-", refresh=False)
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
    if _is_heartbeat(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    trial = _ask_retries_first(study)
    interrupted = False
    with get_heartbeat_thread(trial._trial_id, storage):
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


def _ask_retries_first(study: optuna.Study) -> optuna.Trial:
    """The next trial: a re-queued one (dead worker, Ctrl-C) before the seed nets and the sampler.

    Optuna's own queue is first-in first-out, so a retry would wait behind every enqueued preset
    and might never run in a short study; claiming it here (atomically, as Optuna's queue does)
    lets a surviving worker take over the dead one's trial at once.
    """
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if "failed_trial" not in t.system_attrs:
            continue
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    with warnings.catch_warnings():
        # We run the heartbeat ourselves (see _run_one_trial), as Study.optimize would.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        return study.ask()


def _is_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    return is_heartbeat_enabled(storage)


def _best_value(trials: Sequence[FrozenTrial]) -> float | None:
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(values) if values else None


