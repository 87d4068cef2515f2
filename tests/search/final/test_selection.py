"""The out-of-fold decisions: bias-corrected CV on cases with a known answer, and the top-k choice."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from search.final.selection import bbc_estimate, choose_top_k, oof_score, select
from search.study import records


def _noise(rng: np.random.Generator, c: int, n: int, k: int) -> np.ndarray:
    return rng.dirichlet(np.ones(k), size=(c, n))


def test_bbc_removes_the_optimism_of_picking_the_best_of_pure_noise() -> None:
    """50 configurations that guess at random: the best raw score is well above chance, the corrected one
    is at chance (the known answer: a selected guesser is still a guesser)."""
    rng = np.random.default_rng(0)
    n, k = 250, 3
    labels = rng.integers(0, k, n)
    oof = _noise(rng, 50, n, k)
    out = bbc_estimate(oof, labels, metric="accuracy", n_boot=400, seed=1)
    assert out["raw"] > 0.38  # the maximum of 50 noisy accuracies around 1/3 (sd 0.03 each)
    assert abs(out["estimate"] - 1 / 3) < 0.03
    assert out["ci95"][0] < 1 / 3 < out["ci95"][1]
    assert out["bias"] > 0.03


def test_bbc_keeps_a_real_winner() -> None:
    """One configuration knows the label 80 % of the time among 20 guessers: BBC finds it and scores ~0.8+."""
    rng = np.random.default_rng(2)
    n, k = 300, 3
    labels = rng.integers(0, k, n)
    oof = _noise(rng, 20, n, k)
    right = rng.random(n) < 0.8
    oof[7] = np.where(right[:, None], np.eye(k)[labels], np.eye(k)[(labels + 1) % k]) * 0.9 + 0.1 / k
    out = bbc_estimate(oof, labels, metric="accuracy", n_boot=300, seed=0)
    assert abs(out["estimate"] - oof_score(oof[7], labels, metric="accuracy", num_classes=k)) < 0.03


def test_bbc_resamples_duplicate_groups_whole() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    groups = np.repeat(np.arange(20), 2)
    out = bbc_estimate(_noise(rng, 5, 40, 3), labels, metric="macro_f1", groups=groups, n_boot=50)
    assert out["resamples"] == 50 and out["configs"] == 5
    with pytest.raises(ValueError, match="labels must have shape"):
        bbc_estimate(_noise(rng, 2, 40, 3), labels[:10], metric="accuracy")


def test_top_k_takes_the_average_only_when_it_scores_better() -> None:
    k = 3
    labels = np.array([0, 1, 2, 0, 1, 2])
    good = np.eye(k)[labels] * 0.6 + 0.4 / k  # right on every image
    bad = np.eye(k)[(labels + 1) % k]  # wrong on every image, confidently
    assert choose_top_k([good, bad], labels, metric="accuracy", num_classes=k).k == 1
    half = good.copy()
    half[3:] = np.eye(k)[(labels[3:] + 1) % k] * 0.55 + 0.45 / k  # the winner errs on half the images...
    helper = np.eye(k)[labels] * 0.9 + 0.1 / k  # ...which a second trial gets right, confidently
    chosen = choose_top_k([half, helper], labels, metric="accuracy", num_classes=k)
    assert chosen.k == 2 and chosen.scores == (0.5, 1.0)
    assert "top-2" in chosen.why


def _study_with(oofs: dict[str, np.ndarray], values: dict[str, float]) -> optuna.Study:
    """An in-memory study of complete trials named by preset ("default") or not, each with its OOF record."""
    study = optuna.create_study(direction="maximize")
    for name, probs in oofs.items():
        extra = {"preset": name} if name == "default" else {}
        study.add_trial(optuna.trial.create_trial(value=values[name], user_attrs=records.attrs(
            oof=records.encode_probs(probs), **extra)))
    return study


def _right_on(labels: np.ndarray, share_right: np.ndarray) -> np.ndarray:
    k = 3
    right, wrong = np.eye(k)[labels] * 0.8 + 0.2 / k, np.eye(k)[(labels + 1) % k] * 0.8 + 0.2 / k
    return np.where(share_right[:, None], right, wrong)


@pytest.mark.parametrize(("lost", "won", "kept"), [(27, 33, "default"), (10, 85, "winner")])
def test_the_default_is_exported_unless_the_winner_is_distinguishably_better(lost: int, won: int, kept: str) -> None:
    """Known answers: a winner that gets 27 of the default's right images wrong and 33 of its wrong ones
    right (+6 of 300, the kind of difference a lucky trial shows) is noise: the default is exported, with
    the reason on the card. Losing 10 and winning 85 (+75) is a real gain: the winner is exported."""
    rng = np.random.default_rng(5)
    n = 300
    labels = rng.integers(0, 3, n)
    base = np.zeros(n, dtype=bool)
    base[:180] = True  # the default is right on 60 %
    better = base.copy()
    better[:lost] = False
    better[180:180 + won] = True
    extra_right = won - lost
    study = _study_with({"default": _right_on(labels, base), "searched": _right_on(labels, better)},
                        {"default": 0.55, "searched": 0.60})
    winner = max(study.trials, key=lambda t: t.value)
    args = {"top_k": 1, "labels": labels, "groups": np.arange(n), "metric": "accuracy", "num_classes": 3,
            "n_boot": 300, "seed": 0}
    sel = select(study, winner, keep_default=True, **args)
    assert sel.versus_default["kept"] == kept
    assert sel.versus_default["difference"] == pytest.approx(extra_right / n, abs=1e-9)
    exported = sel.members[0].user_attrs.get("preset")
    assert (exported == "default") == (kept == "default")
    if kept == "default":
        assert "not distinguishable from 0" in sel.block()["why"] and "final.keep_default" in sel.block()["why"]
    # final.bootstrap = 0 (no reported intervals) still decides with an interval.
    assert select(study, winner, keep_default=True, **{**args, "n_boot": 0}).versus_default["ci95"] is not None
    # Off, the best trial is exported whatever the evidence.
    assert select(study, winner, keep_default=False, **args).members[0].number == winner.number


def test_without_a_default_trial_the_winner_is_exported_with_a_note() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 60)
    study = _study_with({"a": _right_on(labels, rng.random(60) < 0.5), "b": _right_on(labels, rng.random(60) < 0.7)},
                        {"a": 0.5, "b": 0.7})
    winner = max(study.trials, key=lambda t: t.value)
    sel = select(study, winner, top_k=1, labels=labels, groups=np.arange(60), metric="accuracy", num_classes=3,
                 n_boot=50, seed=0, keep_default=True)
    assert sel.members[0].number == winner.number and sel.versus_default is None
    assert any("no complete 'default' trial" in n for n in sel.notes)
