"""The final step: retrain the best trial with several seeds, score it once on the test set, export it.

Order matters and is the point of this module: every model (the best config and the baseline
presets, each with ``final.seeds`` seeds on the whole training pool) is trained first; only then is
the test split read, by :func:`_read_test`, the one place in the search package that touches
``ds.test`` content. Test-set scores never feed back into any choice: the exported model (the
ensemble of the seeds) was fixed before.

Writes ``<out_dir>/``: model.pt, model.onnx, model_card.json (:mod:`search.export`), metrics.json
(:mod:`search.metrics`) and confusion.png.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import anklealign
from search import atomic
from search.data import DataContext, describe
from search.errors import SearchError
from search.export import save_model
from search.metrics import METRICS, annotator_agreement, baselines, score_seeds
from search.runner import preset_trial
from search.studydef import StudyDef, apply_overrides, study_def_from_dict
from search.train import predict_proba, resolve_device, train_model
from space import TrialCfg
from space.search_space import SearchSpace

__all__ = ["final_seed", "best_trial", "pick_trial", "finalize", "finalize_trial", "format_table",
           "with_final_overrides", "cli_finalize"]

_log = logging.getLogger(__name__)

_FILES = ("model.pt", "model.onnx", "model_card.json", "metrics.json", "confusion.png")


def final_seed(study_seed: int, index: int) -> int:
    """Seed of the ``index``-th final retrain (distinct from every trial seed's formula)."""
    return (study_seed * 1_000_003 + 500_009 + index * 104_729) % (2**31 - 1)


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The COMPLETE trial with the best cross-validated value."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        raise SearchError(f"study {study.study_name!r} has no complete trial to finalize yet")
    return max(done, key=lambda t: (t.value, -t.number))


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial ``number`` (it must have finished with a config), or the best one when ``None``."""
    if number is None:
        return best_trial(study)
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        raise SearchError(f"study {study.study_name!r} has no trial {number}")
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or "config" not in trial.user_attrs:
        raise SearchError(f"trial {number} is {trial.state.name.lower()}: only complete or pruned trials "
                          "with a recorded config can be exported")
    return trial


def with_final_overrides(defn: StudyDef, args: argparse.Namespace) -> StudyDef:
    """The recorded definition with this command's ``--set final.*`` overrides (run-only keys) applied."""
    final = [o for o in getattr(args, "overrides", None) or [] if o.strip().startswith("final.")]
    return study_def_from_dict(apply_overrides(defn.to_dict(), final)) if final else defn


@dataclass(frozen=True)
class _Trained:
    """Models trained on the whole pool, before anything looked at the test set."""

    name: str
    cfg: TrialCfg
    ds: anklealign.Dataset
    epochs: int
    models: list[torch.nn.Module]
    epochs_from: str


def _retrain(name: str, cfg: TrialCfg, ds: anklealign.Dataset, *, epochs: int, seeds: list[int],
             device: torch.device, epochs_from: str) -> _Trained:
    images, labels = ds.train.images.to(device), ds.train.labels.to(device)
    models = []
    for i, seed in enumerate(seeds):
        _log.info("final: %s: training seed %d/%d (seed %d), %d epochs on %d images", name, i + 1, len(seeds),
                  seed, epochs, len(labels))
        models.append(train_model(images, labels, cfg, epochs=epochs, seed=seed, num_classes=len(ds.classes)))
    return _Trained(name, cfg, ds, epochs, models, epochs_from)


def _epochs_of(trial: FrozenTrial) -> int:
    epochs = trial.user_attrs.get("best_epoch") or trial.user_attrs.get("epochs_run")
    if not isinstance(epochs, int) or epochs < 1:
        raise SearchError(f"trial {trial.number} records no best_epoch: cannot tell how long to retrain it")
    return epochs


def _presets(defn: StudyDef, study: optuna.Study, ctx: DataContext, *, default_epochs: int, seeds: list[int],
             device: torch.device) -> tuple[list[_Trained], dict[str, Any]]:
    """Retrain ``final.baseline_presets`` like the best trial; presets that cannot run are reported."""
    space = SearchSpace.from_dict(dict(defn.space))
    trained, skipped = [], {}
    for name in defn.final.baseline_presets:
        try:
            cfg = preset_trial(name, space, defn.training.max_epochs)
        except SearchError as exc:
            skipped[name] = {"kind": "preset", "skipped": str(exc)}
            continue
        runs = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if t.user_attrs.get("preset") == name and t.user_attrs.get("best_epoch")),
                      key=lambda t: -(t.value if t.value is not None else float("-inf")))
        epochs, source = ((_epochs_of(runs[0]), f"best_epoch of its trial {runs[0].number}") if runs else
                          (default_epochs, "the final trial's epochs (the preset did not complete in the study)"))
        trained.append(_retrain(name, cfg, ctx.dataset(cfg.input), epochs=epochs, seeds=seeds, device=device,
                                epochs_from=source))
    return trained, skipped


def _read_test(ds: anklealign.Dataset) -> dict[str, Any]:
    """The test split as arrays: the only function of the search package that reads its content."""
    return {"images": ds.test.images, "labels": ds.test.labels.cpu().numpy(),
            "votes": ds.test_votes.cpu().numpy(), "annotator_labels": ds.test_annotator_labels.cpu().numpy(),
            "ties": int(ds.test_ties.sum()), "ids": tuple(ds.test.ids)}


def _probs(run: _Trained, images: torch.Tensor, device: torch.device) -> np.ndarray:
    x = images.to(device)
    return np.stack([predict_proba(m, x).numpy() for m in run.models])  # (S, M, K)


def finalize_trial(defn: StudyDef, study: optuna.Study, trial: FrozenTrial, *, out_dir: Path, device: str,
                   data_source: str | None = None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Retrain ``trial`` on the whole pool with ``final.seeds`` seeds, score it on the test set, export it.

    Returns:
        The metrics written to ``<out_dir>/metrics.json`` (plus ``"files"``).
    """
    dev = resolve_device(device)
    cfg = TrialCfg.from_dict(trial.user_attrs["config"])
    epochs = _epochs_of(trial)
    source = data_source or defn.data.source or None
    ctx = DataContext(source=source, device=dev, folds=defn.cv.folds, seed=defn.study.seed, cache_dir=cache_dir)
    ds = ctx.dataset(cfg.input)
    recorded = study.user_attrs.get("data_fingerprint")
    if recorded and recorded != ds.fingerprint:
        raise SearchError(f"study {defn.name!r} was searched on other data (fingerprint {recorded[:12]}, this "
                          f"source {ds.fingerprint[:12]}); point --data at the study's source")
    info = describe(ds)
    if info["test_images"] == 0:  # a count, not content: the test split itself is still unread
        raise SearchError(f"{info['source']} has no test images: there is nothing to score the final model on")
    seeds = [final_seed(defn.study.seed, i) for i in range(defn.final.seeds)]
    _log.info("final: trial %d on %s: %d seeds x %d epochs", trial.number, info["note"], len(seeds), epochs)

    # 1. Train everything. Nothing so far has read the test split.
    best = _retrain(f"trial {trial.number}", cfg, ds, epochs=epochs, seeds=seeds, device=dev,
                    epochs_from=f"best_epoch of trial {trial.number}")
    presets, skipped = _presets(defn, study, ctx, default_epochs=epochs, seeds=seeds, device=dev)

    # 2. The test set, read here for the first time.
    test = _read_test(ds)
    n_boot, boot_seed = defn.final.bootstrap, defn.study.seed
    classes = list(ds.classes)
    probs = _probs(best, test["images"], dev)
    scores = score_seeds(probs, test["labels"], test["votes"], classes=classes, n_boot=n_boot, seed=boot_seed)
    ens_probs = probs.mean(0, keepdims=True)  # (1, M, K): what the exported ensemble outputs
    ensemble = score_seeds(ens_probs, test["labels"], test["votes"], classes=classes, n_boot=n_boot,
                           seed=boot_seed)
    base = baselines(test["labels"], test["votes"], ds.train.labels.cpu().numpy(), classes=classes,
                     n_boot=n_boot, seed=boot_seed)
    for run in presets:
        p_test = _read_test(run.ds)
        if p_test["ids"] != test["ids"]:
            raise SearchError(f"preset {run.name}: its test images differ from the model's (data changed?)")
        base[run.name] = {"kind": "preset", "description": f"seed net {run.name}, retrained like the model",
                          "seeds": seeds, "epochs": run.epochs, "epochs_from": run.epochs_from,
                          "config": run.cfg.to_dict(),
                          **score_seeds(_probs(run, p_test["images"], dev), test["labels"], test["votes"],
                                        classes=classes, n_boot=n_boot, seed=boot_seed)}
    base.update(skipped)
    humans = annotator_agreement(test["annotator_labels"], annotators=ds.annotators, num_classes=len(classes),
                                 model_accuracy={"model": scores["accuracy"]["mean"],
                                                 "ensemble": ensemble["accuracy"]["mean"]})
    metrics: dict[str, Any] = {
        "data": info, "study": defn.name, "trial": trial.number,
        "cv": {"metric": defn.study.metric, "value": trial.value, "folds": defn.cv.folds},
        "config": cfg.to_dict(), "seeds": seeds, "epochs": epochs, "classes": classes,
        "classes_scored": scores["classes_scored"],
        "test_set": {"images": len(test["labels"]), "ties": test["ties"],
                     "class_counts": {c: int((test["labels"] == k).sum()) for k, c in enumerate(classes)}},
        "test": scores, "ensemble": ensemble, "baselines": base, "annotators": humans,
        "bootstrap": {"resamples": n_boot, "seed": boot_seed, "interval": "95 % percentile, test images "
                      "resampled with replacement, seed-mean metric"},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }

    # 3. Export the ensemble (fixed in step 1) and write the reports.
    out_dir.mkdir(parents=True, exist_ok=True)
    card = save_model(out_dir, best.models, cfg, classes=classes, check_images=test["images"],
                      card={"data": info, "study": defn.name, "trial": trial.number, "cv": metrics["cv"],
                            "seeds": seeds, "epochs": epochs, "metrics": _summary(metrics)})
    metrics["onnx"] = card["onnx"]
    _confusion_png(out_dir / "confusion.png", np.asarray(ensemble["confusion"], dtype=np.int64), classes,
                   title=_title(defn.name, trial.number, len(seeds), info))
    metrics["files"] = [f for f in _FILES if (out_dir / f).is_file() or f == "metrics.json"]
    atomic.write_json(out_dir / "metrics.json", metrics)
    _log.info("final: wrote %s (%s)", out_dir, ", ".join(metrics["files"]))
    return metrics


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    """The card's short form of metrics.json."""
    point = {name: {k: m["test"][name][k] for k in ("mean", "std", "ci95")} for name in METRICS}
    return {"test_images": m["test_set"]["images"], "classes_scored": m["classes_scored"],
            "model_seed_mean": point,
            "ensemble": {name: {k: m["ensemble"][name][k] for k in ("mean", "ci95")} for name in METRICS},
            "baselines": {b: {name: v[name]["mean"] for name in METRICS} for b, v in m["baselines"].items()
                          if "accuracy" in v},
            "annotators_accuracy": m["annotators"].get("accuracy"), "details": "metrics.json"}


def _title(study: str, trial: int, seeds: int, info: dict[str, Any]) -> str:
    data = "SYNTHETIC TWIN (generated images, not real data)" if info["synthetic"] else f"data: {info['source']}"
    return f"{study}, trial {trial}: ensemble of {seeds} seeds on the test set\n{data}"


def _confusion_png(path: Path, conf: np.ndarray, classes: list[str], *, title: str) -> None:
    """Counts in the cells, colour = share of the row (the class's recall); Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = conf.sum(1, keepdims=True)
    share = np.divide(conf, rows, out=np.zeros(conf.shape), where=rows > 0)  # (K, K) row-normalised
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(classes)):
        for j in range(len(classes)):
            text = f"{conf[i, j]}\n{share[i, j]:.0%}" if rows[i, 0] else f"{conf[i, j]}"
            ax.text(j, i, text, ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("test label (majority vote)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the row (recall)")
    atomic.write_with(path, lambda p: fig.savefig(p, format="png", dpi=120))


def finalize(defn: StudyDef, study: optuna.Study, *, run_dir: Path, device: str, data_source: str | None = None,
             cache_dir: Path | None = None) -> dict[str, Any]:
    """Finalize the best COMPLETE trial into ``<run_dir>/best/`` and attach the files to the dashboard."""
    trial = best_trial(study)
    out_dir = Path(run_dir) / "best"
    metrics = finalize_trial(defn, study, trial, out_dir=out_dir, device=device, data_source=data_source,
                             cache_dir=cache_dir)
    try:
        from search.dashboard import attach_final
    except (ImportError, AttributeError) as exc:
        _log.info("final: dashboard attachment skipped (%s)", exc)
    else:
        try:
            attach_final(study, trial.number, Path(run_dir), [out_dir / f for f in metrics["files"]],
                         "```\n" + format_table(metrics) + "\n```")
        except Exception as exc:  # the files are written; a dashboard problem must not undo that
            _log.warning("final: could not attach the files to the dashboard: %s", exc)
    return metrics


def _cell(entry: Any, *, std: bool = False) -> str:
    if not isinstance(entry, dict) or entry.get("mean") is None:
        return "-"
    text = f"{entry['mean']:.3f}"
    if std and entry.get("std") is not None:
        text += f"±{entry['std']:.3f}"
    if entry.get("ci95"):
        text += f" [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}]"
    return text


def format_table(m: dict[str, Any]) -> str:
    """The readable summary ``finalize`` prints: model vs baselines vs humans, with 95 % intervals."""
    data = m["data"]
    lines = [f"data: {data['note']} — {data['source']}",
             f"study {m['study']}, trial {m['trial']} (cross-validated {m['cv']['metric']} "
             f"{m['cv']['value'] if m['cv']['value'] is None else format(m['cv']['value'], '.4f')}), retrained on "
             f"{data['train_images']} images: {len(m['seeds'])} seeds x {m['epochs']} epochs",
             f"test set: {m['test_set']['images']} images, classes scored: {', '.join(m['classes_scored'])} "
             "(absent classes are left out of the averages; predicting them counts as an error)",
             "mean [95 % bootstrap interval]; ± = std over seeds", ""]
    rows = [(f"model, mean of {len(m['seeds'])} seeds", m["test"], True),
            ("ensemble (the exported model)", m["ensemble"], False)]
    for name, b in m["baselines"].items():
        if "skipped" in b:
            rows.append((f"{name}: skipped ({b['skipped']})", {}, False))
            continue
        label = {"train_majority": f"always {b.get('predicts')} (train majority)",
                 "test_majority_oracle": f"always {b.get('predicts')} (ORACLE)",
                 "stratified_random": "random, training frequencies"}.get(name, f"{name} ({len(m['seeds'])} seeds)")
        rows.append((label, b, b.get("kind") == "preset"))
    header = f"{'':<34}" + "".join(f"{n.replace('_', ' '):<30}" for n in METRICS)
    lines.append(header.rstrip())
    for label, entry, std in rows:
        lines.append((f"{label:<34}" + "".join(f"{_cell(entry.get(n), std=std):<30}" for n in METRICS)).rstrip())
    humans = m["annotators"]
    if humans.get("available"):
        acc, ranks = humans["accuracy"], humans.get("model_rank", {})
        rank = ranks.get("model", {})
        lines.append(f"\nhuman annotators (n={humans['n_annotators']}, each against the majority of the others): "
                     f"accuracy mean {acc['mean']:.3f}, min {acc['min']:.3f}, max {acc['max']:.3f}; "
                     f"the model would rank {rank.get('rank')} of {rank.get('of')} (1 = better than all)")
    else:
        lines.append(f"\nhuman annotators: {humans.get('reason')}")
    onnx = m.get("onnx") or {}
    if onnx.get("max_abs_diff") is not None:
        lines.append(f"ONNX check: max |p_onnx - p_torch| = {onnx['max_abs_diff']:.1e} (tolerance "
                     f"{onnx['tolerance']:.0e}) on {onnx['check_images']} images")
    return "\n".join(lines)


def cli_finalize(args: argparse.Namespace) -> int:
    """``finalize``: retrain the best trial, score it on the test set, export it; print the table."""
    from search.commands import load_study, run_dir_of

    defn, study = load_study(args)
    defn = with_final_overrides(defn, args)
    device = getattr(args, "device", None) or defn.training.device
    metrics = finalize(defn, study, run_dir=run_dir_of(args, defn), device=device,
                       data_source=getattr(args, "data", None))
    print(format_table(metrics))
    print(f"files: {run_dir_of(args, defn) / 'best'}: {', '.join(metrics['files'])}")
    return 0

