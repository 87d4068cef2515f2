"""The final step: retrain the best trial with several seeds, score it once on the test set, export it.

Order matters and is the point of this module: every model (the best config and the baseline
presets, each with ``final.seeds`` seeds on the whole training pool) is trained first; only then is
the test split read, by :func:`_read_test`, the one place in the search package that touches
``ds.test`` content, and each such read is logged in the run folder's ``test_reads.jsonl``.
Test-set scores never feed back into any choice: the exported model (the ensemble of the seeds)
was fixed before.

The retrain follows the trial's recipe exactly (optimiser, schedule over the recipe's full budget,
augmentation, precision, batch size) for the epoch count the study's objective scored: the best
epoch's, or the whole budget (:func:`retrain_epochs`).

Writes ``<out_dir>/``: model.pt, model.onnx, model_card.json (:mod:`search.export`), metrics.json
(:mod:`search.metrics`) and confusion.png.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import anklealign
from anklealign.report import twin_sentence
from search import atomic
from search.data import DataContext, describe
from search.errors import SearchError
from search.export import save_model
from search.metrics import METRICS, annotator_agreement, baselines, score_seeds
from search.records import TrialRecord
from search.runner import preset_trial
from search.seeds import final_seed
from search.studydef import StudyDef, apply_overrides, study_def_from_dict
from search.train import predict_proba, resolve_device, train_model
from space import TrialCfg
from space.search_space import SearchSpace

__all__ = ["best_trial", "pick_trial", "retrain_epochs", "finalize", "finalize_trial", "format_table",
           "with_final_overrides", "cli_finalize", "test_reads", "TEST_READS"]

_log = logging.getLogger(__name__)

_FILES = ("model.pt", "model.onnx", "model_card.json", "metrics.json", "confusion.png")
TEST_READS = "test_reads.jsonl"


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
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or TrialRecord.of(trial).config is None:
        raise SearchError(f"trial {number} is {trial.state.name.lower()}: only complete or pruned trials "
                          "with a recorded config can be exported")
    return trial


def with_final_overrides(defn: StudyDef, args: argparse.Namespace) -> StudyDef:
    """The recorded definition with this command's ``--set final.*`` overrides (run-only keys) applied."""
    final = [o for o in getattr(args, "overrides", None) or [] if o.strip().startswith("final.")]
    return study_def_from_dict(apply_overrides(defn.to_dict(), final)) if final else defn


def retrain_epochs(record: TrialRecord, *, objective: str, max_epochs: int, number: int) -> tuple[int, str]:
    """How many epochs of its recipe a trial is retrained for, and why (the model card says both).

    The study scored the trial at one point of its recipe; the retrain stops at the same point: its
    best epoch for ``best_epoch``, the end of what it ran (the whole budget, unless pruned) for
    ``last_epoch``. The schedule spans the recipe's full budget either way.
    """
    if objective == "best_epoch":
        epochs, why = record.best_epoch, "its best epoch, whose cross-validated score the study optimised"
    else:
        epochs, why = record.epochs_run, "the last epoch it ran, whose cross-validated score the study optimised"
    if not isinstance(epochs, int) or epochs < 1:
        raise SearchError(f"trial {number} records no epoch count: cannot tell how long to retrain it")
    return epochs, (f"{epochs} of the recipe's {max_epochs} epochs: {why} (trial {number}); the learning-rate "
                    f"schedule runs over all {max_epochs}, as in the trial")


@dataclass(frozen=True)
class _Trained:
    """Models trained on the whole pool, before anything looked at the test set."""

    name: str
    cfg: TrialCfg
    ds: anklealign.Dataset
    epochs: int
    models: list[torch.nn.Module]
    epochs_from: str
    losses: list[tuple[float, ...]]  # per seed, the mean training loss of each epoch


def _retrain(name: str, cfg: TrialCfg, ds: anklealign.Dataset, *, epochs: int, seeds: list[int],
             device: torch.device, epochs_from: str) -> _Trained:
    images, labels = ds.train.images.to(device), ds.train.labels.to(device)
    models, losses = [], []
    for i, seed in enumerate(seeds):
        _log.info("final: %s: training seed %d/%d (seed %d), %d epochs on %d images", name, i + 1, len(seeds),
                  seed, epochs, len(labels))
        done = train_model(images, labels, cfg, epochs=epochs, seed=seed, num_classes=len(ds.classes))
        models.append(done.model)
        losses.append(done.losses)
    return _Trained(name, cfg, ds, epochs, models, epochs_from, losses)


def _presets(defn: StudyDef, study: optuna.Study, ctx: DataContext, *, seeds: list[int],
             device: torch.device) -> tuple[list[_Trained], dict[str, Any]]:
    """Retrain ``final.baseline_presets`` like the best trial; presets that cannot run are reported."""
    space = SearchSpace.from_dict(dict(defn.space))
    num_classes = ctx.num_classes
    trained, skipped = [], {}
    for name in defn.final.baseline_presets:
        try:
            cfg = preset_trial(name, space, defn.training.max_epochs, num_classes=num_classes)
        except SearchError as exc:
            skipped[name] = {"kind": "preset", "skipped": str(exc)}
            continue
        runs = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if TrialRecord.of(t).preset == name),
                      key=lambda t: -(t.value if t.value is not None else float("-inf")))
        if runs:
            epochs, source = retrain_epochs(TrialRecord.of(runs[0]), objective=defn.study.objective,
                                            max_epochs=defn.training.max_epochs, number=runs[0].number)
        else:
            epochs = defn.training.max_epochs
            source = (f"all {epochs} epochs of its recipe: its trial did not complete in the study, so it has "
                      "no scored epoch")
        trained.append(_retrain(name, cfg, ctx.dataset(cfg.input), epochs=epochs, seeds=seeds, device=device,
                                epochs_from=source))
    return trained, skipped


def test_reads(run_dir: Path) -> list[dict[str, Any]]:
    """The log of every read of the test labels in a run folder (empty when none)."""
    path = Path(run_dir) / TEST_READS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by a crash still counted as a read
            rows.append({"unreadable": line[:200]})
    return rows


def _log_test_read(run_dir: Path, entry: dict[str, Any]) -> int:
    """Append one line to ``test_reads.jsonl`` (O_APPEND: concurrent commands never interleave a line)."""
    line = json.dumps({"time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **entry}) + "\n"
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / TEST_READS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(test_reads(run_dir))


def _read_test(ds: anklealign.Dataset, *, run_dir: Path | None, why: dict[str, Any] | None = None) -> dict[str, Any]:
    """The test split as arrays: the only function of the search package that reads its content.

    Each final step or export reads the test labels once: that read is logged in
    ``<run_dir>/test_reads.jsonl``. The same images at another input size (for a seed net) are part of
    that read (``run_dir`` None: not logged again).
    """
    count = _log_test_read(run_dir, {**(why or {}), "test_images": len(ds.test.ids)}) if run_dir else 0
    return {"images": ds.test.images, "labels": ds.test.labels.cpu().numpy(), "groups": ds.test.groups.cpu().numpy(),
            "votes": ds.test_votes.cpu().numpy(), "annotator_labels": ds.test_annotator_labels.cpu().numpy(),
            "ties": int(ds.test_ties.sum()), "ids": tuple(ds.test.ids), "reads": count}


def _probs(run: _Trained, images: torch.Tensor, device: torch.device) -> np.ndarray:
    x = images.to(device)
    return np.stack([predict_proba(m, x).numpy() for m in run.models])  # (S, M, K)


def _reads_block(count: int) -> dict[str, Any]:
    block: dict[str, Any] = {"count": count, "log": TEST_READS}
    if count > 1:
        block["warning"] = (f"the test labels of this study have been read {count} times: only the first read is "
                            "untouched by choices made after seeing a test score")
    return block


def _cv_block(defn: StudyDef, trial: FrozenTrial, record: TrialRecord) -> dict[str, Any]:
    """The trial's cross-validated scores: the one the study optimised, and both of them."""
    return {"metric": defn.study.metric, "objective": defn.study.objective, "value": trial.value,
            "best_epoch_value": record.cv_best, "best_epoch": record.best_epoch,
            "last_epoch_value": record.cv_last, "epochs_run": record.epochs_run, "folds": defn.cv.folds}


def finalize_trial(defn: StudyDef, study: optuna.Study, trial: FrozenTrial, *, out_dir: Path, run_dir: Path,
                   device: str, command: str = "finalize", data_source: str | None = None,
                   cache_dir: Path | None = None) -> dict[str, Any]:
    """Retrain ``trial`` on the whole pool with ``final.seeds`` seeds, score it on the test set, export it.

    Args:
        out_dir: where the model and its reports go (``<run_dir>/best`` for the final step).
        run_dir: the study's run folder (``test_reads.jsonl`` lives there).
        command: what asked for it, for the test-read log (``finalize``, ``run``, ``export``).

    Returns:
        The metrics written to ``<out_dir>/metrics.json`` (plus ``"files"``).
    """
    dev = resolve_device(device)
    record = TrialRecord.of(trial)
    cfg = TrialCfg.from_dict(record.config or {})
    epochs, epochs_why = retrain_epochs(record, objective=defn.study.objective,
                                        max_epochs=cfg.train.max_epochs, number=trial.number)
    source = data_source or defn.data.source or None
    ctx = DataContext(source=source, device=dev, folds=defn.cv.folds, seed=defn.study.seed, cache_dir=cache_dir,
                      default_input=cfg.input)
    ds = ctx.dataset(cfg.input)
    recorded = study.user_attrs.get("data_fingerprint")
    if recorded and recorded != ds.fingerprint:
        raise SearchError(f"study {defn.name!r} was searched on other data (fingerprint {recorded[:12]}, this "
                          f"source {ds.fingerprint[:12]}); point --data at the study's source")
    info = describe(ds)
    if info["test_images"] == 0:  # a count, not content: the test split itself is still unread
        raise SearchError(f"{info['source']} has no test images: there is nothing to score the final model on")
    seeds = [final_seed(defn.study.seed, i) for i in range(defn.final.seeds)]
    _log.info("final: trial %d on %s: %d seeds x %s", trial.number, info["note"], len(seeds), epochs_why)

    # 1. Train everything. Nothing so far has read the test split.
    best = _retrain(f"trial {trial.number}", cfg, ds, epochs=epochs, seeds=seeds, device=dev,
                    epochs_from=epochs_why)
    presets, skipped = _presets(defn, study, ctx, seeds=seeds, device=dev)

    # 2. The test set, read here for the first time (and logged as a read).
    test = _read_test(ds, run_dir=run_dir, why={"command": command, "study": defn.name, "trial": trial.number,
                                                "out_dir": str(out_dir)})
    n_boot, boot_seed = defn.final.bootstrap, defn.study.seed
    classes = list(ds.classes)
    common = {"classes": classes, "groups": test["groups"], "n_boot": n_boot, "seed": boot_seed}
    probs = _probs(best, test["images"], dev)
    scores = score_seeds(probs, test["labels"], test["votes"], **common)
    ens_probs = probs.mean(0, keepdims=True)  # (1, M, K): what the exported ensemble outputs
    ensemble = score_seeds(ens_probs, test["labels"], test["votes"], **common)
    base = baselines(test["labels"], test["votes"], ds.train.labels.cpu().numpy(), **common)
    for run in presets:
        p_test = _read_test(run.ds, run_dir=None)  # the same read, at the seed net's input size
        if p_test["ids"] != test["ids"]:
            raise SearchError(f"preset {run.name}: its test images differ from the model's (data changed?)")
        base[run.name] = {"kind": "preset", "description": f"seed net {run.name}, retrained like the model",
                          "seeds": seeds, "epochs": run.epochs, "epochs_from": run.epochs_from,
                          "config": run.cfg.to_dict(),
                          **score_seeds(_probs(run, p_test["images"], dev), test["labels"], test["votes"], **common)}
    base.update(skipped)
    humans = annotator_agreement(test["annotator_labels"], annotators=ds.annotators, num_classes=len(classes),
                                 model_predictions={"model": probs.argmax(-1), "ensemble": ens_probs.argmax(-1)})
    metrics: dict[str, Any] = {
        "data": info, "study": defn.name, "trial": trial.number,
        "cv": _cv_block(defn, trial, TrialRecord.of(trial)),
        "config": cfg.to_dict(), "seeds": seeds, "epochs": epochs, "recipe_epochs": cfg.train.max_epochs,
        "epochs_reason": epochs_why, "train_loss": [list(x) for x in best.losses], "classes": classes,
        "classes_absent": scores["classes_absent"],
        "test_set": {"images": len(test["labels"]), "groups": scores["n_groups"], "ties": test["ties"],
                     "class_counts": {c: int((test["labels"] == k).sum()) for k, c in enumerate(classes)}},
        "test_reads": _reads_block(test["reads"]),
        "test": scores, "ensemble": ensemble, "baselines": base, "annotators": humans,
        "bootstrap": {"resamples": n_boot, "seed": boot_seed,
                      "interval": "95 % BCa (percentile where BCa is undefined), scipy.stats.bootstrap over the "
                                  "test set's duplicate groups, seed-mean metric"},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }

    # 3. Export the ensemble (fixed in step 1) and write the reports.
    out_dir.mkdir(parents=True, exist_ok=True)
    card = save_model(out_dir, best.models, cfg, classes=classes, check_images=test["images"],
                      card={"data": info, "study": defn.name, "trial": trial.number, "cv": metrics["cv"],
                            "seeds": seeds, "epochs": epochs, "epochs_reason": epochs_why,
                            "test_reads": metrics["test_reads"], "metrics": _summary(metrics)})
    metrics["onnx"] = card["onnx"]
    _confusion_png(out_dir / "confusion.png", np.asarray(ensemble["confusion"], dtype=np.int64), classes,
                   title=_title(defn.name, trial.number, len(seeds), info))
    metrics["files"] = [f for f in _FILES if (out_dir / f).is_file() or f == "metrics.json"]
    atomic.write_json(out_dir / "metrics.json", metrics)
    _log.info("final: wrote %s (%s)", out_dir, ", ".join(metrics["files"]))
    if test["reads"] > 1:
        _log.warning("final: the test labels of %s have now been read %d times (%s): scores of later reads are no "
                     "longer untouched by choices made after seeing earlier ones", defn.name, test["reads"],
                     run_dir / TEST_READS)
    return metrics


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    """The card's short form of metrics.json."""
    point = {name: {k: m["test"][name][k] for k in ("mean", "std", "ci95")} for name in METRICS}
    return {"test_images": m["test_set"]["images"], "classes_absent": m["classes_absent"],
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


def finalize(defn: StudyDef, study: optuna.Study, *, run_dir: Path, device: str, data_source: str | None = None,
             cache_dir: Path | None = None, command: str = "finalize") -> dict[str, Any]:
    """Finalize the best COMPLETE trial into ``<run_dir>/best/`` and attach the files to the dashboard."""
    trial = best_trial(study)
    out_dir = Path(run_dir) / "best"
    metrics = finalize_trial(defn, study, trial, out_dir=out_dir, run_dir=Path(run_dir), device=device,
                             command=command, data_source=data_source, cache_dir=cache_dir)
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


def _cv_line(m: dict[str, Any]) -> str:
    cv = m["cv"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    chosen = "best-epoch" if cv.get("objective", "best_epoch") == "best_epoch" else "last-epoch"
    return (f"cross-validated {cv['metric']} ({cv.get('folds')} folds): {fmt(cv['value'])}, the {chosen} value the "
            f"study optimised (best epoch {cv.get('best_epoch')}: {fmt(cv.get('best_epoch_value'))}; last epoch "
            f"{cv.get('epochs_run')}: {fmt(cv.get('last_epoch_value'))})")


def format_table(m: dict[str, Any]) -> str:
    """The readable summary ``finalize`` prints: model vs baselines vs humans, with 95 % intervals."""
    data = m["data"]
    absent = m.get("classes_absent") or []
    k = len(m["classes"])
    lines = [f"data: {data['note']} — {data['source']}", *filter(None, [twin_sentence(data)]),
             f"study {m['study']}, trial {m['trial']}: {_cv_line(m)}",
             f"retrained on {data['train_images']} images, {len(m['seeds'])} seeds: {m.get('epochs_reason', '')}",
             f"test set: {m['test_set']['images']} images in {m['test_set'].get('groups', '?')} duplicate groups; "
             f"macro-F1 averages all {k} classes" + (
                 f"; {', '.join(absent)} has no test image (F1 0, no recall), so macro-F1 here is at most "
                 f"{(k - len(absent)) / k:.3f}" if absent else ""),
             "mean [95 % bootstrap interval over duplicate groups]; ± = std over seeds", ""]
    reads = (m.get("test_reads") or {}).get("count")
    if isinstance(reads, int) and reads > 1:
        lines.insert(1, f"WARNING: the test labels have been read {reads} times ({m['test_reads']['log']}); "
                        "only the first read is untouched by choices made after seeing a test score")
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

