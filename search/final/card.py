"""What the final step writes beside the model for people: the model card's short summary of the
metrics and the confusion matrix PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from search.run.metrics import METRICS
from search.study import atomic

__all__ = ["card_summary", "confusion_figure", "confusion_png", "confusion_title", "figure_title"]


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

def figure_title(fig: Any, title: str, *, fontsize: float = 9) -> None:
    """The figure's title above everything in it (a colour bar included), each line wrapped to the figure's
    width so that a long study name or data path stays inside the picture."""
    import textwrap

    width = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))  # characters that fit at this size
    lines = [w for line in title.split("\n") for w in (textwrap.wrap(line, width, break_on_hyphens=False) or [""])]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def confusion_png(path: Path, conf: np.ndarray, classes: list[str], *, title: str) -> None:
    """The confusion matrix as a PNG (:func:`confusion_figure`), written atomically."""
    fig = confusion_figure(conf, classes, title=title)
    atomic.write_with(path, lambda p: fig.savefig(p, format="png", dpi=120))


def confusion_figure(conf: np.ndarray, classes: list[str], *, title: str) -> Any:
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
    figure_title(fig, title)
    fig.colorbar(image, ax=ax, label="share of the row (recall)")
    return fig
