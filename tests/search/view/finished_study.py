"""A finished study like the runner leaves it, built without training (for report/dashboard tests).

Trials are asked from an in-memory study with the real search space (seed nets enqueued first,
then random configs), given made-up learning curves and the user attributes the objective sets,
then copied into a SQLite study at ``<out>/<name>/study.db`` in one go.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.run.queue import preset_trial
from search.study.definition import load_study_def
from space import count_macs, count_params
from space.search_space import SearchSpace, suggest, to_params

TWIN = {"difficulty": "realistic",
        "cv": {"ceiling_macro_f1": 0.892, "ceiling_accuracy": 0.893, "label_noise": 0.26, "chance_macro_f1": 0.333},
        "test": {"ceiling_macro_f1": 0.61, "ceiling_accuracy": 0.88, "label_noise": 0.28, "chance_macro_f1": 0.27}}
DATA = {"kind": "anklealign", "synthetic": True, "source": "synthetic twin (seed 0, scale 1.0)", "twin": TWIN,
        "fingerprint": "0123456789abcdef" * 4, "classes": ["pronation", "neutral", "supination"],
        "train_images": 480, "test_images": 49,
        "note": "SYNTHETIC TWIN of the AnkleAlign data (generated, not real photographs)"}
PRESETS = ("baseline", "net0", "net3", "net6")
EPOCHS = 6


def build_study(out: Path, *, name: str = "anklealign", n_trials: int = 12, seed: int = 0) -> optuna.Study:
    """A study of ``n_trials`` finished trials: seed nets, complete, pruned and one failed trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    defn = load_study_def("anklealign", [f"study.name={name}",
                                         f"training.max_epochs={EPOCHS}"])
    space = SearchSpace.from_dict(dict(defn.space))
    mem = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for p in PRESETS[:n_trials]:
        mem.enqueue_trial(to_params(preset_trial(p, space, EPOCHS, num_classes=3)[0], space), user_attrs={"preset": p})
    rng = random.Random(seed)
    for i in range(n_trials):
        trial = mem.ask()
        cfg = suggest(trial, space, max_epochs=EPOCHS)
        for key, value in {"config": cfg.to_dict(), "seed": 1000 + i, "params_count": count_params(cfg.model),
                           "macs": count_macs(cfg.model, cfg.input.image_size), "device": "cpu"}.items():
            trial.set_user_attr(key, value)
        ceiling = 0.35 + 0.5 * rng.random()
        pruned_at = 2 if i % 3 == 2 else None  # every third trial is pruned after 3 epochs
        failed = i == n_trials - 1 and n_trials > 2
        scores = []
        for epoch in range(EPOCHS if pruned_at is None else pruned_at + 1):
            scores.append(ceiling * (1 - math.exp(-(epoch + 1) / 2)) + 0.02 * rng.random())
            trial.report(scores[-1], epoch)
        best = max(range(len(scores)), key=scores.__getitem__)
        for key, value in {"best_epoch": best + 1, "cv_best": scores[best], "cv_last": scores[-1],
                           "epochs_run": len(scores),
                           "epoch_seconds": [0.5] * len(scores), "seconds": 0.5 * len(scores) + 0.1}.items():
            trial.set_user_attr(key, value)
        if failed:
            trial.set_user_attr("fail_reason", "RuntimeError: made-up failure")
            mem.tell(trial, state=TrialState.FAIL)
        elif pruned_at is not None:
            trial.set_user_attr("prune_reason", f"pruned at epoch {pruned_at + 1} (validation macro_f1 "
                                                f"{scores[-1]:.4f})")
            mem.tell(trial, state=TrialState.PRUNED)
        else:
            mem.tell(trial, max(scores))

    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}",
                                direction="maximize")
    study.add_trials(mem.get_trials(deepcopy=False))
    study.set_user_attr("definition", defn.to_dict())
    study.set_user_attr("definition_hash", defn.definition_hash())
    study.set_user_attr("data", DATA)
    return study


def _pt(mean: float, lo: float, hi: float) -> dict:
    return {"mean": mean, "std": 0.03, "ci95": [lo, hi], "per_seed": [mean] * 2}


# The shape search.final.finalize writes (abridged): test = model (seed mean), ensemble = exported model.
METRICS_JSON = {
    "data": DATA, "study": "anklealign", "trial": 0, "seeds": [1, 2], "epochs": 6,
    "test_set": {"images": 49, "ties": 2, "class_counts": {"pronation": 4, "neutral": 42, "supination": 3}},
    "test": {"accuracy": _pt(0.83, 0.71, 0.92), "balanced_accuracy": _pt(0.64, 0.5, 0.78),
             "macro_f1": _pt(0.61, 0.45, 0.75),
             "agreement": {"vote_probability": _pt(0.7, 0.6, 0.8)}, "n_images": 49, "n_seeds": 2,
             "per_class": {"neutral": {"support": 42, "recall": 0.9}}},
    "ensemble": {"accuracy": _pt(0.85, 0.73, 0.94), "balanced_accuracy": _pt(0.66, 0.5, 0.8),
                 "macro_f1": _pt(0.63, 0.47, 0.77)},
    "baselines": {"train_majority": {"description": "always neutral", "predicts": "neutral",
                                     "accuracy": _pt(0.857, 0.76, 0.94), "macro_f1": _pt(0.31, 0.29, 0.32)},
                  "net6": {"kind": "preset", "macro_f1": _pt(0.42, 0.3, 0.55)},
                  "net3": {"skipped": "out of memory"}},
    "annotators": {"available": True, "n_annotators": 5, "accuracy": {"mean": 0.7, "min": 0.55, "max": 0.9},
                   "model_rank": {"model": {"accuracy": 0.83, "rank": 2, "of": 6}}},
}
