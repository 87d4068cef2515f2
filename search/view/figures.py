"""The plotly figures of report.html, one function per section (see :mod:`search.view.report`).

Optuna's own plots where they say what we need (history, importances, parallel coordinates);
hand-made ones where they do not (learning curves coloured by pruning, seed nets, test metrics).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from search.study.records import StudyRecord, TrialRecord

__all__ = ["data_table", "history_figure", "learning_curves_figure", "importance_figure", "parallel_figure",
           "presets_figure", "metrics_rows", "metrics_figure", "gain_figure", "annotators_figure",
           "MIN_TRIALS_FOR_IMPORTANCE"]

_log = logging.getLogger(__name__)

# fANOVA on fewer complete trials than this ranks noise.
MIN_TRIALS_FOR_IMPORTANCE = 5
_TOP_PARAMS = 8
_COLOURS = {TrialState.COMPLETE: "rgba(31,119,180,0.45)", TrialState.PRUNED: "rgba(214,39,40,0.55)",
            TrialState.FAIL: "rgba(120,120,120,0.6)", TrialState.RUNNING: "rgba(44,160,44,0.6)"}

Point = tuple[float, float | None, float | None]  # mean, ci95 low, ci95 high
# Parts of metrics.json that repeat or break down a system's scores: not systems of their own.
_NOT_SYSTEMS = frozenset({"model_rank", "per_class", "agreement", "confusion"})


# What a trial's value is, by [study] objective, in words (the report's summary; a test reads both).
OBJECTIVE_WORDS = {"best_epoch": "at each trial's best epoch", "last_epoch": "at each trial's last epoch",
                   "last_mean": "averaged over each trial's last 5 epochs"}


def _exported_line(exported: dict[str, Any] | None) -> str:
    if not exported:
        return "none yet (the final step has not run)"
    return f"#{exported['trial']}: {exported.get('why') or ''}"[:400]


def data_table(study: optuna.Study, *, metric: str, folds: int | None, objective: str = "best_epoch") -> go.Figure:
    """A table: which data, how many trials in which state, the best trial (both of its CV values)."""
    data = StudyRecord.of(study).data or {}
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    best = _best(study)
    rows = [
        ("data", data.get("note", "unknown")), ("source", data.get("source", "?")),
        ("kind", data.get("kind", "?")), ("fingerprint", str(data.get("fingerprint", "?"))[:16]),
        ("classes", ", ".join(map(str, data.get("classes", [])))),
        ("training pool / test images", f"{data.get('train_images', '?')} / {data.get('test_images', '?')}"),
        ("objective", f"{metric}, mean over {folds if folds else '?'} cross-validation folds, "
                      f"{OBJECTIVE_WORDS.get(objective, objective)} (the value optimised)"),
        ("trials", ", ".join(f"{n} {s}" for s, n in states.items()) or "none"),
        ("best trial", _best_line(best)),
        ("exported trial", _exported_line(StudyRecord.of(study).exported)),
    ]
    fig = go.Figure(go.Table(header={"values": ["", ""], "height": 4},
                             cells={"values": [[r[0] for r in rows], [str(r[1]) for r in rows]],
                                    "align": "left", "height": 26},
                             columnwidth=[1, 4]))
    fig.update_layout(height=26 * len(rows) + 40, margin={"l": 0, "r": 0, "t": 10, "b": 0})
    return fig


def _best_line(best: FrozenTrial | None) -> str:
    if best is None:
        return "none yet"
    r = TrialRecord.of(best)
    fmt = lambda v: "?" if v is None else f"{v:.4f}"  # noqa: E731
    return (f"#{best.number}: {best.value:.4f}" + (f" ({r.preset})" if r.preset else "")
            + f"; best epoch {r.best_epoch}: {fmt(r.cv_best)}, last epoch {r.epochs_run}: {fmt(r.cv_last)}")


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def history_figure(study: optuna.Study, metric: str) -> go.Figure:
    """Optuna's optimisation history: every complete trial's value and the best so far."""
    fig = optuna.visualization.plot_optimization_history(study, target_name=f"CV {metric}")
    fig.update_layout(title=None, height=420, margin={"t": 30})
    return fig


def learning_curves_figure(trials: list[FrozenTrial], metric: str) -> go.Figure | None:
    """Validation score per epoch for every trial; pruned trials red, ending in an x at the prune."""
    fig = go.Figure()
    shown: set[TrialState] = set()
    completes = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(completes, key=lambda t: t.value).number if completes else None
    for t in trials:
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        xs = [s + 1 for s in steps]  # steps are 0-based epochs
        ys = [t.intermediate_values[s] for s in steps]
        preset = TrialRecord.of(t).preset
        tag = f" [{preset}]" if preset else ""
        is_best = t.number == best
        colour = "rgb(0,100,0)" if is_best else _COLOURS.get(t.state, "rgba(120,120,120,0.6)")
        name = "best trial" if is_best else t.state.name.lower()
        symbols = ["circle"] * len(xs)
        if t.state == TrialState.PRUNED:
            symbols[-1] = "x"
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name,
            showlegend=is_best or t.state not in shown,
            line={"color": colour, "width": 3 if is_best else 1.5},
            marker={"symbol": symbols, "size": [5] * (len(xs) - 1) + [9]},
            hovertemplate=f"trial {t.number}{tag} ({t.state.name.lower()})<br>epoch %{{x}}: %{{y:.4f}}"
                          "<extra></extra>"))
        if not is_best:
            shown.add(t.state)
    if not fig.data:
        return None
    fig.update_layout(xaxis_title="epoch", yaxis_title=f"validation {metric} (mean over folds)", height=460,
                      margin={"t": 20})
    return fig


def importance_figure(study: optuna.Study, complete: list[FrozenTrial]
                      ) -> tuple[tuple[go.Figure, list[str]] | None, str]:
    """fANOVA importances (seeded) and the top parameters, or ``None`` and the reason in words."""
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (f"Too few complete trials ({len(complete)}) to estimate parameter importances "
                      f"(needs at least {MIN_TRIALS_FOR_IMPORTANCE}).")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
            if not imp:
                return None, "No parameter is shared by all complete trials; importances cannot be estimated."
            fig = optuna.visualization.plot_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as exc:
        return None, f"Parameter importances could not be estimated: {exc}"
    fig.update_layout(title=None, height=max(300, 22 * len(imp) + 80), margin={"t": 30})
    return (fig, list(imp)[:_TOP_PARAMS]), ""


def parallel_figure(study: optuna.Study, complete: list[FrozenTrial], *, params: list[str] | None
                    ) -> go.Figure | None:
    """Parallel coordinates of the complete trials over the most important (or shared) parameters."""
    if not complete:
        return None
    if not params:
        shared = set.intersection(*(set(t.params) for t in complete))
        params = sorted(shared)[:_TOP_PARAMS]
    if not params:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = optuna.visualization.plot_parallel_coordinate(study, params=params)
    fig.update_layout(title=None, height=480, margin={"t": 60})
    return fig


def presets_figure(trials: list[FrozenTrial], metric: str) -> go.Figure | None:
    """CV value of each enqueued seed net next to the best trial (pruned ones: last value, hatched)."""
    presets = [t for t in trials if TrialRecord.of(t).preset]
    if not presets:
        return None
    completes = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(completes, key=lambda t: t.value) if completes else None
    bars: list[tuple[str, float, str, str]] = []  # label, value, colour, hover
    for t in presets:
        name = TrialRecord.of(t).preset
        if t.state == TrialState.COMPLETE and t.value is not None:
            bars.append((f"{name} (#{t.number})", t.value, "rgb(31,119,180)", "complete"))
        elif t.intermediate_values:
            step = max(t.intermediate_values)
            bars.append((f"{name} (#{t.number})", t.intermediate_values[step], "rgb(214,39,40)",
                         f"{t.state.name.lower()} at epoch {step + 1} (last value)"))
    if best is not None:
        tag = f", {TrialRecord.of(best).preset}" if TrialRecord.of(best).preset else ""
        bars.append((f"best (#{best.number}{tag})", best.value, "rgb(0,100,0)", "best trial"))
    if not bars:
        return None
    fig = go.Figure(go.Bar(
        x=[b[0] for b in bars], y=[b[1] for b in bars], marker={"color": [b[2] for b in bars]},
        text=[f"{b[1]:.3f}" for b in bars], textposition="outside", customdata=[b[3] for b in bars],
        hovertemplate="%{x}: %{y:.4f}<br>%{customdata}<extra></extra>"))
    fig.update_layout(yaxis_title=f"CV {metric}", height=420, margin={"t": 20},
                      yaxis_range=[0, max(1.0, max(b[1] for b in bars) * 1.1)])
    return fig


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _point(v: Any) -> tuple[Point, bool] | None:
    """``{"mean", "ci95": [lo, hi]}`` -> (point, False); ``{"mean", "min", "max"}`` -> (point, True)."""
    if not (isinstance(v, Mapping) and _num(v.get("mean"))):
        return None
    mean, ci = float(v["mean"]), v.get("ci95")
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(_num(c) for c in ci):
        return (mean, float(ci[0]), float(ci[1])), False
    if _num(v.get("min")) and _num(v.get("max")):
        return (mean, float(v["min"]), float(v["max"])), True
    return (mean, None, None), False


def _collect(label: str, obj: Mapping[str, Any], known: set[str], out: list[tuple[str, dict[str, Point]]],
             depth: int = 0) -> None:
    """Every mapping under ``obj`` that holds metric points becomes one row labelled by its path."""
    pts: dict[str, Point] = {}
    ranges = False
    for k, v in obj.items():
        found = _point(v)
        if found is None and k in known and _num(v):
            found = (float(v), None, None), False
        if found is not None:
            pts[str(k)] = found[0]
            ranges = ranges or found[1]
    if pts:
        out.append((label + (" (bars: min–max)" if ranges else ""), pts))
    if depth < 2:
        for k, v in obj.items():
            if isinstance(v, Mapping) and _point(v) is None and k not in _NOT_SYSTEMS:
                _collect(f"{label} / {k}", v, known, out, depth + 1)


def metrics_rows(metrics: Mapping[str, Any]) -> tuple[list[tuple[str, dict[str, Point]]], list[str]]:
    """(system, {metric: (mean, lo, hi)}) rows from metrics.json and the metric names to show.

    Tolerant: takes ``test`` (the model, mean over seeds), ``ensemble`` (the exported model),
    ``baselines`` and ``annotators`` when present, in whatever nesting, and ignores what is not a
    ``{"mean": ..., "ci95": [lo, hi]}`` point (or ``{"mean", "min", "max"}`` for the annotators).
    """
    test = metrics.get("test") if isinstance(metrics.get("test"), Mapping) else {}
    names = [k for k, v in test.items() if _point(v) is not None]
    known = set(names) | {"accuracy", "balanced_accuracy", "macro_f1", "macro_recall", "macro_precision"}
    rows: list[tuple[str, dict[str, Point]]] = []
    for key, label in (("test", "model (mean of seeds)"), ("ensemble", "ensemble (exported model)")):
        if isinstance(metrics.get(key), Mapping):
            _collect(label, metrics[key], known, rows)
    if isinstance(metrics.get("baselines"), Mapping):
        for name, v in metrics["baselines"].items():
            if isinstance(v, Mapping):
                _collect(f"baseline: {name}", v, known, rows)
    if isinstance(metrics.get("annotators"), Mapping):
        _collect("human annotators", metrics["annotators"], known, rows)
    if not names:
        names = sorted({m for _, pts in rows for m in pts})
    rows = [(s, pts) for s, pts in rows if any(m in pts for m in names)]
    return rows, names


def metrics_figure(rows: list[tuple[str, dict[str, Point]]], names: list[str]) -> go.Figure:
    """Grouped bars per metric, one colour per system, with 95 % intervals as error bars."""
    fig = go.Figure()
    palette = iter(["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94"] * 3)
    for system, pts in rows:
        # The exported model in its own colour, which no other bar takes.
        colour = "#d62728" if "exported" in system or system.startswith("ensemble") else next(palette)
        ys = [pts[m][0] if m in pts else None for m in names]
        hi = [(pts[m][2] - pts[m][0]) if m in pts and pts[m][2] is not None else 0 for m in names]
        lo = [(pts[m][0] - pts[m][1]) if m in pts and pts[m][1] is not None else 0 for m in names]
        fig.add_trace(go.Bar(name=system, x=names, y=ys, marker_color=colour,
                             error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
                             hovertemplate=f"{system}<br>%{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(barmode="group", yaxis_title="test-set score (95 % interval)", height=460,
                      yaxis_range=[0, 1.05], margin={"t": 20})
    return fig


def gain_figure(gain: Mapping[str, Any]) -> go.Figure | None:
    """The exported model minus each baseline (one bar each) with its 95 % interval; 0 = no gain."""
    vs = {k: v for k, v in (gain.get("vs") or {}).items() if isinstance(v, Mapping) and _num(v.get("difference"))}
    if not vs:
        return None
    names = list(vs)
    diff = [float(vs[n]["difference"]) for n in names]
    ci = [vs[n].get("ci95") or [d, d] for n, d in zip(names, diff, strict=True)]
    colours = ["#2a7" if c[0] > 0 else "#c44" for c in ci]
    plus = [c[1] - d for c, d in zip(ci, diff, strict=True)]
    minus = [d - c[0] for c, d in zip(ci, diff, strict=True)]
    fig = go.Figure(go.Bar(x=diff, y=names, orientation="h", marker_color=colours,
                           error_x={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
                           hovertemplate="%{y}: %{x:+.3f}<extra></extra>"))
    fig.add_vline(x=0, line_color="#444")
    fig.update_layout(xaxis_title=f"exported model minus baseline, {gain.get('metric', 'metric')} (95 % interval)",
                      height=120 + 28 * len(names), margin={"t": 20})
    return fig


def annotators_figure(annotators: Mapping[str, Any]) -> go.Figure | None:
    """Each annotator's accuracy (x) against the exported model's on the same images and reference (y).

    Below the diagonal the annotator beats the model, like for like (the final step's rank rule).
    """
    rows = [r for r in annotators.get("per_annotator") or [] if isinstance(r, Mapping) and _num(r.get("accuracy"))
            and _num((r.get("model_accuracy") or {}).get("ensemble"))]
    if not rows:
        return None
    x = [float(r["accuracy"]) for r in rows]
    y = [float(r["model_accuracy"]["ensemble"]) for r in rows]
    fig = go.Figure(go.Scatter(x=x, y=y, mode="markers", text=[str(r.get("annotator")) for r in rows],
                               marker={"size": 10, "color": ["#c44" if a > b else "#2a7" for a, b in zip(x, y,
                                                                                                       strict=True)]},
                               hovertemplate="%{text}: annotator %{x:.3f}, model %{y:.3f}<extra></extra>"))
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dash", "color": "#888"})
    fig.update_layout(xaxis_title="annotator's accuracy (against the majority of the others)",
                      yaxis_title="exported model's accuracy on the same images", height=420, margin={"t": 20},
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
    return fig
