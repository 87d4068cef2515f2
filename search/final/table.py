"""The readable forms of the final step's metrics: the table ``finalize`` prints, the model card's
summary, and the confusion matrix PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anklealign.report import twin_sentence
from search.run.metrics import METRICS
from search.study import atomic

__all__ = ["format_table", "metric_rows", "gain_lines", "card_summary", "confusion_png", "confusion_title"]


def card_summary(m: dict[str, Any]) -> dict[str, Any]:
    """The card's short form of metrics.json."""
    point = {name: {k: m["test"][name][k] for k in ("mean", "std", "ci95")} for name in METRICS}
    return {"test_images": m["test_set"]["images"], "classes_absent": m["classes_absent"],
            "model_seed_mean": point,
            "ensemble": {name: {k: m["ensemble"][name][k] for k in ("mean", "ci95")} for name in METRICS},
            "baselines": {b: {name: v[name]["mean"] for name in METRICS} for b, v in m["baselines"].items()
                          if "accuracy" in v},
            "annotators_accuracy": m["annotators"].get("accuracy"), "details": "metrics.json"}


def confusion_title(study: str, trial: int, seeds: int, info: dict[str, Any]) -> str:
    data = "SYNTHETIC TWIN (generated images, not real data)" if info["synthetic"] else f"data: {info['source']}"
    return f"{study}, trial {trial}: ensemble of {seeds} seeds on the test set\n{data}"


def confusion_png(path: Path, conf: np.ndarray, classes: list[str], *, title: str) -> None:
    """Counts in the cells, colour = share of the row (the class's recall); Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(classes)
    rows = conf.sum(1, keepdims=True)
    share = np.divide(conf, rows, out=np.zeros(conf.shape), where=rows > 0)  # (K, K) row-normalised
    side = max(4.8, 0.55 * k + 2.5)  # room for K x K cells and their labels (3 classes or 30)
    fig = Figure(figsize=(side + 0.8, side), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    font = 10 if k <= 5 else max(5, 10 - (k - 5) // 2)
    for i in range(k):
        for j in range(k):
            text = f"{conf[i, j]}\n{share[i, j]:.0%}" if rows[i, 0] and k <= 6 else f"{conf[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=font,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("test label (majority vote)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the row (recall)")
    atomic.write_with(path, lambda p: fig.savefig(p, format="png", dpi=120))


def _cell(entry: Any, *, std: bool = False) -> str:
    if not isinstance(entry, dict) or entry.get("mean") is None:
        return "-"
    text = f"{entry['mean']:.3f}"
    if std and entry.get("std") is not None:
        text += f"±{entry['std']:.3f}"
    if entry.get("ci95"):
        text += f" [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}]"
    return text


_OBJECTIVE_WORDS = {"best_epoch": "best-epoch", "last_epoch": "last-epoch", "last_mean": "last-5-epochs mean"}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _cv_line(m: dict[str, Any]) -> str:
    cv = m["cv"]
    chosen = _OBJECTIVE_WORDS.get(cv.get("objective", "best_epoch"), cv.get("objective"))
    line = (f"cross-validated {cv['metric']} ({cv.get('folds')} folds): {_fmt(cv['value'])}, the {chosen} value the "
            f"study optimised (best epoch {cv.get('best_epoch')}: {_fmt(cv.get('best_epoch_value'))}; last epoch "
            f"{cv.get('epochs_run')}: {_fmt(cv.get('last_epoch_value'))}; last-5 mean "
            f"{_fmt(cv.get('last_mean_value'))})")
    bbc = cv.get("bias_corrected") or {}
    if bbc.get("estimate") is not None:
        ci = bbc.get("ci95") or [None, None]
        line += (f"\nbias-corrected estimate of the winner (BBC-CV over {bbc['configs']} trials' out-of-fold "
                 f"predictions): {bbc['estimate']:.4f} [{_fmt(ci[0])}, {_fmt(ci[1])}], raw best "
                 f"{bbc['raw']:.4f} (selection optimism {bbc['bias']:+.4f})")
    return line


def gain_lines(m: dict[str, Any]) -> list[str]:
    """The search-gain lines: the exported model against each retrained preset and random, and the warnings."""
    gain = m.get("search_gain")
    if not gain:
        return []
    parts = [f"{name} {v['difference']:+.3f}" + (f" [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]" if v.get("ci95")
                                                 else "")
             for name, v in gain["vs"].items()]
    lines = [f"search gain ({gain['metric']}, exported model minus each baseline, 95 % paired interval): "
             + "; ".join(parts)]
    lines += [f"WARNING: {w}" for w in gain.get("warnings", [])]
    return lines


def metric_rows(m: dict[str, Any]) -> list[str]:
    """The table of the model's seeds, the exported ensemble and every baseline, one metric per column."""
    rows = [(f"model, mean of {len(m['seeds'])} seeds", m["test"], True),
            ("ensemble (the exported model)", m["ensemble"], False)]
    for name, b in m["baselines"].items():
        if "skipped" in b:
            rows.append((f"{name}: skipped ({b['skipped']})", {}, False))
            continue
        label = {"train_majority": f"always {b.get('predicts')} (train majority)",
                 "test_majority_oracle": f"always {b.get('predicts')} (ORACLE)",
                 "stratified_random": "random, training frequencies",
                 "default": f"default, no search ({len(m['seeds'])} seeds)"}.get(
                     name, f"{name} ({len(m['seeds'])} seeds)")
        rows.append((label, b, b.get("kind") == "preset"))
    lines = [(f"{'':<34}" + "".join(f"{n.replace('_', ' '):<30}" for n in METRICS)).rstrip()]
    for label, entry, std in rows:
        lines.append((f"{label:<34}" + "".join(f"{_cell(entry.get(n), std=std):<30}" for n in METRICS)).rstrip())
    return lines


def format_table(m: dict[str, Any]) -> str:
    """The readable summary ``finalize`` prints: model vs baselines vs humans, with 95 % intervals."""
    data = m["data"]
    absent = m.get("classes_absent") or []
    k = len(m["classes"])
    lines = [f"data: {data['note']} — {data['source']}", *filter(None, [twin_sentence(data)]),
             f"study {m['study']}, trial {m['trial']}: {_cv_line(m)}",
             f"retrained on {data['train_images']} images, {len(m['seeds'])} seeds: {m.get('epochs_reason', '')}",
             *([f"exported: {m['exported']}"] if m.get("exported") else []),
             f"test set: {m['test_set']['images']} images in {m['test_set'].get('groups', '?')} duplicate groups; "
             f"macro-F1 averages all {k} classes" + (
                 f"; {', '.join(absent)} has no test image (F1 0, no recall), so macro-F1 here is at most "
                 f"{(k - len(absent)) / k:.3f}" if absent else ""),
             "mean [95 % bootstrap interval over duplicate groups]; ± = std over seeds", ""]
    reads = (m.get("test_reads") or {}).get("count")
    if isinstance(reads, int) and reads > 1:
        lines.insert(1, f"WARNING: the test labels have been read {reads} times ({m['test_reads']['log']}); "
                        "only the first read is untouched by choices made after seeing a test score")
    lines += metric_rows(m)
    lines += ["", *gain_lines(m)] if m.get("search_gain") else []
    humans = m["annotators"]
    if humans.get("available"):
        acc, ranks = humans["accuracy"], humans.get("model_rank", {})
        rank = ranks.get("ensemble", {})
        lines.append(f"\nhuman annotators (n={humans['n_annotators']}, each against the majority of the others): "
                     f"accuracy mean {acc['mean']:.3f}, min {acc['min']:.3f}, max {acc['max']:.3f}; the exported "
                     f"model ranks {rank.get('rank')} of {rank.get('of')} (1 = no annotator beats it; compared "
                     "with each annotator on that annotator's images and reference)")
    else:
        lines.append(f"\nhuman annotators: {humans.get('reason')}")
    onnx = m.get("onnx") or {}
    if onnx.get("max_abs_diff") is not None:
        lines.append(f"ONNX check: max |p_onnx - p_torch| = {onnx['max_abs_diff']:.1e} (tolerance "
                     f"{onnx['tolerance']:.0e}) on {onnx['check_images']} images")
    if isinstance(reads, int):
        lines.append(f"test-label reads of this study: {reads} ({m['test_reads']['log']})")
    return "\n".join(lines)
