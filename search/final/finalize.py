"""The final step: retrain the best trial with several seeds, score it once on the test set, export it.

Order matters and is the point of this module: every model (the best config and the baseline
presets, each with ``final.seeds`` seeds on the whole training pool) is trained first; only then is
the test split read, by :func:`search.final.testset.read_test`, the one place in the search package that touches
``ds.test`` content, and each such read is logged in the run folder's ``test_reads.jsonl``.
Test-set scores never feed back into any choice: the exported model (the ensemble of the seeds)
was fixed before.

The retrain is :mod:`search.final.retrain`'s. Writes ``<out_dir>/``: model.pt, model.onnx,
model_card.json (:mod:`search.final.export`), metrics.json (:mod:`search.final.scoring`) and
confusion.png (:mod:`search.final.table`).
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from search.final.annotators import annotator_agreement, answers_without_images
from search.final.calibration import apply_temperature, reliability_png
from search.final.card import card_summary, confusion_png, confusion_title
from search.final.export import save_model
from search.final.gain import net_word, search_gain
from search.final.retrain import (
    Trained,
    best_trial,
    probabilities,
    reference_plan,
    retrain,
    retrain_epochs,
    retrain_presets,
)
from search.final.scoring import baselines, score_seeds
from search.final.selection import Selection, select
from search.final.testset import TEST_READS, complete_test_read, read_test, reads_block
from search.final.trust import at_bound, fit_calibration, trust_blocks
from search.run.data import DataContext, describe
from search.run.train import resolve_device
from search.study import atomic
from search.study.definition import StudyDef
from search.study.errors import SearchError
from search.study.records import StudyRecord, TrialRecord
from search.study.seeds import final_seed
from space import SEED_NETS, TrialCfg

__all__ = ["finalize", "finalize_trial"]

_log = logging.getLogger(__name__)

_FILES = ("model.pt", "model.onnx", "model_card.json", "metrics.json", "confusion.png", "reliability.png")


def _cv_block(defn: StudyDef, trial: FrozenTrial, record: TrialRecord) -> dict[str, Any]:
    """The exported trial's cross-validated scores: the one the study optimised and the others."""
    return {"metric": defn.study.metric, "objective": defn.study.objective, "value": trial.value,
            "best_epoch_value": record.cv_best, "best_epoch": record.best_epoch,
            "last_epoch_value": record.cv_last, "last_mean_value": record.cv_last_mean,
            "epochs_run": record.epochs_run, "folds": defn.cv.folds}


def _retrain_member(t: FrozenTrial, defn: StudyDef, ds: Any, seeds: list[int], dev: Any) -> Trained:
    record = TrialRecord.of(t)
    cfg = TrialCfg.from_dict(record.config or {})
    epochs, why = retrain_epochs(record, objective=defn.study.objective, max_epochs=cfg.train.max_epochs,
                                 number=t.number)
    return retrain(f"trial {t.number}", cfg, ds, epochs=epochs, seeds=seeds, device=dev, epochs_from=why)


def finalize_trial(defn: StudyDef, study: optuna.Study, trial: FrozenTrial, *, out_dir: Path, run_dir: Path,
                   device: str, command: str = "finalize", data_source: str | None = None,
                   cache_dir: Path | None = None, data: DataContext | None = None,
                   selection: Selection | None = None, replace: bool = False) -> dict[str, Any]:
    """Retrain ``trial`` (and the other members of ``selection``) on the whole pool with ``final.seeds`` seeds,
    score the seeds and the exported ensemble on the test set next to every baseline, export it.

    Args:
        out_dir: where the model and its reports go (``<run_dir>/best`` for the final step).
        run_dir: the study's run folder (``test_reads.jsonl`` lives there).
        command: what asked for it, for the test-read log (``finalize``, ``run``, ``export``).
        data: the study's data as ``run`` loaded them (reused: nothing is decoded twice); else
            ``data_source`` (or the definition's) is loaded here.
        selection: the top-k members and bias-corrected estimate (:func:`search.final.selection.select`);
            None exports ``trial`` alone.
        replace: ``out_dir`` is the run's own ``best/``: write a new folder and swap it in whole.

    Returns:
        The metrics written to ``<out_dir>/metrics.json`` (plus ``"files"``).
    """
    dev = resolve_device(device)
    record = TrialRecord.of(trial)
    cfg = TrialCfg.from_dict(record.config or {})
    epochs, epochs_why = retrain_epochs(record, objective=defn.study.objective,
                                        max_epochs=cfg.train.max_epochs, number=trial.number)
    ctx = data or DataContext(source=data_source or defn.data.source or None, device=dev, folds=defn.cv.folds,
                              seed=defn.study.seed, cache_dir=cache_dir, default_input=cfg.input,
                              mirrors=defn.data.mirrors)
    ds = ctx.dataset(cfg.input)
    recorded = StudyRecord.of(study).data_fingerprint
    if recorded and recorded != ds.fingerprint:
        raise SearchError(f"study {defn.name!r} was searched on other data (fingerprint {recorded[:12]}, this "
                          f"source {ds.fingerprint[:12]}); point --data at the study's source")
    info = describe(ds)
    if info["test_images"] == 0:  # a count, not content: the test split itself is still unread
        raise SearchError(f"{info['source']} has no test images: there is nothing to score the final model on")
    seeds = [final_seed(defn.study.seed, i) for i in range(defn.final.seeds)]
    _log.info("final: trial %d on %s: %d seeds x %s", trial.number, info["note"], len(seeds), epochs_why)

    selection = selection or Selection(members=[trial], notes=["one trial, as asked"])
    train_labels = ds.train.labels.cpu().numpy()
    member_records = [TrialRecord.of(t) for t in selection.members]
    oofs = [r.oof_probs(len(ds.classes)) for r in member_records]
    usable = all(o is not None and len(o) == len(train_labels) for o in oofs)
    weights = selection.weights  # each member trial's share of the exported average
    calibration = fit_calibration(np.average(oofs, axis=0, weights=weights) if usable else None, train_labels,
                                  enabled=defn.final.calibrate, exact=all(r.oof_exact for r in member_records))
    if calibration.get("warning"):
        _log.warning("final: calibration: %s", calibration["warning"])
    # The exported model's out-of-fold probabilities (calibrated like its outputs): the reference of the
    # label-shift estimate here and in 'search score'.
    reference = (apply_temperature(np.average(oofs, axis=0, weights=weights), calibration["temperature"])
                 if usable else None)
    _log.info("final: plan: %s", _plan(defn, study, selection, len(seeds)))
    # 1. Train everything. Nothing so far has read the test split.
    best = retrain(f"trial {trial.number}", cfg, ds, epochs=epochs, seeds=seeds, device=dev, epochs_from=epochs_why)
    others = [_retrain_member(t, defn, ds, seeds, dev) for t in selection.members[1:]]
    presets, skipped = retrain_presets(defn, study, ctx, seeds=seeds, device=dev, reuse=best)

    # 2. The test set, read here for the first time (and logged as a read).
    test = read_test(ds, run_dir=run_dir, why={"command": command, "study": defn.name, "trial": trial.number,
                                                "out_dir": str(out_dir)})
    n_boot, boot_seed = defn.final.bootstrap, defn.study.seed
    classes = list(ds.classes)
    common = {"classes": classes, "groups": test["groups"], "n_boot": n_boot, "seed": boot_seed}
    probs = probabilities(best, test["images"], dev)
    scores = score_seeds(probs, test["labels"], test["votes"], **common)
    members = np.concatenate([probs, *(probabilities(o, test["images"], dev) for o in others)])
    model_weights = np.repeat(np.asarray(weights) / len(seeds), len(seeds))  # each network's share
    raw = np.average(members, axis=0, weights=model_weights)[None]  # (1, M, K): before calibration
    ens_probs = apply_temperature(raw[0], calibration["temperature"])[None]  # what the exported model outputs
    ensemble = score_seeds(ens_probs, test["labels"], test["votes"], **common)
    prior = np.bincount(train_labels, minlength=len(ds.classes)) / len(train_labels)
    trust = trust_blocks(raw, test["labels"], test["votes"], calibration=calibration, train_prior=prior,
                         classes=list(ds.classes), groups=test["groups"], n_boot=n_boot, seed=boot_seed,
                         label_shift=defn.final.label_shift, votes_eval=defn.final.votes,
                         per_class=defn.final.per_class,
                         oof=(reference, train_labels) if reference is not None else None,
                         oof_groups=ds.train.groups.cpu().numpy(), class_weighting=cfg.train.class_weighting)
    base = baselines(test["labels"], test["votes"], ds.train.labels.cpu().numpy(), **common)
    preset_probs = {}
    for run in presets:
        p_test = read_test(run.ds, run_dir=None)  # the same read, at the seed net's input size
        if p_test["ids"] != test["ids"]:
            raise SearchError(f"preset {run.name}: its test images differ from the model's (data changed?)")
        # Like the exported model, each baseline is the average of its seeds' probabilities: scoring it as
        # the mean of single seeds would hand the exported model the ensemble's gain (~0.02 macro-F1 here).
        preset_probs[run.name] = probabilities(run, p_test["images"], dev).mean(0, keepdims=True)
        base[run.name] = {"kind": "preset", "description": _preset_words(run.name),
                          "seeds": seeds, "epochs": run.epochs, "epochs_from": run.epochs_from,
                          "config": run.cfg.to_dict(),
                          **score_seeds(preset_probs[run.name], test["labels"], test["votes"], **common)}
    base.update(skipped)
    gain = search_gain(ens_probs, preset_probs, test["labels"], random=base.get("stratified_random"),
                       metric=defn.study.metric, groups=test["groups"], n_boot=n_boot, seed=boot_seed,
                       model_score=ensemble, seed_nets=SEED_NETS, net_word=net_word(info))
    humans = annotator_agreement(test["annotator_labels"], annotators=ds.annotators, num_classes=len(classes),
                                 model_predictions={"model": probs.argmax(-1), "ensemble": ens_probs.argmax(-1)},
                                 constants=answers_without_images(prior, classes, test["labels"]), n_boot=n_boot,
                                 seed=boot_seed)
    metrics: dict[str, Any] = {
        "data": info, "study": defn.name, "trial": trial.number,
        "cv": _cv_block(defn, trial, TrialRecord.of(trial)), "selection": selection.block(),
        "exported": _exported_words(selection, len(seeds)),
        "config": cfg.to_dict(), "seeds": seeds, "epochs": epochs, "recipe_epochs": cfg.train.max_epochs,
        "epochs_reason": epochs_why, "train_loss": [list(x) for x in best.losses], "classes": classes,
        "classes_absent": scores["classes_absent"],
        "test_set": {"images": len(test["labels"]), "groups": scores["n_groups"], "ties": test["ties"],
                     "class_counts": {c: int((test["labels"] == k).sum()) for k, c in enumerate(classes)}},
        "test_reads": reads_block(test["reads"]),
        "test": scores, "ensemble": ensemble, "baselines": base, "annotators": humans, "search_gain": gain,
        **trust,
        "train_class_counts": {c: int((ds.train.labels == k).sum()) for k, c in enumerate(classes)},
        **({"out_of_fold": {"probs": np.round(reference, 4).tolist(), "labels": train_labels.tolist(),
                            "note": "the exported model's out-of-fold probabilities (calibrated) and the training "
                                    "labels: the reference of the label-shift estimate"}}
           if reference is not None else {}),
        "bootstrap": {"resamples": n_boot, "seed": boot_seed,
                      "interval": "95 % BCa (percentile where BCa is undefined), scipy.stats.bootstrap over the "
                                  "test set's duplicate groups, seed-mean metric"},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }

    # 3. Export the ensemble (fixed in step 1) and write the reports. The run's own best/ is written into a staging
    # folder that replaces it only once every file is whole, so a crash or a full disk leaves the previous outputs
    # as they were; a folder of the user's (export --to) gets each file atomically, its other files untouched.
    stage = _staging(out_dir) if replace else out_dir
    try:
        stage.mkdir(parents=True, exist_ok=True)
        runs = [best, *others]
        card = save_model(stage, [m for r in runs for m in r.models], cfg, classes=classes,
                          check_images=test["images"],
                          member_trials=[r.cfg for r in runs for _ in r.models] if others else None,
                          temperature=calibration["temperature"],
                          weights=model_weights.tolist() if others else None,
                          card={"data": info, "study": defn.name, "trial": trial.number, "cv": metrics["cv"],
                                "selection": metrics["selection"], "exported": metrics["exported"],
                                "calibration": {k: v for k, v in calibration.items() if k != "oof"},
                                "seeds": seeds, "epochs": epochs, "epochs_reason": epochs_why,
                                "test_reads": metrics["test_reads"], "metrics": card_summary(metrics)})
        for run in presets:  # kept for 'search score' on other labelled folders (weights only)
            save_model(stage / "baselines" / run.name, run.models, run.cfg, classes=classes, onnx=False,
                       card={"data": info, "study": defn.name, "preset": run.name, "seeds": seeds,
                             "epochs": run.epochs})
        metrics["onnx"] = card["onnx"]
        confusion_png(stage / "confusion.png", np.asarray(ensemble["confusion"], dtype=np.int64), classes,
                       title=confusion_title(defn.name, trial.number, len(seeds), info))
        if "calibration" in trust:
            cal = trust["calibration"]["scored"]
            reliability_png(stage / "reliability.png", cal["before"], cal["after"],
                            title=f"{defn.name}: test set, temperature {calibration['temperature']:.2f} "
                                  f"(fitted on out-of-fold predictions)"
                                  + (" AT ITS BOUND: not calibrated" if at_bound(calibration["temperature"]) else "")
                                  + f"\n{info['note']}")
        metrics["files"] = [f for f in _FILES if (stage / f).is_file() or f == "metrics.json"]
        atomic.write_json(stage / "metrics.json", metrics)
    except OSError as exc:
        if replace:
            shutil.rmtree(stage, ignore_errors=True)
        raise SearchError(f"cannot write the final step's outputs next to {out_dir}: {exc.strerror or exc}"
                          f"{' (the disk is full)' if exc.errno == errno.ENOSPC else ''}; the previous outputs in "
                          f"{out_dir} are unchanged, the trials are saved, and the same command runs the final "
                          "step again") from None
    if replace:
        _replace_folder(stage, out_dir)
    complete_test_read(run_dir, test["read_id"])
    _log.info("final: wrote %s (%s)", out_dir, ", ".join(metrics["files"]))
    if test["reads"] > 1:
        _log.warning("final: the test labels of %s have now been read %d times (%s): scores of later reads are no "
                     "longer untouched by choices made after seeing earlier ones", defn.name, test["reads"],
                     run_dir / TEST_READS)
    return metrics


def _staging(out_dir: Path) -> Path:
    """An empty hidden folder beside ``out_dir`` for the outputs being written."""
    stage = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(stage, ignore_errors=True)  # what a killed final step left
    stage.mkdir(parents=True)
    return stage


def _replace_folder(stage: Path, out_dir: Path) -> None:
    """``out_dir`` becomes ``stage``: two renames, so it is at every moment the old folder, the new one, or absent
    (then the final step has not finished and runs again)."""
    old = out_dir.parent / f".{out_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    stage.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _plan(defn: StudyDef, study: optuna.Study, selection: Selection, seeds: int) -> str:
    """What the final step will train and about how long, from the trials' own epoch times (all folds of an
    epoch train on (folds - 1) x the pool, so one epoch on the whole pool takes about 1 / (folds - 1) of it)."""
    names, rest = reference_plan(defn, study)
    by_preset = {TrialRecord.of(t).preset: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    exported_default = TrialRecord.of(selection.members[0]).preset == "default"
    jobs = [(f"trial {t.number}", t) for t in selection.members]
    jobs += [(n, by_preset.get(n)) for n in names if not (n == "default" and exported_default)]
    per_epoch = [float(np.mean(r.epoch_seconds)) / max(1, defn.cv.folds - 1)
                 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if (r := TrialRecord.of(t)).epoch_seconds]
    typical = float(np.median(per_epoch)) if per_epoch else None
    seconds, epochs = 0.0, 0
    for _, t in jobs:
        r = TrialRecord.of(t) if t is not None else None
        e = (r.epochs_run or defn.training.max_epochs) if r is not None else defn.training.max_epochs
        own = float(np.mean(r.epoch_seconds)) / max(1, defn.cv.folds - 1) if r is not None and r.epoch_seconds else None
        epochs = max(epochs, e)
        seconds += seeds * e * (own or typical or 0.0)
    text = (f"{len(jobs)} configuration(s) x {seeds} seed(s), up to {epochs} epochs each: "
            + ", ".join(n for n, _ in jobs))
    if rest:
        text += f"; {len(rest)} seed net(s) reported from their CV scores, not retrained (final.references)"
    if typical is not None:
        text += f"; about {seconds / 60:.1f} min from the trials' own epoch times"
    return text


def _preset_words(name: str) -> str:
    return ("the search's default configuration without search, retrained like the model (its seeds averaged)"
            if name == "default" else f"seed net {name}, retrained like the model (its seeds averaged)")


def _exported_words(selection: Selection, seeds: int) -> str:
    trials = ", ".join(str(t.number) for t in selection.members)
    shares = ("weighted " + "/".join(f"{w:.2f}" for w in selection.weights) + " "
              if selection.greedy is not None else "")
    what = (f"the {shares}average of {len(selection.members) * seeds} networks: trials {trials} x {seeds} seeds"
            if len(selection.members) > 1 else f"the average of trial {trials}'s {seeds} seeds")
    return f"{what}; chosen by out-of-fold evidence, never the test set: {selection.block()['why']}"


def finalize(defn: StudyDef, study: optuna.Study, *, run_dir: Path, device: str, data_source: str | None = None,
             cache_dir: Path | None = None, command: str = "finalize",
             data: DataContext | None = None) -> dict[str, Any]:
    """Finalize the best COMPLETE trial (or, with ``final.keep_default``, the default configuration when the
    best is not distinguishably better out of fold) and its top-k companions into ``<run_dir>/best/``."""
    trial = best_trial(study)
    out_dir = Path(run_dir) / "best"
    dev = resolve_device(device)
    cfg = TrialCfg.from_dict(TrialRecord.of(trial).config or {})
    data = data or DataContext(source=data_source or defn.data.source or None, device=dev, folds=defn.cv.folds,
                               seed=defn.study.seed, cache_dir=cache_dir, default_input=cfg.input,
                              mirrors=defn.data.mirrors)
    train = data.dataset(cfg.input).train
    selection = select(study, trial, top_k=defn.final.top_k, labels=train.labels.cpu().numpy(),
                       groups=train.groups.cpu().numpy(), metric=defn.study.metric, num_classes=data.num_classes,
                       n_boot=defn.final.bootstrap, seed=defn.study.seed, keep_default=defn.final.keep_default,
                       ensemble=defn.final.ensemble)
    trial = selection.members[0]  # the winner, or the default configuration when the winner is not better
    return finalize_trial(defn, study, trial, out_dir=out_dir, run_dir=Path(run_dir), device=device,
                          command=command, data=data, selection=selection, replace=True)


