"""Temperature scaling and calibration metrics against cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import softmax

from search.final.calibration import (
    T_BOUNDS,
    apply_temperature,
    calibration_metrics,
    fit_temperature,
    reliability_png,
)


def _sampled(factor: float, *, n: int = 4000, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True logits z, labels drawn from softmax(z), and the model's probabilities softmax(factor * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, k))
    cumulative = np.cumsum(softmax(z, axis=1), axis=1)
    labels = np.minimum((rng.random(n)[:, None] > cumulative).sum(1), k - 1)
    return z, labels, softmax(factor * z, axis=1)


@pytest.mark.parametrize("factor", [3.0, 1.0, 0.5])
def test_temperature_recovers_the_known_miscalibration(factor: float) -> None:
    # softmax(log softmax(f z) / T) = softmax(z) exactly at T = f: the fitted T must be close to f.
    z, labels, probs = _sampled(factor)
    t = fit_temperature(probs, labels)
    assert t == pytest.approx(factor, rel=0.08)
    assert fit_temperature(factor * z, labels, from_probs=False) == pytest.approx(t, rel=1e-6)
    before, after = calibration_metrics(probs, labels), calibration_metrics(apply_temperature(probs, t), labels)
    assert after["nll"] <= before["nll"] + 1e-12
    if factor != 1.0:  # a real miscalibration: clearly better after
        assert after["nll"] < before["nll"] - 0.02
        assert after["ece"] < before["ece"] / 3
        assert after["brier"] < before["brier"]
    assert after["ece"] < 0.03
    assert after["accuracy"] == before["accuracy"]  # the arg-max never changes


def test_temperature_is_one_when_nothing_improves() -> None:
    # Uniform predictions: every T gives the same NLL log K.
    labels = np.arange(12) % 3
    assert fit_temperature(np.full((12, 3), 1 / 3), labels) == 1.0


def test_temperature_stays_within_its_bounds() -> None:
    # Always right with p = 0.6 on two classes: the NLL keeps falling as T -> 0, so T stops at the lower bound.
    probs = np.tile([0.6, 0.4], (10, 1))
    assert fit_temperature(probs, np.zeros(10, dtype=int)) == pytest.approx(T_BOUNDS[0], rel=1e-3)


def test_apply_temperature_hand_computed() -> None:
    p = np.array([[0.8, 0.2], [0.5, 0.5]])
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-15)
    # T = 2: sqrt(0.8) = 2 sqrt(0.2), so (2/3, 1/3); T = 0.5: squares (0.64, 0.04) -> (16/17, 1/17).
    np.testing.assert_allclose(apply_temperature(p, 2.0), [[2 / 3, 1 / 3], [0.5, 0.5]], atol=1e-12)
    np.testing.assert_allclose(apply_temperature(p, 0.5), [[16 / 17, 1 / 17], [0.5, 0.5]], atol=1e-12)
    softened = apply_temperature(np.array([[1.0, 0.0]]), 2.0)  # a 0 stays tiny (float32's smallest normal)
    assert softened[0, 1] < 1e-18 and softened.sum() == pytest.approx(1.0)


SMALL_PROBS = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
SMALL_LABELS = np.array([0, 1, 1, 2])  # right, wrong (says 0), right, right


def test_metrics_hand_computed() -> None:
    m = calibration_metrics(SMALL_PROBS, SMALL_LABELS, n_bins=2)
    assert m["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(0.8)) / 4)
    # Brier rows: 0.09+0.04+0.01, 0.36+0.49+0.01, 0.04+0.25+0.09, 0.01+0.01+0.04 -> 1.44 / 4
    assert m["brier"] == pytest.approx(0.36)
    # confidences 0.5 (right), 0.6 (wrong) | 0.7 (right), 0.8 (right): gaps |0.5 - 0.55|, |1 - 0.75|
    assert m["ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.25)
    assert m["bins"] == [pytest.approx({"confidence": 0.55, "accuracy": 0.5, "count": 2}),
                         pytest.approx({"confidence": 0.75, "accuracy": 1.0, "count": 2})]
    assert m["accuracy"] == 0.75 and m["confidence"] == pytest.approx(0.65) and m["n_images"] == 4
    # one image per bin: |1 - 0.5|, |0 - 0.6|, |1 - 0.7|, |1 - 0.8|
    assert calibration_metrics(SMALL_PROBS, SMALL_LABELS, n_bins=4)["ece"] == pytest.approx(0.4)


def test_metrics_extremes_and_floor() -> None:
    eye = np.eye(3)
    perfect = calibration_metrics(eye, [0, 1, 2])
    assert perfect["nll"] == pytest.approx(0.0, abs=1e-12) and perfect["brier"] == 0.0 and perfect["ece"] == 0.0
    worst = calibration_metrics(eye, [1, 2, 0])  # certain and always wrong
    assert worst["brier"] == 2.0 and worst["ece"] == 1.0
    assert worst["nll"] == pytest.approx(-math.log(1e-7))  # the 1e-7 floor keeps it finite


def test_bins_have_equal_mass_and_ties_stay_together() -> None:
    conf = np.linspace(0.5, 0.99, 20)
    probs = np.stack([conf, 1 - conf], axis=1)
    m = calibration_metrics(probs, np.zeros(20, dtype=int), n_bins=10)
    assert [b["count"] for b in m["bins"]] == [2] * 10
    tied = calibration_metrics(np.tile([0.9, 0.1], (30, 1)), np.r_[np.zeros(27, int), np.ones(3, int)], n_bins=10)
    assert tied["bins"] == [pytest.approx({"confidence": 0.9, "accuracy": 0.9, "count": 30})]
    assert tied["ece"] == pytest.approx(0.0, abs=1e-12)


def test_reliability_png_is_written_atomically(tmp_path) -> None:
    _, labels, probs = _sampled(3.0, n=500)
    before = calibration_metrics(probs, labels)
    after = calibration_metrics(apply_temperature(probs, fit_temperature(probs, labels)), labels)
    out = reliability_png(tmp_path / "figs" / "reliability.png", before, after, title="test, T fitted on OOF")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["reliability.png"]  # no temporary file left
    with pytest.raises(ValueError, match="bins"):
        reliability_png(tmp_path / "bad.png", {"nll": 1.0}, after, title="x")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fit_temperature(np.array([0.5, 0.5]), [0]), r"\(N, K\)"),
        (lambda: fit_temperature(np.array([[0.5, 0.5]]), [0, 1]), r"labels must have shape \(1,\)"),
        (lambda: fit_temperature(np.array([[0.5, 0.5]]), [2]), r"labels must be in \[0, 2\)"),
        (lambda: fit_temperature(np.array([[2.0, -1.0]]), [0]), "non-negative"),
        (lambda: fit_temperature(np.array([[2.0, 1.0]]), [0]), "must sum to 1"),
        (lambda: fit_temperature(np.array([[np.nan, 1.0]]), [0], from_probs=False), "finite"),
        (lambda: fit_temperature(np.array([[0.5, 0.5]]), [0.5]), "integer"),
        (lambda: apply_temperature(np.array([[0.5, 0.5]]), 0.0), "positive finite"),
        (lambda: calibration_metrics(np.array([[0.5, 0.5]]), [0], n_bins=0), "n_bins"),
        (lambda: calibration_metrics(np.zeros((0, 3)), []), r"non-empty \(N, K\)"),
    ],
)
def test_invalid_input_raises(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_temperature_is_recovered_from_the_stored_trial_records() -> None:
    """Over-confident logits (true T = 3) go through the trial record's encoding, as the objective stores them, and
    back: the temperature fitted on what the final step reads is within 10 % of 3. The uint8 records of older
    studies turned every probability below 1/510 into 0 and sent the fit to its upper bound."""
    import base64

    from search.study.records import TrialRecord, encode_probs

    rng = np.random.default_rng(0)
    n, k = 4000, 3
    calibrated = rng.normal(size=(n, k)) * 2.5  # logits whose softmax is the true chance of each class
    truth = np.exp(calibrated) / np.exp(calibrated).sum(1, keepdims=True)
    labels = (rng.random((n, 1)) > truth.cumsum(1)).sum(1)  # each label drawn from it
    logits = 3.0 * calibrated  # a model three times too confident
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert (probs < 1 / 510).mean() > 0.2  # many probabilities the old format rounded to 0
    stored = TrialRecord(oof=encode_probs(probs))
    assert stored.oof_exact
    t = fit_temperature(stored.oof_probs(k), labels)
    assert t == pytest.approx(3.0, rel=0.10)
    assert t == pytest.approx(fit_temperature(logits, labels, from_probs=False), rel=0.01)  # the storage costs < 1 %
    old = TrialRecord(oof=base64.b64encode(np.rint(probs * 255).astype(np.uint8).tobytes()).decode())
    assert old.oof_exact is False
    assert fit_temperature(old.oof_probs(k), labels) > 6.0  # what older studies fitted: far off


def test_a_temperature_on_its_bound_is_flagged() -> None:
    from search.final.trust import at_bound, fit_calibration

    labels = np.zeros(10, dtype=int)
    probs = np.tile([0.6, 0.4], (10, 1))  # always right, never confident: wants T -> 0
    cal = fit_calibration(probs, labels, enabled=True)
    assert at_bound(cal["temperature"]) and "bound" in cal["warning"]
    good = fit_calibration(np.tile([[0.9, 0.1], [0.2, 0.8]], (5, 1)), np.tile([0, 1], 5) ^ (np.arange(10) == 3),
                           enabled=True)
    assert not at_bound(good["temperature"]) and "warning" not in good
    assert "approximate" in fit_calibration(probs, labels, enabled=True, exact=False)["warning"]


@pytest.mark.parametrize("which", ["confusion", "reliability"])
def test_figure_titles_stay_inside_the_picture(which: str) -> None:
    """A long study name and data path: the title wraps and its rendered box lies inside the figure, above the
    axes and the colour bar."""
    from search.final.calibration import reliability_figure
    from search.final.card import confusion_figure

    title = ("a-very-long-study-name-for-a-folder-of-cats-and-dogs-7f3a9c0e, trial 12: ensemble of 3 seeds on the "
             "test set\nSYNTHETIC TWIN (generated images, not real data) of /home/someone/projects/data/photos")
    if which == "confusion":
        fig = confusion_figure(np.array([[5, 1, 0], [2, 7, 1], [0, 1, 3]]), ["a", "b", "c"], title=title)
    else:
        probs, labels = np.tile([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]], (20, 1)), np.tile([0, 1], 20)
        m = calibration_metrics(probs, labels)
        fig = reliability_figure(m, m, title=title)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box, page = fig._suptitle.get_window_extent(renderer), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
    for ax in fig.axes:  # the colour bar is an axes too
        assert ax.get_window_extent(renderer).y1 <= box.y0 + 1
