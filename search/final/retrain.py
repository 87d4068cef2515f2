"""Which trial the final step takes, for how many epochs, and its retrain on the whole training pool.

The retrain follows the trial's recipe exactly (optimiser, schedule over the recipe's full budget,
augmentation, precision, batch size) for the epoch count the study's objective scored: the best
epoch's, or the whole budget (:func:`retrain_epochs`). The seed nets named in ``final.baseline_presets``
are retrained the same way. Nothing here reads the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import anklealign
from search.run.data import DataContext
from search.run.queue import preset_trial
from search.run.train import predict_proba, train_model
from search.study.definition import StudyDef, apply_overrides, study_def_from_dict
from search.study.errors import SearchError
from search.study.records import TrialRecord
from space import TrialCfg
from space.search_space import SearchSpace

__all__ = ["reference_plan", "best_trial", "pick_trial", "with_final_overrides", "retrain_epochs", "Trained", "retrain",
           "retrain_presets", "probabilities"]

_log = logging.getLogger(__name__)


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


def with_final_overrides(defn: StudyDef, overrides: Sequence[str]) -> StudyDef:
    """The recorded definition with a command's ``--set final.*`` overrides (run-only keys) applied."""
    final = [o for o in overrides if o.strip().startswith("final.")]
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
class Trained:
    """Models trained on the whole pool, before anything looked at the test set."""

    name: str
    cfg: TrialCfg
    ds: anklealign.Dataset
    epochs: int
    models: list[torch.nn.Module]
    epochs_from: str
    losses: list[tuple[float, ...]]  # per seed, the mean training loss of each epoch


def retrain(name: str, cfg: TrialCfg, ds: anklealign.Dataset, *, epochs: int, seeds: list[int],
             device: torch.device, epochs_from: str) -> Trained:
    images, labels = ds.train.images.to(device), ds.train.labels.to(device)
    models, losses = [], []
    for i, seed in enumerate(seeds):
        _log.info("final: %s: training seed %d/%d (seed %d), %d epochs on %d images", name, i + 1, len(seeds),
                  seed, epochs, len(labels))
        done = train_model(images, labels, cfg, epochs=epochs, seed=seed, num_classes=len(ds.classes))
        models.append(done.model)
        losses.append(done.losses)
    return Trained(name, cfg, ds, epochs, models, epochs_from, losses)


def reference_plan(defn: StudyDef, study: optuna.Study) -> tuple[list[str], dict[str, Any]]:
    """Which of ``final.baseline_presets`` the final step retrains, and the others with their CV scores.

    The default configuration always (the comparison that says what the search added), and the
    ``final.references`` seed nets with the best cross-validated values in the study (0: every listed one). A
    seed net that is not retrained is reported from its CV score, said as such: retraining all of them cost
    more than the search on larger data.
    """
    listed = list(defn.final.baseline_presets)
    cv: dict[str, float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        name = TrialRecord.of(t).preset
        if name in listed and t.value is not None and t.value > cv.get(name, float("-inf")):
            cv[name] = t.value
    nets = [n for n in listed if n != "default"]
    if defn.final.references and len(nets) > defn.final.references:
        ranked = sorted(nets, key=lambda n: (-cv.get(n, float("-inf")), listed.index(n)))
        keep = set(ranked[:defn.final.references])
        rest = {n: {"kind": "preset", "cv_value": cv.get(n), "cv_rank": ranked.index(n) + 1,
                    "skipped": (f"not retrained: cross-validated {defn.study.metric} {cv[n]:.3f}, rank "
                                f"{ranked.index(n) + 1} of {len(nets)} seed nets (only the best "
                                f"{defn.final.references} are retrained; final.references=0 retrains all)"
                                if n in cv else "not retrained: no complete trial in the study")}
                for n in nets if n not in keep}
        return [n for n in listed if n == "default" or n in keep], rest
    return listed, {}


def retrain_presets(defn: StudyDef, study: optuna.Study, ctx: DataContext, *, seeds: list[int],
             device: torch.device, reuse: Trained | None = None) -> tuple[list[Trained], dict[str, Any]]:
    """Retrain the presets of :func:`reference_plan` like the best trial; the others are reported.

    ``reuse``: models already trained with these seeds (the exported trial's); a preset with the same
    recipe and epochs takes them instead of training again (the exported default configuration).
    """
    space = SearchSpace.from_dict(dict(defn.space))
    num_classes = ctx.num_classes
    names, skipped = reference_plan(defn, study)
    trained = []
    for name in names:
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
        recorded = TrialRecord.of(runs[0]).config if runs else None
        if recorded:  # exactly what ran in the study (a study made by an older version may differ)
            cfg = TrialCfg.from_dict(recorded)
        else:  # built as enqueueing built it
            cfg, moved = preset_trial(name, space, defn.training.max_epochs, num_classes=num_classes,
                                      traits=ctx.default_traits())
            if moved:
                _log.info("final: preset %s moved into the study's space: %s", name, ", ".join(moved))
        if reuse is not None and reuse.cfg == cfg and reuse.epochs == epochs:
            _log.info("final: %s: the exported trial's %d seeds, same recipe and epochs: not trained again", name,
                      len(reuse.models))
            trained.append(replace(reuse, name=name, epochs_from=source))
            continue
        trained.append(retrain(name, cfg, ctx.dataset(cfg.input), epochs=epochs, seeds=seeds, device=device,
                                epochs_from=source))
    return trained, skipped


def probabilities(run: Trained, images: torch.Tensor, device: torch.device) -> np.ndarray:
    x = images.to(device)
    return np.stack([predict_proba(m, x).numpy() for m in run.models])  # (S, M, K)
