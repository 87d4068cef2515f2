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
import logging
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from search.final.export import save_model
from search.final.retrain import best_trial, probabilities, retrain, retrain_epochs, retrain_presets
from search.final.scoring import annotator_agreement, baselines, score_seeds
from search.final.table import card_summary, confusion_png, confusion_title, format_table
from search.final.testset import TEST_READS, read_test, reads_block
from search.run.data import DataContext, describe
from search.run.train import resolve_device
from search.study import atomic
from search.study.definition import StudyDef
from search.study.errors import SearchError
from search.study.notes import attach_final
from search.study.records import StudyRecord, TrialRecord
from search.study.seeds import final_seed
from space import TrialCfg

__all__ = ["finalize", "finalize_trial"]

_log = logging.getLogger(__name__)

_FILES = ("model.pt", "model.onnx", "model_card.json", "metrics.json", "confusion.png")


def _cv_block(defn: StudyDef, trial: FrozenTrial, record: TrialRecord) -> dict[str, Any]:
    """The trial's cross-validated scores: the one the study optimised, and both of them."""
    return {"metric": defn.study.metric, "objective": defn.study.objective, "value": trial.value,
            "best_epoch_value": record.cv_best, "best_epoch": record.best_epoch,
            "last_epoch_value": record.cv_last, "epochs_run": record.epochs_run, "folds": defn.cv.folds}


def finalize_trial(defn: StudyDef, study: optuna.Study, trial: FrozenTrial, *, out_dir: Path, run_dir: Path,
                   device: str, command: str = "finalize", data_source: str | None = None,
                   cache_dir: Path | None = None, data: DataContext | None = None) -> dict[str, Any]:
    """Retrain ``trial`` on the whole pool with ``final.seeds`` seeds, score it on the test set, export it.

    Args:
        out_dir: where the model and its reports go (``<run_dir>/best`` for the final step).
        run_dir: the study's run folder (``test_reads.jsonl`` lives there).
        command: what asked for it, for the test-read log (``finalize``, ``run``, ``export``).
        data: the study's data as ``run`` loaded them (reused: nothing is decoded twice); else
            ``data_source`` (or the definition's) is loaded here.

    Returns:
        The metrics written to ``<out_dir>/metrics.json`` (plus ``"files"``).
    """
    dev = resolve_device(device)
    record = TrialRecord.of(trial)
    cfg = TrialCfg.from_dict(record.config or {})
    epochs, epochs_why = retrain_epochs(record, objective=defn.study.objective,
                                        max_epochs=cfg.train.max_epochs, number=trial.number)
    ctx = data or DataContext(source=data_source or defn.data.source or None, device=dev, folds=defn.cv.folds,
                              seed=defn.study.seed, cache_dir=cache_dir, default_input=cfg.input)
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

    # 1. Train everything. Nothing so far has read the test split.
    best = retrain(f"trial {trial.number}", cfg, ds, epochs=epochs, seeds=seeds, device=dev, epochs_from=epochs_why)
    presets, skipped = retrain_presets(defn, study, ctx, seeds=seeds, device=dev)

    # 2. The test set, read here for the first time (and logged as a read).
    test = read_test(ds, run_dir=run_dir, why={"command": command, "study": defn.name, "trial": trial.number,
                                                "out_dir": str(out_dir)})
    n_boot, boot_seed = defn.final.bootstrap, defn.study.seed
    classes = list(ds.classes)
    common = {"classes": classes, "groups": test["groups"], "n_boot": n_boot, "seed": boot_seed}
    probs = probabilities(best, test["images"], dev)
    scores = score_seeds(probs, test["labels"], test["votes"], **common)
    ens_probs = probs.mean(0, keepdims=True)  # (1, M, K): what the exported ensemble outputs
    ensemble = score_seeds(ens_probs, test["labels"], test["votes"], **common)
    base = baselines(test["labels"], test["votes"], ds.train.labels.cpu().numpy(), **common)
    for run in presets:
        p_test = read_test(run.ds, run_dir=None)  # the same read, at the seed net's input size
        if p_test["ids"] != test["ids"]:
            raise SearchError(f"preset {run.name}: its test images differ from the model's (data changed?)")
        base[run.name] = {"kind": "preset", "description": f"seed net {run.name}, retrained like the model",
                          "seeds": seeds, "epochs": run.epochs, "epochs_from": run.epochs_from,
                          "config": run.cfg.to_dict(),
                          **score_seeds(probabilities(run, p_test["images"], dev), test["labels"], test["votes"],
                                        **common)}
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
        "test_reads": reads_block(test["reads"]),
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
                            "test_reads": metrics["test_reads"], "metrics": card_summary(metrics)})
    metrics["onnx"] = card["onnx"]
    confusion_png(out_dir / "confusion.png", np.asarray(ensemble["confusion"], dtype=np.int64), classes,
                   title=confusion_title(defn.name, trial.number, len(seeds), info))
    metrics["files"] = [f for f in _FILES if (out_dir / f).is_file() or f == "metrics.json"]
    atomic.write_json(out_dir / "metrics.json", metrics)
    _log.info("final: wrote %s (%s)", out_dir, ", ".join(metrics["files"]))
    if test["reads"] > 1:
        _log.warning("final: the test labels of %s have now been read %d times (%s): scores of later reads are no "
                     "longer untouched by choices made after seeing earlier ones", defn.name, test["reads"],
                     run_dir / TEST_READS)
    return metrics


def finalize(defn: StudyDef, study: optuna.Study, *, run_dir: Path, device: str, data_source: str | None = None,
             cache_dir: Path | None = None, command: str = "finalize",
             data: DataContext | None = None) -> dict[str, Any]:
    """Finalize the best COMPLETE trial into ``<run_dir>/best/`` and attach the files to the dashboard."""
    trial = best_trial(study)
    out_dir = Path(run_dir) / "best"
    metrics = finalize_trial(defn, study, trial, out_dir=out_dir, run_dir=Path(run_dir), device=device,
                             command=command, data_source=data_source, cache_dir=cache_dir, data=data)
    try:
        attach_final(study, trial.number, Path(run_dir), [out_dir / f for f in metrics["files"]],
                     "```\n" + format_table(metrics) + "\n```")
    except Exception as exc:  # the files are written; a dashboard problem must not undo that
        _log.warning("final: could not attach the files to the dashboard: %s", exc)
    return metrics


