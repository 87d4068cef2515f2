"""Short Markdown notes about trials and data, shown by optuna-dashboard and the report, and the
final step's files attached to the study as artifacts.

The texts are pure functions of a :class:`optuna.trial.FrozenTrial` (its params and user
attributes, as the objective records them); :func:`write_trial_note` and :func:`attach_final`
write them into the study's storage, where optuna-dashboard reads them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from anklealign.report import twin_sentence
from search.study import optuna_api
from search.study.records import StudyRecord, TrialRecord

__all__ = ["trial_note", "data_line", "si", "config_facts", "write_trial_note", "attach_final", "artifact_store",
           "ARTIFACTS_DIR", "SYNTHETIC_BANNER"]

_log = logging.getLogger(__name__)

ARTIFACTS_DIR = "artifacts"

SYNTHETIC_BANNER = "SYNTHETIC TWIN — not real data"


def si(n: float | None) -> str:
    """``1234567`` -> ``"1.23 M"``; ``None`` -> ``"?"``."""
    if not isinstance(n, int | float):
        return "?"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:g}"


def data_line(data: Mapping[str, Any] | None) -> str:
    """One Markdown line saying which data a study ran on (loud for the synthetic twin)."""
    if not data:
        return "**Data:** unknown (the study records no data description)"
    source = data.get("source", "?")
    if data.get("synthetic"):
        ceiling = twin_sentence(data)
        return f"**⚠ {SYNTHETIC_BANNER}.** Data: {data.get('note', 'synthetic twin')} ({source})" + \
            (f" {ceiling}" if ceiling else "")
    return f"**Data:** {data.get('note', 'real data')}: `{source}` ({data.get('kind', '?')})"


def _same_or_list(values: Sequence[Any]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "/".join(str(v) for v in values)


def config_facts(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows describing a ``TrialCfg.to_dict()``; missing parts are skipped."""
    rows: list[tuple[str, str]] = []
    model = config.get("model") or {}
    blocks = model.get("blocks") or []
    if blocks:
        chans = "→".join(str(b.get("channels", "?")) for b in blocks)
        down = _same_or_list([b.get("downsample", "?") for b in blocks])
        kern = _same_or_list([b.get("kernel_size", "?") for b in blocks])
        bn = _same_or_list(["on" if b.get("batchnorm") else "off" for b in blocks])
        act = _same_or_list([b.get("activation", "?") for b in blocks])
        rows.append(("trunk", f"{len(blocks)} blocks, channels {chans}, kernel {kern}, downsample {down}, "
                              f"batchnorm {bn}, {act}"))
    if model:
        hidden = list(model.get("head_hidden") or [])
        rows.append(("head", f"hidden {hidden or 'none (linear)'}, dropout {model.get('head_dropout', 0):g}"))
    aug = config.get("augment") or {}
    if aug:
        parts = [fmt.format(aug[k]) for k, fmt in
                 (("hflip_p", "hflip p {:g}"), ("rotate_deg", "rotate ±{:g}°"), ("crop_scale_min", "crop scale ≥ {:g}"),
                  ("brightness", "brightness ±{:g}"), ("contrast", "contrast ±{:g}"))
                 if isinstance(aug.get(k), int | float) and aug[k] != (1.0 if k == "crop_scale_min" else 0.0)]
        rows.append(("augmentation", ", ".join(parts) or "none"))
    inp = config.get("input") or {}
    if inp:
        rows.append(("input", f"{inp.get('image_size', '?')} px, {inp.get('color', '?')}, "
                              f"{inp.get('resize', '?')}"))
    tr = config.get("train") or {}
    if tr:
        lr = tr.get("lr")
        lr_s = f"{lr:.2g}" if isinstance(lr, float) else str(lr)
        g = tr.get
        rows.append(("training", f"{g('optimizer', '?')} lr {lr_s}, weight decay {g('weight_decay', 0):g}, "
                                 f"batch {g('batch_size', '?')}, schedule {g('schedule', '?')}, "
                                 f"label smoothing {g('label_smoothing', 0):g}, "
                                 f"class weighting {g('class_weighting', '?')}, "
                                 f"max {g('max_epochs', '?')} epochs"))
    return rows


def _last_intermediate(t: FrozenTrial) -> tuple[int, float] | None:
    if not t.intermediate_values:
        return None
    step = max(t.intermediate_values)
    return step, t.intermediate_values[step]


def trial_note(trial: FrozenTrial, *, metric: str | None = None, objective: str | None = None) -> str:
    """A short Markdown note: preset, outcome, the config's key facts, size and time, prune/fail reason.

    Args:
        trial: a trial as the objective records it (:class:`search.study.records.TrialRecord`).
        metric: name of the objective (e.g. ``"macro_f1"``); ``None`` says "value".
        objective: which cross-validated value the study optimises (``best_epoch`` or ``last_epoch``).
    """
    r = TrialRecord.of(trial)
    metric = metric or "value"
    title = f"### Trial {trial.number}" + (f" — seed net `{r.preset}`" if r.preset else "")
    lines = [title, ""]
    state = trial.state.name.lower()
    max_epochs = (r.config or {}).get("train", {}).get("max_epochs")
    run = f"{r.epochs_run} of {max_epochs} epochs run" if r.epochs_run is not None else "epochs run: ?"
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        chosen = {"best_epoch": "best-epoch", "last_epoch": "last-epoch"}.get(objective or "", "")
        lines.append(f"**{state}** · cross-validated {metric} **{trial.value:.4f}**"
                     + (f" (the {chosen} value, which the study optimises)" if chosen else "") + f" · {run}")
        lines.append("")
        lines.append(f"best epoch {r.best_epoch if r.best_epoch is not None else '?'}: {_fmt(r.cv_best)} · "
                     f"last epoch {r.epochs_run if r.epochs_run is not None else '?'}: {_fmt(r.cv_last)}")
    else:
        last = _last_intermediate(trial)
        seen = f" · last validation {metric} {last[1]:.4f} at epoch {last[0] + 1}" if last else ""
        lines.append(f"**{state}**{seen} · {run}")
    if r.reason and trial.state != TrialState.COMPLETE:
        lines += ["", f"> {'Pruned' if trial.state == TrialState.PRUNED else 'Reason'}: {r.reason}"]
    lines += ["", "| | |", "|---|---|"]
    lines += [f"| {label} | {text} |" for label, text in config_facts(r.config or {})]
    lines.append(f"| size | {si(r.params_count)} params, {si(r.macs)} MACs |")
    if r.seconds is not None:
        per = f" ({sum(r.epoch_seconds) / len(r.epoch_seconds):.2f} s/epoch)" if r.epoch_seconds else ""
        lines.append(f"| time | {r.seconds:.1f} s{per} on {r.device or '?'} |")
    if r.seed is not None:
        lines.append(f"| seed | {r.seed} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def artifact_store(run_dir: Path) -> FileSystemArtifactStore:
    """The run's artifact store, ``<run_dir>/artifacts`` (created)."""
    path = Path(run_dir) / ARTIFACTS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def write_trial_note(study: optuna.Study, trial: FrozenTrial, *, metric: str | None = None) -> None:
    """Save :func:`trial_note` as the trial's dashboard note. Never raises (logs a warning).

    Args:
        study: the study the trial belongs to.
        trial: the finished trial (e.g. the one a ``study.optimize`` callback receives).
        metric: the objective's name; read from the study's recorded definition when ``None``.
    """
    try:
        from optuna_dashboard import save_note

        record = StudyRecord.of(study)
        body = trial_note(trial, metric=metric or record.setting("study", "metric"),
                          objective=record.setting("study", "objective"))
        save_note(optuna_api.FinishedTrialRef(study, trial), body)  # type: ignore[arg-type]
    except Exception as exc:  # a note is a convenience: it must never stop a search
        _log.warning("could not write the dashboard note of trial %s: %s: %s",
                     getattr(trial, "number", "?"), exc.__class__.__name__, exc)


def attach_final(study: optuna.Study, trial_number: int, run_dir: Path, files: Sequence[Path],
                 note_markdown: str) -> None:
    """Upload the final step's files and write the study's note.

    Each file goes to ``<run_dir>/artifacts`` as a study artifact (``optuna.artifacts``) and is linked
    from trial ``trial_number`` on the dashboard. The study note is ``note_markdown`` under a line
    saying which data the study ran on, followed by links to the files.

    Raises:
        ValueError: the study has no trial ``trial_number``.
        FileNotFoundError: a file does not exist.
    """
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == trial_number), None)
    if trial is None:
        raise ValueError(f"study {study.study_name!r} has no trial {trial_number}")
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"cannot attach {p}: no such file")
    store = artifact_store(run_dir)
    study_id = optuna_api.study_id(study)
    links = []
    for p in paths:
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(p),
                                                       study_or_trial=study)
        meta = next(m for m in optuna.artifacts.get_all_artifact_meta(study) if m.artifact_id == artifact_id)
        optuna_api.link_study_artifact(study, trial, artifact_id, json.dumps(asdict(meta)))
        links.append(f"[{p.name}](/artifacts/{study_id}/{artifact_id})")
        _log.debug("attached %s as artifact %s of trial %d", p, artifact_id, trial_number)
    record = StudyRecord.of(study)
    metric = record.setting("study", "metric")
    if metric and not study.metric_names:
        optuna_api.set_metric_names(study, [metric])
    from optuna_dashboard import save_note

    body = f"{data_line(record.data)}\n\n{note_markdown.rstrip()}\n"
    if links:
        body += f"\n**Files of the final model (trial {trial_number}):** " + " · ".join(links) + "\n"
    save_note(study, body)
