"""A study ready to take trials: data loaded once, storage opened once, study created or joined.

:func:`open_session` is where everything that can fail on bad input fails, before any trial is
asked for. The :class:`Session` it returns carries the opened study, the data (each input size
decoded once and reused by every trial and by the final step) and the search space.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch

from search.run.data import DataContext, describe
from search.run.queue import enqueue_presets
from search.run.strategies import make_pruner, make_sampler
from search.run.train import resolve_device
from search.study import atomic, optuna_api
from search.study.definition import StudyDef, name_from_data
from search.study.errors import SearchError
from search.study.records import StudyRecord
from search.study.seeds import sampler_seed
from search.study.storage import is_sqlite, open_storage
from space import InputCfg
from space.search_space import SearchSpace

__all__ = ["Session", "open_data", "name_study", "open_study", "open_session", "check_writable"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """An opened study with its definition (named), storage, data and search space."""

    defn: StudyDef
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    storage_url: str
    run_dir: Path
    data: DataContext
    space: SearchSpace


def open_data(defn: StudyDef, *, device: str, cache_dir: Path | None = None) -> DataContext:
    """The study's data, loaded (and cached) once at its first input size: a bad source fails here."""
    space = SearchSpace.from_dict(dict(defn.space))
    first = InputCfg(image_size=space.image_size[0], color=space.color[0], resize=space.resize[0])
    data = DataContext(source=defn.data.source or None, device=resolve_device(device), folds=defn.cv.folds,
                       seed=defn.study.seed, cache_dir=cache_dir, default_input=first,
                       mirrors=defn.data.mirrors)
    info = describe(data.dataset(first))
    _log.info("data: %s: %s (%d training images, %d test images kept apart)", info["note"], info["source"],
              info["train_images"], info["test_images"])
    return data


def name_study(defn: StudyDef, data: DataContext) -> StudyDef:
    """``defn`` under its own name, or, without one, under the data's (:func:`name_from_data`)."""
    if defn.name:
        return defn
    return defn.named(name_from_data(data.source, data.dataset(data.default_input).fingerprint))


def open_study(defn: StudyDef, storage: optuna.storages.BaseStorage, *, seed: int,
               data: DataContext | None = None) -> tuple[optuna.Study, bool]:
    """Create the study (record its definition and data, enqueue the seed nets) or join it and check it
    is the same study. Returns the study and whether this call created it.

    Raises:
        SearchError: a study of that name exists with another definition or other data.
    """
    ds = data.dataset(data.default_input) if data is not None else None
    sampler = make_sampler(defn, seed=seed)
    prior = (np.bincount(ds.train.labels.numpy(), minlength=len(ds.classes)) if ds is not None else np.ones(3))
    pruner = make_pruner(defn, prior=prior / prior.sum())
    try:
        study = optuna.create_study(study_name=defn.name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=defn.name, storage=storage, sampler=sampler, pruner=pruner)
        _check_same(study, defn, ds.fingerprint if ds is not None else None)
        return study, False
    optuna_api.set_metric_names(study, [defn.study.metric])  # the dashboard's axis says macro_f1
    traits = data.default_traits() if data is not None else None
    StudyRecord(definition=defn.to_dict(), definition_hash=defn.definition_hash(),
                data={**describe(ds), "default_follows": traits} if ds is not None else None,
                data_fingerprint=ds.fingerprint if ds is not None else None).write(study)
    enqueue_presets(study, defn.study.enqueue_presets, SearchSpace.from_dict(dict(defn.space)),
                    defn.training.max_epochs, num_classes=len(ds.classes) if ds is not None else 3, traits=traits)
    return study, True


def _check_same(study: optuna.Study, defn: StudyDef, data_fingerprint: str | None) -> None:
    deadline = time.monotonic() + 30
    # A creator in another process writes the definition hash last, once the rest is recorded.
    record = StudyRecord.of(study)
    while record.definition_hash is None and time.monotonic() < deadline:
        time.sleep(0.5)
        record = StudyRecord.of(study)
    if record.definition_hash not in (None, defn.definition_hash()):
        recorded = record.definition or {}
        diffs = [f"{s}.{k}: study has {recorded.get(s, {}).get(k)!r}, you have {v!r}"
                 for s, sect in defn.trial_relevant().items() for k, v in sect.items()
                 if recorded.get(s, {}).get(k) != v]
        raise SearchError(f"study {defn.name!r} exists with another definition ("
                          + ("; ".join(diffs[:5]) or "definition differs")
                          + f"). To start a new study with your settings add --set study.name={defn.name}-2 (or "
                          f"--study {defn.name}-2); to continue this one, drop the --set options that differ.")
    fp = record.data_fingerprint
    if data_fingerprint is not None and fp is not None and fp != data_fingerprint:
        raise SearchError(f"study {defn.name!r} was run on other data (fingerprint {fp[:12]}, yours "
                          f"{data_fingerprint[:12]}); point --data at the same source, or start a new study on "
                          f"this data with --set study.name={defn.name}-2")


def check_writable(run_dir: Path) -> None:
    """Create the run folder and prove a file can be written there, or raise one readable error."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # A probe of its own: workers started together share the folder, and one fixed probe name let
        # one worker delete the other's probe before its unlink ("No such file or directory").
        with tempfile.TemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SearchError(f"cannot write to the output folder {run_dir}: {exc.strerror or exc}") from exc


def open_session(defn: StudyDef, *, storage_url: str, run_dir: Path, data: DataContext | None = None,
                 worker: bool = False, device: str = "auto", cache_dir: Path | None = None) -> Session:
    """Check the run folder and storage, load the data once, open the storage once, create or join the study.

    ``data``: the data when the caller loaded them already (``run`` does, to name the study).
    """
    check_writable(run_dir)
    if worker and is_sqlite(storage_url):
        raise SearchError(
            "several processes on one SQLite file fail with 'database is locked'. For workers use a server "
            "database (--storage postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db) or, on one "
            "machine, Optuna's journal file storage (--storage journal:///path/to/journal.log)")
    data = data or open_data(defn, device=device, cache_dir=cache_dir)
    defn = name_study(defn, data)
    # Bit-for-bit repeatable training where torch offers it (slower on some GPU kernels).
    torch.use_deterministic_algorithms(defn.training.deterministic, warn_only=False)
    storage = open_storage(storage_url, defn.storage)
    study, _ = open_study(defn, storage, seed=sampler_seed(defn.study.seed, worker=worker), data=data)
    atomic.write_text(run_dir / "study.toml", defn.to_toml())
    return Session(defn=defn, study=study, storage=storage, storage_url=storage_url, run_dir=run_dir, data=data,
                   space=SearchSpace.from_dict(dict(defn.space)))
