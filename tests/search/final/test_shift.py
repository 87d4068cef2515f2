"""Label-shift estimates against simulations with a known prior and exact posteriors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from search.final.shift import adjust_to_prior, bbse_prior, em_prior, prior_interval

MEANS = np.array([-2.0, 0.0, 2.0])  # class-conditional N(mean, 1) in 1-D
TRAIN_PRIOR = np.array([0.5, 0.3, 0.2])
TEST_PRIOR = np.array([0.2, 0.3, 0.5])


def _posterior(x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The exact posterior p(y | x) of the Gaussian classes under ``prior``."""
    joint = stats.norm.pdf(x[:, None], MEANS) * prior
    return joint / joint.sum(1, keepdims=True)


def _draw(prior: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(len(prior), size=n, p=prior)
    return rng.normal(MEANS[y], 1.0), y


def test_adjust_with_equal_priors_is_the_identity() -> None:
    probs = _posterior(_draw(TRAIN_PRIOR, 50, seed=3)[0], TRAIN_PRIOR)
    np.testing.assert_allclose(adjust_to_prior(probs, TRAIN_PRIOR, TRAIN_PRIOR), probs, atol=1e-15)


def test_adjust_is_bayes_rule() -> None:
    np.testing.assert_allclose(adjust_to_prior([[0.5, 0.5]], [0.5, 0.5], [0.8, 0.2]), [[0.8, 0.2]])
    np.testing.assert_allclose(adjust_to_prior([[0.5, 0.5]], [0.8, 0.2], [0.5, 0.5]), [[0.2, 0.8]])
    # The posterior under the training prior, moved to the test prior, is the exact test posterior.
    x = np.linspace(-4, 4, 41)
    np.testing.assert_allclose(adjust_to_prior(_posterior(x, TRAIN_PRIOR), TRAIN_PRIOR, TEST_PRIOR),
                               _posterior(x, TEST_PRIOR), atol=1e-12)
    # A prior of 0 removes the class; unnormalised priors are normalised.
    np.testing.assert_allclose(adjust_to_prior([[0.2, 0.3, 0.5]], [1, 1, 1], [2, 0, 2]), [[2 / 7, 0, 5 / 7]])
    with pytest.raises(ValueError, match="every class with probability > 0"):
        adjust_to_prior([[0.0, 1.0]], [0.5, 0.5], [1.0, 0.0])


@pytest.mark.parametrize("grouped", [False, True])
def test_em_recovers_a_known_shifted_prior_within_its_interval(grouped: bool) -> None:
    x, _ = _draw(TEST_PRIOR, 1000, seed=1)
    probs = _posterior(x, TRAIN_PRIOR)  # what a calibrated model trained under TRAIN_PRIOR outputs
    groups = np.arange(1000) // 5 if grouped else None
    out = prior_interval(probs, TRAIN_PRIOR, n_boot=200, seed=0, groups=groups)
    np.testing.assert_allclose(out["estimate"], em_prior(probs, TRAIN_PRIOR), atol=1e-12)
    np.testing.assert_allclose(out["estimate"], TEST_PRIOR, atol=0.04)
    assert abs(np.subtract(out["estimate"], TRAIN_PRIOR)).max() > 0.2  # clearly moved off the training prior
    for truth, est, (lo, hi) in zip(TEST_PRIOR, out["estimate"], out["ci95"], strict=True):
        assert lo <= est <= hi and lo <= truth <= hi and hi - lo < 0.15
    assert out["converged"] and out["n_images"] == 1000 and out["train_prior"] == pytest.approx(TRAIN_PRIOR)
    assert ("groups" in out["method"]) == grouped and "Saerens" in out["method"]


def test_em_without_shift_stays_at_the_training_prior() -> None:
    # 5000 images: the estimate's standard error is about 0.01 per class, so 0.04 is a wide margin.
    x, _ = _draw(TRAIN_PRIOR, 5000, seed=2)
    np.testing.assert_allclose(em_prior(_posterior(x, TRAIN_PRIOR), TRAIN_PRIOR), TRAIN_PRIOR, atol=0.04)


def test_em_of_certain_predictions_is_the_label_frequency() -> None:
    # One-hot posteriors cannot be re-weighted: the first M-step already gives the predicted frequencies.
    labels = np.array([0, 0, 1, 2, 2, 2, 2, 1])
    np.testing.assert_allclose(em_prior(np.eye(3)[labels], TRAIN_PRIOR), [2 / 8, 2 / 8, 4 / 8], atol=1e-12)


def test_em_warns_when_it_does_not_converge() -> None:
    probs = _posterior(_draw(TEST_PRIOR, 200, seed=4)[0], TRAIN_PRIOR)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        em_prior(probs, TRAIN_PRIOR, max_iter=1)


def test_prior_interval_is_reproducible_and_optional() -> None:
    probs = _posterior(_draw(TEST_PRIOR, 300, seed=5)[0], TRAIN_PRIOR)
    a = prior_interval(probs, TRAIN_PRIOR, n_boot=100, seed=7)
    assert a == prior_interval(probs, TRAIN_PRIOR, n_boot=100, seed=7)
    none = prior_interval(probs, TRAIN_PRIOR, n_boot=0, seed=7)
    assert none["ci95"] == [None, None, None] and none["estimate"] == a["estimate"]
    assert sum(a["estimate"]) == pytest.approx(1.0)


def _hard(pred: list[int], k: int = 2) -> np.ndarray:
    p = np.full((len(pred), k), 0.2 / (k - 1))
    p[np.arange(len(pred)), pred] = 0.8
    return p


def test_bbse_solves_the_confusion_system_exactly() -> None:
    # OOF: class 0 (80 images) predicted 0 seventy times, class 1 (20) predicted 1 fifteen times, so
    # C = [[.70, .05], [.10, .15]] (row = predicted), p(y) = (.8, .2). For q(y) = (.5, .5): w = (.625, 2.5),
    # mu = C w = (.5625, .4375), i.e. 9 of 16 test images predicted 0.
    oof_labels = [0] * 80 + [1] * 20
    oof_pred = [0] * 70 + [1] * 10 + [0] * 5 + [1] * 15
    test = _hard([0] * 9 + [1] * 7)
    np.testing.assert_allclose(bbse_prior(_hard(oof_pred), oof_labels, test), [0.5, 0.5], atol=1e-12)


@pytest.mark.parametrize("soft", [False, True])
def test_bbse_recovers_a_known_shifted_prior(soft: bool) -> None:
    x_oof, y_oof = _draw(TRAIN_PRIOR, 3000, seed=6)
    x_test, _ = _draw(TEST_PRIOR, 2000, seed=8)
    estimate = bbse_prior(_posterior(x_oof, TRAIN_PRIOR), y_oof, _posterior(x_test, TRAIN_PRIOR), soft=soft)
    np.testing.assert_allclose(estimate, TEST_PRIOR, atol=0.05)
    assert estimate.min() >= 0 and estimate.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: em_prior(np.array([0.5, 0.5]), [0.5, 0.5]), r"\(N, K\)"),
        (lambda: em_prior(np.array([[0.5, 0.5]]), [0.3, 0.3, 0.4]), r"train_prior must have shape \(2,\)"),
        (lambda: em_prior(np.array([[0.5, 0.5]]), [1.0, 0.0]), "must be positive"),
        (lambda: em_prior(np.array([[0.5, 0.6]]), [0.5, 0.5]), "must sum to 1"),
        (lambda: em_prior(np.array([[0.5, 0.5]]), [0.5, 0.5], max_iter=0), "max_iter"),
        (lambda: prior_interval(np.array([[0.5, 0.5]] * 3), [0.5, 0.5], n_boot=10, seed=0, groups=[0, 1]),
         r"groups must have shape \(3,\)"),
        (lambda: prior_interval(np.array([[0.5, 0.5]]), [0.5, 0.5], n_boot=-1, seed=0), "n_boot"),
        (lambda: adjust_to_prior(np.array([[0.5, 0.5]]), [0.5, 0.5], [-1.0, 2.0]), "new_prior must be"),
        (lambda: bbse_prior(_hard([0, 1]), [0, 1], _hard([0], k=3)), "classes"),
        (lambda: bbse_prior(_hard([0, 1]), [0, 1, 1], _hard([0])), r"labels must have shape \(2,\)"),
    ],
)
def test_invalid_input_raises(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_interval_contains_an_estimate_on_the_edge() -> None:
    """A class absent from the images is estimated at ~0; its interval must contain that estimate."""
    from search.final.shift import prior_interval

    rng = np.random.default_rng(4)
    probs = np.column_stack([rng.uniform(0.0, 0.3, 60), np.zeros(60)])
    probs[:, 1] = 1 - probs[:, 0]
    probs = np.column_stack([probs, np.full(60, 1e-4)])
    probs /= probs.sum(1, keepdims=True)
    out = prior_interval(probs, np.array([0.45, 0.4, 0.15]), n_boot=200, seed=0)
    for est, ci in zip(out["estimate"], out["ci95"], strict=True):
        assert ci is None or ci[0] - 1e-6 <= est <= ci[1] + 1e-6  # EM stops within its tolerance
    assert out["estimate"][2] < 0.01


def test_bbse_interval_recovers_a_shifted_prior_without_calibration() -> None:
    """Over-confident outputs (not calibrated) still give the right prior by BBSE, inside its interval."""
    from search.final.shift import bbse_interval

    rng = np.random.default_rng(7)
    means, train, test = np.array([-2.0, 0.0, 2.0]), np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])

    def draw(prior: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(3, size=n, p=prior)
        x = rng.normal(means[y], 1.0)
        logp = -0.5 * (x[:, None] - means) ** 2 + np.log(train)
        p = np.exp(3 * (logp - logp.max(1, keepdims=True)))  # x3: over-confident, not calibrated
        return p / p.sum(1, keepdims=True), y

    p_train, y_train = draw(train, 30000)  # a well-measured confusion: the interval resamples the test side only
    p_test, _ = draw(test, 2000)
    out = bbse_interval(p_train, y_train, p_test, n_boot=300, seed=0)
    for est, ci, true in zip(out["estimate"], out["ci95"], test, strict=True):
        assert abs(est - true) < 0.05 and ci[0] <= true <= ci[1]


def _class_only_draw(rng: np.random.Generator, prior: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of a 3-class model whose outputs depend on the class only (label shift holds)."""
    y = rng.choice(3, size=n, p=prior)
    logits = rng.normal(size=(n, 3)) * 1.2 + np.eye(3)[y] * 1.5
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True), y


@pytest.mark.slow
def test_bbse_interval_covers_the_true_prior_in_at_least_90_percent_of_draws() -> None:
    """200 simulated studies: 300 out-of-fold images under the training prior, 150 test images under a shifted
    one; the 95 % interval of every class covers the true test prior in >= 90 % of them. Holding the out-of-fold
    confusion fixed (the rule before) covers less, because it ignores half of the sampling error."""
    from search.final.shift import bbse_interval

    rng = np.random.default_rng(0)
    train, test = np.array([0.3, 0.5, 0.2]), np.array([0.15, 0.7, 0.15])
    covered, fixed = np.zeros(3), np.zeros(3)
    for i in range(200):
        p_train, y_train = _class_only_draw(rng, train, 300)
        p_test, _ = _class_only_draw(rng, test, 150)
        ci = np.array(bbse_interval(p_train, y_train, p_test, n_boot=400, seed=i)["ci95"])
        covered += (ci[:, 0] <= test) & (test <= ci[:, 1])
        # The same estimator with the confusion held fixed: only the test images resampled.
        w = rng.multinomial(150, np.full(150, 1 / 150), size=400).astype(float)
        joint = (p_train.T @ np.eye(3)[y_train]) / 300
        q = np.clip((w @ p_test / 150) @ np.linalg.pinv(joint).T, 0, None) * joint.sum(0)
        q /= q.sum(1, keepdims=True)
        lo, hi = np.percentile(q, [2.5, 97.5], axis=0)
        fixed += (lo <= test) & (test <= hi)
    assert (covered / 200 >= 0.90).all(), covered / 200
    assert (fixed / 200).min() < (covered / 200).min()


def test_the_effective_prior_is_what_the_model_learnt_under() -> None:
    from search.final.shift import effective_prior

    train = np.array([0.6, 0.3, 0.1])
    uniform, why = effective_prior(None, train, class_weighting="inverse")
    assert np.allclose(uniform, 1 / 3) and "inverse" in why
    oof = np.tile([0.5, 0.3, 0.2], (10, 1))
    mean, why = effective_prior(oof, train)
    assert np.allclose(mean, [0.5, 0.3, 0.2]) and "out-of-fold" in why
    assert np.allclose(effective_prior(None, train)[0], train)


def test_an_inverse_weighted_model_is_adjusted_from_uniform() -> None:
    """A model trained with inverse class weights outputs posteriors under a uniform prior: moving them to the
    training prior must divide by uniform, not by the training frequencies (which would move them twice)."""
    from search.final.trust import trust_blocks

    rng = np.random.default_rng(1)
    probs, labels = _class_only_draw(rng, np.array([1 / 3, 1 / 3, 1 / 3]), 200)
    train = np.array([0.6, 0.3, 0.1])
    common = {"labels": labels, "votes": np.eye(3, dtype=int)[labels], "calibration": {"temperature": 1.0},
              "train_prior": train, "classes": ["a", "b", "c"], "groups": None, "n_boot": 0, "seed": 0,
              "label_shift": True, "votes_eval": False, "per_class": False}
    inv = trust_blocks(probs[None], class_weighting="inverse", **common)["label_shift"]
    assert inv["model_prior"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    plain = trust_blocks(probs[None], **common)["label_shift"]
    assert plain["model_prior"] == pytest.approx(dict(zip("abc", train, strict=True)))
    assert inv["prior_adjusted"]["accuracy"]["mean"] != plain["prior_adjusted"]["accuracy"]["mean"]
