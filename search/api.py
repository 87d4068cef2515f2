"""The Python API: run a study, finalize it, score a folder, load an exported model and predict.

The command line calls these same functions for the work (it adds the printing, the parallel processes and
the workers). Everything the CLI says about data, test-set reads and outputs holds here too::

    import search.api as api

    result = api.run("my_photos/", trials=50)                   # trials, then the final step
    print(result.metrics["ensemble"]["macro_f1"])                # the exported model on the test set
    print(api.summary(result))                                   # the lines `run` ends with
    model = api.load_model(result.run_dir / "best")
    for p in model.predict(["photo1.jpg", "more_photos/"]):
        print(p.path, p.label, p.probabilities)
    scores = api.score(result.run_dir, "another_labelled_folder/")

``settings`` takes the ``--set`` overrides as a mapping (``{"cv.folds": 5, "space.color": ["rgb"]}``).
Errors are :class:`search.study.errors.SearchError` with the message the CLI prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from search.final.finalize import finalize as _finalize
from search.final.predict import classify_files
from search.final.score import score_folder
from search.run.data import DataContext
from search.run.runner import RunOptions, run_trials
from search.run.session import name_study, open_data, open_session
from search.study import atomic
from search.study.definition import StudyDef, load_study_def
from search.study.records import StudyRecord
from search.study.storage import default_url
from search.view.report import write_report
from search.view.text import format_table, summary_lines

__all__ = ["RunResult", "Model", "Prediction", "run", "final_step", "score", "load_model", "summary", "definition"]


@dataclass(frozen=True)
class RunResult:
    """A study's run folder, and its final step's metrics (None when the final step did not run)."""

    study: str
    run_dir: Path
    metrics: dict[str, Any] | None
    report: Path | None


def definition(data: str | Path | None = None, *, study: str = "default",
               settings: Mapping[str, Any] | Sequence[str] = (), trials: int | None = None,
               seed: int | None = None, device: str | None = None) -> StudyDef:
    """The study definition ``study`` (a shipped name or a TOML path) with the settings applied (not yet named)."""
    overrides = ([f"{k}={json.dumps(v)}" for k, v in settings.items()] if isinstance(settings, Mapping)
                 else list(settings))
    if data is not None:
        overrides.append(f"data.source={json.dumps(str(Path(data).expanduser().resolve()))}")
    for key, value in (("study.trials", trials), ("study.seed", seed), ("training.device", device)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return load_study_def(study, overrides)


def run(data: str | Path | None = None, *, trials: int | None = None, study: str = "default",
        settings: Mapping[str, Any] | Sequence[str] = (), out: str | Path = "runs", storage: str | None = None,
        seed: int | None = None, device: str | None = None, final: bool = True,
        progress: bool = False) -> RunResult:
    """Run (or resume) a study until it has ``trials`` finished trials, then the final step and the report.

    ``data``: ``anklealign.zip``, its folder, a ``train/<class>`` + ``test/<class>`` folder, or None for the
    built-in synthetic twin. The run folder is ``<out>/<study name>/`` as with ``python -m search run``.
    """
    defn = definition(data, study=study, settings=settings, trials=trials, seed=seed, device=device)
    ctx = open_data(defn, device=defn.training.device)
    defn = name_study(defn, ctx)
    run_dir = Path(out).expanduser() / defn.name
    url = storage or default_url(run_dir)
    session = open_session(defn, storage_url=url, run_dir=run_dir, data=ctx)
    run_trials(session, RunOptions(trials=defn.study.trials, storage_url=url, run_dir=run_dir,
                                   device=defn.training.device, show_progress=progress))
    metrics = (final_step(session.defn, session.study, run_dir, data=session.data, command="api")
               if final else None)
    return RunResult(study=defn.name, run_dir=run_dir, metrics=metrics,
                     report=write_report(session.study, run_dir, defn=session.defn))


def final_step(defn: StudyDef, study: optuna.Study, run_dir: Path, *, data: DataContext | None = None,
               device: str | None = None, data_source: str | None = None, command: str = "run") -> dict[str, Any]:
    """The final step on a study: retrain, score once on the test set, export into ``<run_dir>/best/``, and record
    the exported trial in the study (the dashboard and ``best`` show it) and the full table in ``best/summary.txt``.
    """
    metrics = _finalize(defn, study, run_dir=run_dir, device=device or defn.training.device, command=command,
                        data=data, data_source=data_source)
    atomic.write_text(Path(run_dir) / "best" / "summary.txt", format_table(metrics) + "\n")
    StudyRecord(exported={"trial": metrics["trial"], "why": metrics.get("exported")}).write(study)
    return metrics


def summary(result: RunResult) -> str:
    """The lines ``run`` ends with: the exported trial and why, its test score against the references, the paths."""
    if result.metrics is None:
        return f"study {result.study}: no final step ({result.run_dir})"
    return "\n".join(summary_lines(result.metrics, run_dir=result.run_dir))


def score(run_dir: str | Path, folder: str | Path, *, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """A finished run's exported model, references and guessers on another labelled folder (``FOLDER/<class>/``)."""
    return score_folder(Path(run_dir).expanduser(), Path(folder).expanduser(), n_boot=bootstrap, seed=seed)


@dataclass(frozen=True)
class Prediction:
    """One image's answer: its most probable class and every class's probability (None: the image failed)."""

    path: Path
    label: str | None
    probabilities: dict[str, float] | None
    problem: str | None = None


@dataclass(frozen=True)
class Model:
    """An exported model folder (``runs/<study>/best`` or an ``export --to`` folder)."""

    folder: Path

    def predict(self, inputs: Sequence[str | Path], *, onnx: bool = False) -> list[Prediction]:
        """Classify image files and folders, decoded as the model card says (``onnx``: with onnxruntime)."""
        classes, found = classify_files(self.folder, [str(p) for p in inputs], onnx=onnx)
        out = []
        for p in found:
            if p.probabilities is None:
                out.append(Prediction(Path(p.path), None, None, p.problem))
            else:
                probs = {c: float(v) for c, v in zip(classes, p.probabilities, strict=True)}
                out.append(Prediction(Path(p.path), classes[int(np.argmax(p.probabilities))], probs))
        return out


def load_model(folder: str | Path) -> Model:
    """An exported model, checked before any image is read (a missing or tampered model is a SearchError)."""
    from search.final.predict import read_card

    path = Path(folder).expanduser()
    read_card(path)
    return Model(path)
