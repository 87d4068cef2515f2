"""``python -m search report``: one self-contained report.html (plotly) and trials.csv for a study.

The HTML embeds plotly.js once, inline (machines may be offline), then one section per question:
which data, how the search went, which trials were pruned, which parameters mattered, how the
seed nets compare with the best trial, and the test-set scores of the final step when they exist.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import plotly.graph_objects as go
import plotly.io as pio
from optuna.trial import FrozenTrial, TrialState

from anklealign.report import twin_sentence
from search.study import atomic
from search.study.notes import SYNTHETIC_BANNER
from search.study.records import StudyRecord, TrialRecord
from search.view.figures import (
    annotators_figure,
    data_table,
    gain_figure,
    history_figure,
    importance_figure,
    learning_curves_figure,
    metrics_figure,
    metrics_rows,
    parallel_figure,
    presets_figure,
)
from search.view.text import rank_sentence, summary_lines, trust_lines

if TYPE_CHECKING:
    from search.study.definition import StudyDef

__all__ = ["write_report", "write_trials_csv", "trial_rows", "CSV_COLUMNS"]

_log = logging.getLogger(__name__)

CSV_COLUMNS = ("number", "state", "value", "exported", "preset", "params_count", "macs", "cv_best", "best_epoch",
               "cv_last", "cv_last_mean", "epochs_run", "seconds", "prune_reason", "fail_reason", "seed", "device",
               "datetime_start", "datetime_complete")

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.banner{background:#b00020;color:#fff;font-size:2em;font-weight:bold;padding:.6em 1em;border-radius:6px;
text-align:center;letter-spacing:.03em} .real{background:#1b5e20;color:#fff;padding:.5em 1em;border-radius:6px}
.muted{color:#666} table.m{border-collapse:collapse} table.m td,table.m th{border:1px solid #ccc;padding:4px 8px}
nav a{margin-right:1em} .warn{background:#fdecea;color:#8a0016;font-weight:bold;padding:.5em 1em;border-radius:6px}
"""


def _metric(study: optuna.Study, defn: StudyDef | None) -> str:
    if defn is not None:
        return defn.study.metric
    return StudyRecord.of(study).setting("study", "metric") or "value"


def _definition_key(study: optuna.Study, section: str, key: str) -> Any:
    return StudyRecord.of(study).setting(section, key)


def _folds(study: optuna.Study, defn: StudyDef | None) -> int | None:
    return defn.cv.folds if defn is not None else _definition_key(study, "cv", "folds")


def _fig_html(fig: go.Figure) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _note(text: str) -> str:
    return f'<p class="muted">{html.escape(text)}</p>'


def trial_rows(trials: list[FrozenTrial], exported: int | None = None) -> list[dict[str, Any]]:
    """One flat dict per trial: :data:`CSV_COLUMNS`, then ``params_<name>`` for every parameter seen;
    ``exported`` is true for the trial the final step exported."""
    names = sorted({p for t in trials for p in t.params})
    rows = []
    for t in trials:
        record = TrialRecord.of(t).as_dict()
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.name, "value": t.value, "exported": t.number == exported,
            "datetime_start": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "datetime_complete": (t.datetime_complete.isoformat(timespec="seconds")
                                  if t.datetime_complete else None),
        }
        for key in CSV_COLUMNS:
            row.setdefault(key, record.get(key))
        row.update({f"params_{n}": t.params.get(n) for n in names})
        rows.append(row)
    return rows


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    """trials.csv: a row per trial with its outcome, size, timing, reason and every parameter."""
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials, (StudyRecord.of(study).exported or {}).get("trial"))
    fields = list(CSV_COLUMNS) + [f"params_{n}" for n in sorted({p for t in trials for p in t.params})]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return atomic.write_text(path, buf.getvalue())


def _load_metrics(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = run_dir / "best" / "metrics.json"
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{path} could not be read: {exc}"
    if not isinstance(data, dict):
        return None, f"{path} is not a JSON object"
    return data, None


_SORT_JS = """
function sortBy(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),b=t.tBodies[0];
const up=th.dataset.dir!=='asc';th.dataset.dir=up?'asc':'desc';
const v=r=>r.children[i].dataset.v??r.children[i].textContent;
[...b.rows].sort((x,y)=>{const a=v(x),c=v(y),n=parseFloat(a)-parseFloat(c);
return (isNaN(n)?a.localeCompare(c):n)*(up?1:-1);}).forEach(r=>b.appendChild(r));}
"""
_TABLE_COLUMNS = ("number", "state", "value", "preset", "params_count", "epochs_run", "seconds", "prune_reason")


def _summary_section(metrics: dict[str, Any] | None, run_dir: Path) -> str:
    """The result first: what was exported and why, its test score against the references, the confusion
    matrix and the final model's training loss."""
    if metrics is None:
        return _note("No final model yet: the trials are below; the final step writes best/metrics.json.")
    try:
        lines = summary_lines(metrics)
    except (KeyError, TypeError) as exc:  # an older or hand-edited metrics.json
        return _note(f"best/metrics.json lacks a field of the summary ({exc}); the test section has what it holds.")
    parts = [f'<p class="warn">{html.escape(x)}</p>' if x.startswith("WARNING") else
             f"<p><b>{html.escape(x.split(': ', 1)[0])}</b>: {html.escape(x.split(': ', 1)[1])}</p>"
             if ": " in x else f"<p>{html.escape(x)}</p>" for x in lines]
    png = run_dir / "best" / "confusion.png"
    if png.is_file():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<img alt="confusion matrix" style="max-width:480px" src="data:image/png;base64,{data}">')
    losses = metrics.get("train_loss") or []
    if losses:
        fig = go.Figure([go.Scatter(x=list(range(1, len(seed) + 1)), y=list(seed), mode="lines+markers",
                                    name=f"seed {i + 1}") for i, seed in enumerate(losses)])
        fig.update_layout(xaxis_title="epoch", yaxis_title="mean training loss", height=320, margin={"t": 30},
                          title=f"the exported trial's retraining on all {metrics['data'].get('train_images')} "
                                "training images")
        parts.append(_fig_html(fig))
    return "".join(parts)


def _trials_table(study: optuna.Study) -> str:
    """Every trial in one table; a click on a heading sorts by it; the exported trial is marked."""
    exported = (StudyRecord.of(study).exported or {}).get("trial")
    rows = trial_rows(study.get_trials(deepcopy=False), exported)
    head = "".join(f'<th onclick="sortBy(this)" style="cursor:pointer">{c}</th>' for c in _TABLE_COLUMNS)
    body = ""
    for r in rows:
        cells = "".join(f'<td data-v="{"" if r.get(c) is None else r.get(c)}">'
                        f'{html.escape(_cell_text(r.get(c)))}</td>' for c in _TABLE_COLUMNS)
        mark = ' style="background:#fff3c4;font-weight:bold" title="exported"' if r["exported"] else ""
        body += f"<tr{mark}>{cells}</tr>"
    return (f"<script>{_SORT_JS}</script><table class=\"m\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            "</table>" + _note("Click a heading to sort. Highlighted: the exported trial. Every column and parameter "
                               "is in trials.csv."))


def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _data_section(study: optuna.Study, metric: str, defn: StudyDef | None) -> str:
    data = StudyRecord.of(study).data
    if not data:
        head = '<p class="banner">Unknown data: the study records no data description</p>'
    elif data.get("synthetic"):
        head = (f'<p class="banner">{SYNTHETIC_BANNER}</p>'
                f"<p>{html.escape(str(data.get('note', '')))} — results here say nothing about the real "
                f"AnkleAlign photographs. {html.escape(twin_sentence(data))}</p>")
    else:
        head = (f'<p class="real">Data: {html.escape(str(data.get("note", "real data")))}: '
                f'{html.escape(str(data.get("source", "?")))}</p>')
    objective = defn.study.objective if defn is not None else _definition_key(study, "study", "objective")
    return head + _fig_html(data_table(study, metric=metric, folds=_folds(study, defn),
                                       objective=objective or "best_epoch"))


def _test_section(metrics: dict[str, Any] | None, problem: str | None, study_name: str,
                  run_dir: Path | None = None) -> str:
    if metrics is None:
        return _note(problem or f"No test-set metrics yet: best/metrics.json does not exist (run 'python -m search "
                                f"finalize --study {study_name}').")
    parts = []
    data = metrics.get("data")
    if isinstance(data, Mapping) and data.get("synthetic"):
        parts.append(f'<p class="banner">{SYNTHETIC_BANNER}</p>')
    reads = (metrics.get("test_reads") or {}).get("count") if isinstance(metrics.get("test_reads"), Mapping) else None
    if isinstance(reads, int) and reads > 1:
        parts.append(f'<p class="banner">The test labels were read {reads} times (test_reads.jsonl): only the '
                     "first read is untouched by choices made after seeing a test score</p>")
    cv = metrics.get("cv")
    if isinstance(cv, Mapping) and cv.get("best_epoch_value") is not None:
        chosen = {"best_epoch": "best-epoch", "last_epoch": "last-epoch"}.get(cv.get("objective"), "last-5-epochs mean")
        bbc = (metrics.get("selection") or {}).get("choice_estimate") or cv.get("bias_corrected") or {}
        corrected = (f" Estimated score of the search's choice (its selection procedure re-run on resamples of the "
                     f"training images, {bbc['configs']} trials): {bbc['estimate']:.4f} [{bbc['ci95'][0]:.4f}, "
                     f"{bbc['ci95'][1]:.4f}], against the best trial's own out-of-fold {bbc['raw']:.4f}."
                     if bbc.get("estimate") is not None and bbc.get("ci95") else "")
        parts.append(_note(f"Cross-validated {cv.get('metric')} of the trial: {cv.get('value'):.4f}, the {chosen} "
                           f"value the study optimised (best epoch {cv.get('best_epoch')}: "
                           f"{cv['best_epoch_value']:.4f}; last epoch {cv.get('epochs_run')}: "
                           f"{cv.get('last_epoch_value') or float('nan'):.4f}).{corrected} "
                           f"Retrained for {metrics.get('epochs_reason', '?')}. Exported: "
                           f"{metrics.get('exported', 'the ensemble of its seeds')}."))
    vs = (metrics.get("selection") or {}).get("versus_default")
    if isinstance(vs, Mapping) and vs.get("rule"):
        parts.append(_note(f"How the export was chosen: {vs['rule']}. Here: {vs.get('why', '')} "
                           f"({vs.get('candidates')} trials compared; the error rate and power of this rule, measured "
                           "by simulation, are in docs/SELECTION.md)."))
    if metrics.get("classes_absent"):
        parts.append(_note(f"Absent from the test set: {', '.join(metrics['classes_absent'])} (F1 0 in macro-F1, no "
                           "recall; balanced accuracy averages the classes present)."))
    rows, names = metrics_rows(metrics)
    if not rows:
        return "".join(parts) + _note("best/metrics.json holds no test metrics in the expected form "
                                      "(test.<metric>.mean).")
    parts.append(_fig_html(metrics_figure(rows, names)))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = ""
    for system, pts in rows:
        cells = ""
        for n in names:
            p = pts.get(n)
            cells += "<td>" + ("" if p is None else f"{p[0]:.3f}" + (f" [{p[1]:.3f}, {p[2]:.3f}]"
                                                                    if p[1] is not None else "")) + "</td>"
        body += f"<tr><th>{html.escape(system)}</th>{cells}</tr>"
    parts.append(f'<table class="m"><tr><th></th>{head}</tr>{body}</table>')
    facts = {k: v for k, v in metrics.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}
    test_set = metrics.get("test_set")
    if isinstance(test_set, Mapping):
        facts.update({f"test {k}": v for k, v in test_set.items() if k in ("images", "ties", "class_counts")})
    if facts:
        parts.append(_note("; ".join(f"{k}: {v}" for k, v in facts.items())))
    parts.append(_note("Bars: 95 % bootstrap intervals over the test images, as written by the final step "
                       "(human annotators: min–max over annotators). The test set is read only there."))
    gain = metrics.get("search_gain")
    if isinstance(gain, Mapping):
        parts.append("<h3>Search gain</h3>")
        parts += [f'<p class="warn">WARNING: {html.escape(w)}</p>' for w in gain.get("warnings") or []]
        parts += [_note(f"Note: {n}") for n in gain.get("notes") or []]
        fig = gain_figure(gain)
        if fig is not None:
            parts.append(_fig_html(fig))
        parts.append(_note("The exported model minus each baseline retrained the same way (the default configuration "
                           "without search and the retrained seed nets) and minus random guessing with the training "
                           f"frequencies, in {gain.get('metric')}; {gain.get('interval', '')}. Green: the whole "
                           "interval is above 0."))
    parts.append(_trust_section(metrics, run_dir))
    return "".join(parts)


def _trust_section(metrics: Mapping[str, Any], run_dir: Path | None) -> str:
    """Calibration (reliability diagram), label shift, per-class intervals, votes and the annotators' plot."""
    parts = []
    lines = trust_lines(dict(metrics))
    if lines:
        parts.append("<h3>Probabilities, class prior, classes and votes</h3>")
        parts += [f'<p class="warn">{html.escape(x)}</p>' if x.startswith("WARNING") else _note(x) for x in lines]
    png = run_dir / "best" / "reliability.png" if run_dir is not None else None
    if png is not None and png.is_file():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<img alt="reliability diagram" style="max-width:640px" src="data:image/png;base64,{data}">')
        parts.append(_note("Reliability diagram of the test set: in equal-mass bins of the model's confidence, how "
                           "often it was right, before and after the temperature fitted on out-of-fold predictions."))
    humans = metrics.get("annotators")
    fig = annotators_figure(humans) if isinstance(humans, Mapping) else None
    if fig is not None:
        parts.append(_fig_html(fig))
        parts.append(_note("Each dot is one annotator: their accuracy against the majority of the other annotators "
                           "(x) and the exported model's on exactly their images and reference (y). Red: the "
                           "annotator beats the model. Ranks: " + rank_sentence(dict(humans)) + "."))
    return "".join(parts)


def _sections(study: optuna.Study, run_dir: Path, metric: str, defn: StudyDef | None) -> list[tuple[str, str, str]]:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    metrics, problem = _load_metrics(run_dir)
    sections = [("summary", "Result", _summary_section(metrics, run_dir)),
                ("data", "Data and study", _data_section(study, metric, defn)),
                ("trials", "Trials", _trials_table(study))]

    sections.append(("history", "Optimisation history",
                     _fig_html(history_figure(study, metric)) if complete else _note("No complete trial yet.")))
    curves = learning_curves_figure(trials, metric)
    sections.append(("curves", "Learning curves and pruning (intermediate values)",
                     _fig_html(curves) if curves is not None else _note("No trial reported an epoch yet.")))
    importances, why = importance_figure(study, complete)
    sections.append(("importances", "Parameter importances",
                     _fig_html(importances[0]) if importances else _note(why)))
    top = importances[1] if importances else None
    parallel = parallel_figure(study, complete, params=top)
    sections.append(("parallel", "Parallel coordinates",
                     _fig_html(parallel) if parallel is not None else _note("No complete trial with parameters.")))
    presets = presets_figure(trials, metric)
    nets = "Seed nets" if (StudyRecord.of(study).data or {}).get("kind", "anklealign") == "anklealign" else \
        "Reference nets (the AnkleAlign student's hand-made nets)"
    sections.append(("presets", f"{nets} versus the best trial",
                     _fig_html(presets) + _note("Blue: complete seed nets (cross-validated value); red: pruned "
                                                "or failed ones (their last validation value); green: the "
                                                "best trial.") if presets is not None
                     else _note("No seed-net trial (user attribute 'preset') in this study.")))
    sections.append(("test", "Test set metrics of the final model",
                     _test_section(metrics, problem, study.study_name, run_dir)))
    return sections


def _counts(study: optuna.Study) -> str:
    """Trials by state, in words: waiting trials are queued, not run."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = {s.name.lower(): states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            if states.count(s)}
    text = f"{sum(done.values())} trials run (" + ", ".join(f"{n} {k}" for k, n in done.items()) + ")"
    waiting = states.count(TrialState.WAITING) + states.count(TrialState.RUNNING)
    return text + (f"; {waiting} queued or running" if waiting else "")


def write_report(study: optuna.Study, run_dir: Path, *, defn: StudyDef | None = None) -> Path:
    """Write ``<run_dir>/report.html`` (and ``<run_dir>/trials.csv``); return the report's path.

    Args:
        study: a study run by this tool (trials carry the objective's user attributes).
        run_dir: the run folder; ``best/metrics.json`` there is shown when it exists.
        defn: the study's :class:`~search.study.definition.StudyDef` (metric name, folds); optional.
    """
    from plotly.offline import get_plotlyjs

    run_dir = Path(run_dir)
    metric = _metric(study, defn)
    sections = _sections(study, run_dir, metric, defn)
    data = StudyRecord.of(study).data or {}
    title = f"Study {study.study_name}" + (" — SYNTHETIC TWIN" if data.get("synthetic") else "")
    nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(t)}</h2>{content}</section>'
                   for sid, t, content in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style>\n<script>{get_plotlyjs()}</script>\n</head><body>"
            f"<h1>{html.escape(title)}</h1><p class='muted'>objective: cross-validated {html.escape(metric)} "
            f"(maximised); {_counts(study)}</p><nav>{nav}</nav>{body}"
            f"</body></html>\n")
    path = atomic.write_text(run_dir / "report.html", page)
    write_trials_csv(study, run_dir / "trials.csv")
    _log.debug("wrote %s and %s", path, run_dir / "trials.csv")
    return path
