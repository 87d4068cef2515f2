"""The final retrain is the selected trial's recipe: same schedule epoch by epoch, stopped where it was scored."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from search.final.retrain import retrain_epochs
from search.run.train import train_model
from search.study.errors import SearchError
from search.study.records import TrialRecord
from space import PRESET_TRIALS


def _recipe(max_epochs: int = 6):  # noqa: ANN202
    cfg = PRESET_TRIALS["net6"]
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, schedule="cosine", lr=2e-3,
                                                               max_epochs=max_epochs))


def _pool(n: int = 48, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    images[:, :, : size // 2] = (labels * 100 + 20).view(-1, 1, 1, 1).to(torch.uint8)
    return images, labels


def test_a_retrain_stopped_early_saw_the_recipes_learning_rates_and_losses() -> None:
    cfg = _recipe(6)
    images, labels = _pool()
    full = train_model(images, labels, cfg, epochs=6, seed=3, num_classes=3)
    short = train_model(images, labels, cfg, epochs=4, seed=3, num_classes=3)
    # The recipe's cosine schedule over all 6 epochs (not over the 4 trained: the old bug).
    want = [2e-3 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)]
    assert full.lrs == pytest.approx(want)
    assert short.lrs == full.lrs[:4]
    assert short.losses == full.losses[:4]  # same seed, same data, same recipe: bit-identical on the CPU
    assert len(short.losses) == 4 and all(math.isfinite(v) for v in short.losses)


def test_a_retrain_beyond_the_recipe_budget_is_refused() -> None:
    images, labels = _pool(8)
    with pytest.raises(ValueError, match="recipe's budget"):
        train_model(images, labels, _recipe(3), epochs=4, seed=0, num_classes=3)


@pytest.mark.parametrize(
    ("objective", "record", "epochs"),
    [("best_epoch", TrialRecord(best_epoch=4, epochs_run=12), 4),
     ("last_epoch", TrialRecord(best_epoch=4, epochs_run=12), 12),
     ("last_epoch", TrialRecord(best_epoch=2, epochs_run=3), 3)],  # a pruned trial: what it ran
)
def test_retrain_epochs_follow_the_study_objective(objective: str, record: TrialRecord, epochs: int) -> None:
    got, why = retrain_epochs(record, objective=objective, max_epochs=12, number=7)
    assert got == epochs
    assert f"{epochs} of the recipe's 12 epochs" in why and "trial 7" in why and "over all 12" in why


def test_a_trial_without_an_epoch_count_cannot_be_retrained() -> None:
    with pytest.raises(SearchError, match="trial 5 records no epoch count"):
        retrain_epochs(TrialRecord(), objective="best_epoch", max_epochs=12, number=5)


def test_a_preset_with_the_exported_trials_recipe_reuses_its_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the default configuration is exported, its baseline row is the same 3 seeds: not trained twice."""
    from types import SimpleNamespace

    import optuna

    import search.final.retrain as rt
    from search.run.queue import preset_trial
    from search.study.definition import load_study_def
    from space.search_space import SearchSpace

    defn = load_study_def("anklealign", ["final.baseline_presets=[\"default\", \"net6\"]"])
    space = SearchSpace.from_dict(dict(defn.space))
    cfg, _ = preset_trial("default", space, defn.training.max_epochs, num_classes=3)
    exported = rt.Trained("trial 0", cfg, None, defn.training.max_epochs, ["m1", "m2"], "its recipe", [])
    trained_now: list[str] = []
    monkeypatch.setattr(rt, "retrain", lambda name, *a, **k: trained_now.append(name) or SimpleNamespace(name=name))
    ctx = SimpleNamespace(num_classes=3, dataset=lambda inp: None, default_traits=lambda: None)
    out, skipped = rt.retrain_presets(defn, optuna.create_study(), ctx, seeds=[1, 2], device=torch.device("cpu"),
                                      reuse=exported)
    assert not skipped and [r.name for r in out] == ["default", "net6"]
    assert out[0].models == ["m1", "m2"] and trained_now == ["net6"]  # default reused, net6 trained
    # Another epoch count is another model: trained.
    trained_now.clear()
    rt.retrain_presets(defn, optuna.create_study(), ctx, seeds=[1, 2], device=torch.device("cpu"),
                       reuse=dataclasses.replace(exported, epochs=exported.epochs - 1))
    assert trained_now == ["default", "net6"]
