"""Test-set metrics against hand-computed examples (and scikit-learn where it defines the same thing)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, f1_score

from search.final.annotators import annotator_agreement
from search.final.scoring import baselines, score_seeds
from search.run.metrics import absent_classes, classification_metrics, confusion

CLASSES = ("pronation", "neutral", "supination")


def _onehot(labels: list[int], k: int = 3) -> np.ndarray:
    return np.eye(k, dtype=np.int64)[labels]


def _probs_for(pred: list[int], k: int = 3) -> np.ndarray:
    """Probabilities whose argmax is ``pred`` (0.8 on the predicted class)."""
    p = np.full((len(pred), k), 0.2 / (k - 1))
    p[np.arange(len(pred)), pred] = 0.8
    return p


@pytest.mark.parametrize(
    ("y", "pred", "expected"),
    [
        # row0 [1,1,0], row1 [0,2,1]: recall 1/2, 2/3; F1 2/3, 2/3, and 0 for supination (absent, predicted)
        ([0, 0, 1, 1, 1], [0, 1, 1, 1, 2], {"accuracy": 0.6, "balanced_accuracy": 7 / 12, "macro_f1": 4 / 9}),
        # only neutral is present: F1 neutral 2/3; the absent classes count 0 in macro-F1, not in recall
        ([1, 1, 1, 1], [1, 1, 2, 2], {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 2 / 9}),
        ([0, 1, 2], [0, 1, 2], {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0}),
        # always neutral on 6 neutral + 1 pronation: recall 1 and 0; F1 neutral 12/13, pronation 0, supination 0
        ([1] * 6 + [0], [1] * 7, {"accuracy": 6 / 7, "balanced_accuracy": 0.5, "macro_f1": 4 / 13}),
    ],
)
def test_classification_metrics_hand_computed(y: list[int], pred: list[int], expected: dict[str, float]) -> None:
    got = classification_metrics(np.array(y), np.array(pred), num_classes=3)
    assert got == pytest.approx(expected)


def test_confusion_rows_are_true_classes_over_all_classes() -> None:
    c = confusion(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 2]), 3)
    assert c.tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 0]]


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_over_the_dataset_classes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1], size=40, p=[0.2, 0.8])  # class 2 absent, like AnkleAlign's supination
    pred = rng.integers(0, 3, size=40)
    got = classification_metrics(y, pred, num_classes=3)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", UserWarning)  # sklearn: "y_pred contains classes not in y_true"
        assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0))


def test_absent_classes_and_bad_labels() -> None:
    assert absent_classes(np.array([1, 0, 1]), 3) == (2,)
    assert absent_classes(np.array([2, 0, 1]), 3) == ()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        absent_classes(np.array([0, 3]), 3)


def test_agreement_hand_computed() -> None:
    probs = np.array([[[0.5, 0.5, 0.0], [0.1, 0.8, 0.1]]])  # (S=1, M=2, K=3)
    votes = np.array([[2, 2, 0], [0, 3, 1]])
    out = score_seeds(probs, np.array([0, 1]), votes, classes=CLASSES, n_boot=0)
    # image 1: 0.5*0.5 + 0.5*0.5; image 2: 0.8*0.75 + 0.1*0.25
    assert out["agreement"]["vote_probability"]["mean"] == pytest.approx((0.5 + 0.625) / 2)
    ce2 = -(0.75 * math.log(0.8) + 0.25 * math.log(0.1))
    assert out["agreement"]["soft_cross_entropy"]["mean"] == pytest.approx((math.log(2) + ce2) / 2)


def test_seed_mean_std_and_per_seed() -> None:
    y = np.array([0, 0, 1, 1, 1])
    probs = np.stack([_probs_for([0, 1, 1, 1, 2]), _probs_for([0, 0, 1, 1, 2])])  # accuracy 0.6, 0.8
    out = score_seeds(probs, y, _onehot(y.tolist()), classes=CLASSES, n_boot=0)
    acc = out["accuracy"]
    assert acc["per_seed"] == pytest.approx([0.6, 0.8])
    assert acc["mean"] == pytest.approx(0.7) and acc["std"] == pytest.approx(math.sqrt(0.02))
    assert acc["ci95"] is None
    assert out["classes_absent"] == ["supination"]
    assert out["confusion"] == [[1.5, 0.5, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 0.0]]
    pc = out["per_class"]
    assert pc["supination"]["recall"] is None and pc["supination"]["support"] == 0
    assert pc["supination"]["precision"]["mean"] == 0.0  # predicted, never right
    assert pc["pronation"]["recall"]["mean"] == pytest.approx(0.75)
    assert pc["pronation"]["precision"]["mean"] == pytest.approx(1.0)
    assert pc["neutral"]["precision"]["mean"] == pytest.approx((2 / 3 + 1) / 2)  # seed 1: 2 of 3, seed 2: 2 of 2
    assert pc["supination"]["f1"]["mean"] == 0.0 and pc["pronation"]["f1"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    json.dumps(out, allow_nan=False)  # strict JSON: undefined values are None, never NaN


def test_precision_undefined_when_never_predicted() -> None:
    y = np.array([0, 1, 1])
    out = score_seeds(_probs_for([1, 1, 1])[None], y, _onehot([0, 1, 1]), classes=CLASSES, n_boot=0)
    assert out["per_class"]["pronation"]["precision"] is None
    assert out["per_class"]["pronation"]["recall"]["mean"] == 0.0


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    probs = rng.dirichlet(np.ones(3), size=(3, 60))
    a = score_seeds(probs, y, _onehot(y.tolist()), classes=CLASSES, n_boot=300, seed=7)
    b = score_seeds(probs, y, _onehot(y.tolist()), classes=CLASSES, n_boot=300, seed=7)
    assert a == b
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        lo, hi = a[name]["ci95"]
        assert lo < a[name]["mean"] < hi and hi - lo < 0.5
    lo, hi = a["agreement"]["soft_cross_entropy"]["ci95"]
    assert lo < a["agreement"]["soft_cross_entropy"]["mean"] < hi


def test_bootstrap_of_a_perfect_model_is_a_point() -> None:
    # BCa is undefined on a degenerate bootstrap distribution: the percentile interval stands in.
    y = np.array([0, 1, 2, 0, 1, 2, 1])
    out = score_seeds(_probs_for(y.tolist())[None], y, _onehot(y.tolist()), classes=CLASSES, n_boot=100)
    assert out["accuracy"]["ci95"] == [1.0, 1.0] and out["balanced_accuracy"]["ci95"] == [1.0, 1.0]


def test_interval_is_scipys_bca_bootstrap_of_the_metric() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 50)
    pred = np.where(rng.random(50) < 0.6, y, rng.integers(0, 3, 50))
    out = score_seeds(_probs_for(pred.tolist())[None], y, _onehot(y.tolist()), classes=CLASSES, n_boot=400, seed=5)
    want = stats.bootstrap(((pred == y).astype(float),), np.mean, n_resamples=400, method="BCa",
                           rng=np.random.default_rng(5)).confidence_interval
    assert out["accuracy"]["ci95"] == pytest.approx([want.low, want.high])


def test_bootstrap_resamples_duplicate_groups_not_images() -> None:
    # Every image three times, as one duplicate group: the interval must be that of the distinct
    # images (resampling copies one by one would shrink it by about 1/sqrt(3)).
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 30)
    probs = rng.dirichlet(np.ones(3), size=(2, 30))
    distinct = score_seeds(probs, y, _onehot(y.tolist()), classes=CLASSES, n_boot=300, seed=1)
    tripled = score_seeds(np.repeat(probs, 3, axis=1), np.repeat(y, 3), _onehot(np.repeat(y, 3).tolist()),
                          classes=CLASSES, groups=np.repeat(np.arange(30), 3), n_boot=300, seed=1)
    as_images = score_seeds(np.repeat(probs, 3, axis=1), np.repeat(y, 3), _onehot(np.repeat(y, 3).tolist()),
                            classes=CLASSES, n_boot=300, seed=1)
    for name in ("accuracy", "macro_f1"):
        assert tripled[name]["ci95"] == pytest.approx(distinct[name]["ci95"])
        (lo_i, hi_i), (lo_t, hi_t) = as_images[name]["ci95"], tripled[name]["ci95"]
        assert hi_i - lo_i < 0.8 * (hi_t - lo_t)
    assert tripled["n_groups"] == 30 and tripled["n_images"] == 90


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(S, M, K\)"):
        score_seeds(np.zeros((4, 3)), np.zeros(4, int), np.zeros((4, 3)), classes=CLASSES)


def test_baselines_hand_computed() -> None:
    train = np.array([0, 0, 0, 1, 1])  # prior 0.6 / 0.4 / 0
    y = np.array([1, 1, 1, 0])
    out = baselines(y, _onehot(y.tolist()), train, classes=CLASSES, n_boot=50, seed=0, draws=20000)
    maj = out["train_majority"]
    assert maj["predicts"] == "pronation"
    assert maj["accuracy"]["mean"] == pytest.approx(0.25)
    assert maj["balanced_accuracy"]["mean"] == pytest.approx(0.5)
    assert maj["macro_f1"]["mean"] == pytest.approx(0.4 / 3)  # F1 pronation 2/5, neutral 0, supination 0
    oracle = out["test_majority_oracle"]
    assert oracle["oracle"] is True and oracle["predicts"] == "neutral"
    assert oracle["accuracy"]["mean"] == pytest.approx(0.75)
    assert oracle["macro_f1"]["mean"] == pytest.approx(2 / 7)  # F1 neutral 6/7, pronation 0, supination 0
    rnd = out["stratified_random"]
    # expected accuracy: (3 * 0.4 + 0.6) / 4; expected balanced accuracy: (0.6 + 0.4) / 2 (exact)
    assert rnd["accuracy"]["mean"] == pytest.approx(0.45)
    assert rnd["balanced_accuracy"]["mean"] == pytest.approx(0.5)
    # plug-in F1 of the expected confusion: pronation 1.2 / 3.4, neutral 2.4 / 4.6, supination 0
    assert rnd["macro_f1"]["mean"] == pytest.approx((1.2 / 3.4 + 2.4 / 4.6) / 3)
    assert rnd["accuracy"]["std"] > 0 and len(rnd["accuracy"]["ci95"]) == 2
    assert rnd["agreement"]["soft_cross_entropy"] is None
    json.dumps(out, allow_nan=False)


# 3 annotators x 4 images; -1 = no label. Leave-one-out majorities worked out by hand:
#   image 0 (0,0,1): a0 and a1 see a tie (skipped); a2 sees majority 0 -> wrong
#   image 1 (1,1,1): everybody right
#   image 2 (1,2,2): a0 sees 2 -> wrong; a1 and a2 see a tie (skipped)
#   image 3 (-,1,1): a1 and a2 right
# vote_agreement = mean share of the others with the same label, e.g. a2: (0 + 1 + 1/2 + 1) / 4
ANNOT = np.array([[0, 1, 1, -1], [0, 1, 2, 1], [1, 1, 2, 1]])


@pytest.mark.parametrize(
    ("code", "accuracy", "scored", "ties", "agreement"),
    [("A0", 0.5, 2, 1, 0.5), ("A1", 1.0, 2, 2, 0.75), ("A2", 2 / 3, 3, 1, 0.625)],
)
def test_annotators_leave_one_out(code: str, accuracy: float, scored: int, ties: int, agreement: float) -> None:
    out = annotator_agreement(ANNOT, annotators=("A0", "A1", "A2"), num_classes=3)
    row = next(r for r in out["per_annotator"] if r["annotator"] == code)
    assert row["accuracy"] == pytest.approx(accuracy)
    assert (row["scored"], row["ties_skipped"]) == (scored, ties)
    assert row["vote_agreement"] == pytest.approx(agreement)


def test_annotator_summary() -> None:
    out = annotator_agreement(ANNOT, annotators=("A0", "A1", "A2"), num_classes=3)
    assert out["accuracy"]["mean"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert (out["accuracy"]["min"], out["accuracy"]["max"]) == (0.5, 1.0)
    assert "model_rank" not in out


# The references the annotators were graded on (worked out above): A0 on images {1: 1, 2: 2} (accuracy
# 0.5), A1 on {1: 1, 3: 1} (1.0), A2 on {0: 0, 1: 1, 3: 1} (2/3). A model is compared with each on those.
@pytest.mark.parametrize(
    ("pred", "vs", "rank", "beaten_by"),
    [
        # vs A0: 2/2 > 0.5; vs A1: 1/2 < 1.0 (beaten); vs A2: 2/3 = 2/3 (a tie does not beat it)
        ([[0, 1, 2, 0]], [1.0, 0.5, 2 / 3], 2, ["A1"]),
        ([[0, 1, 2, 1]], [1.0, 1.0, 1.0], 1, []),
        ([[2, 0, 0, 0]], [0.0, 0.0, 0.0], 4, ["A0", "A1", "A2"]),
        # two seeds: the accuracies are seed means; vs A2 (2/3 + 1) / 2 > 2/3
        ([[0, 1, 2, 0], [0, 1, 1, 1]], [0.75, 0.75, 5 / 6], 2, ["A1"]),
    ],
)
def test_model_rank_is_like_for_like(pred: list[list[int]], vs: list[float], rank: int,
                                     beaten_by: list[str]) -> None:
    out = annotator_agreement(ANNOT, annotators=("A0", "A1", "A2"), num_classes=3,
                              model_predictions={"model": np.array(pred)})
    got = [r["model_accuracy"]["model"] for r in out["per_annotator"]]
    assert got == pytest.approx(vs)
    assert out["model_rank"]["model"]["rank"] == rank and out["model_rank"]["model"]["of"] == 4
    assert out["model_rank"]["model"]["beaten_by"] == beaten_by


def test_no_annotators_is_stated_not_faked() -> None:
    out = annotator_agreement(np.zeros((0, 5), int), annotators=(), num_classes=3)
    assert out["available"] is False and "no human baseline" in out["reason"]


def test_constant_answers_are_ranked_with_the_model_and_every_rank_has_an_interval() -> None:
    """A test set where most references are 'neutral' (class 1): always answering neutral ranks first among the
    annotators, so the model's rank 1 says nothing, and the text says so."""
    from search.final.annotators import answers_without_images
    from search.view.text import rank_sentence

    rng = np.random.default_rng(0)
    truth = np.where(rng.random(60) < 0.9, 1, 0)
    labels = np.where(rng.random((6, 60)) < 0.8, truth, (truth + 1) % 3)  # 6 annotators, each right 80 %
    model = np.where(rng.random(60) < 0.85, truth, 2)[None]
    classes = ["pro", "neutral", "sup"]
    out = annotator_agreement(labels, annotators=tuple(f"A{i}" for i in range(6)), num_classes=3,
                              model_predictions={"ensemble": model},
                              constants=answers_without_images(np.array([0.2, 0.7, 0.1]), classes, truth),
                              n_boot=300, seed=0)
    ranks = out["model_rank"]
    assert set(ranks) == {"ensemble", "always neutral", "random, training frequencies"}  # the oracle is the same
    oracle = answers_without_images(np.array([0.5, 0.4, 0.1]), classes, truth)
    assert set(oracle) == {"always pro", "random, training frequencies", "always neutral (ORACLE: the test majority)"}
    assert ranks["always neutral"]["kind"] == "constant" and ranks["always neutral"]["rank"] == 1
    assert ranks["random, training frequencies"]["rank"] == 7  # every annotator beats guessing
    for r in ranks.values():
        lo, hi = r["rank_ci95"]
        assert 1 <= lo <= hi <= 7
    assert ranks["ensemble"]["rank_ci95"][1] > ranks["ensemble"]["rank_ci95"][0]  # not a point: it is uncertain
    sentence = rank_sentence(out)
    assert "always neutral 1" in sentence and "says nothing about the model" in sentence
