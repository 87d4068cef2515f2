"""The consensus set: list parsing, matching annotators' tasks, the vote, the tie rule, agreement."""

from __future__ import annotations

import numpy as np
import pytest

from anklealign.ingest.consensus import Listed, annotator_labels, fleiss_kappa, parse_list, tally
from anklealign.ingest.labelstudio import Task


def test_parse_list_windows_paths_bom_crlf() -> None:
    data = "\ufeffanklealign\\D6AE9F\\photo 01.jpg\r\n\r\nanklealign/NC1O2T/x.JPG\r\n".encode()
    assert parse_list(data) == [(1, ["anklealign", "D6AE9F", "photo 01.jpg"]), (3, ["anklealign", "NC1O2T", "x.JPG"])]


# Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> kappa 0.210.
WIKIPEDIA = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])


def test_fleiss_kappa_worked_example() -> None:
    assert fleiss_kappa(WIKIPEDIA) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_by_hand_with_unequal_raters() -> None:
    # item 1: 3 raters (2 A, 1 B): P = (2*1)/(3*2) = 1/3; item 2: 2 raters (2 B): P = 1; item 3: 1 rater: left out
    # P_bar = 2/3; shares over the 5 ratings of items 1-2: A 2/5, B 3/5 -> P_e = 13/25
    counts = np.array([[2, 1, 0], [0, 2, 0], [0, 0, 1]])
    assert fleiss_kappa(counts) == pytest.approx((2 / 3 - 13 / 25) / (1 - 13 / 25))
    assert fleiss_kappa(np.array([[1, 0, 0]])) is None         # nobody to agree with
    assert fleiss_kappa(np.array([[3, 0, 0], [2, 0, 0]])) is None  # one category only: undefined


# Four annotators (rows) x five images (columns), -1 = no label.
LABELS = np.array([
    [1, 0, 1, 2, 0],    # a0 always agrees with the majority
    [1, 0, 1, 2, -1],
    [0, 2, 1, 2, 1],    # a2 disagrees on two of the four clear images
    [1, 0, 2, 2, -1],
])


def test_votes_majority_and_agreement() -> None:
    result = tally(LABELS, 3)
    assert result.votes.tolist() == [[1, 3, 0], [3, 0, 1], [0, 3, 1], [0, 0, 4], [1, 1, 0]]
    assert result.ties.tolist() == [False, False, False, False, True]
    # with the majority: (3/4 + 3/4 + 3/4 + 1 + 1/2) / 5
    assert result.agreement["mean_with_majority"] == pytest.approx((0.75 * 3 + 1 + 0.5) / 5)
    # pairwise: 6 pairs per clear image; agreeing pairs 3, 3, 3, 6; tied image 0 of 1
    assert result.agreement["pairwise"] == pytest.approx((0.5 + 0.5 + 0.5 + 1 + 0) / 5)
    assert result.agreement["fleiss_kappa"] == pytest.approx(fleiss_kappa(result.votes))


def test_tie_goes_to_the_more_reliable_annotators() -> None:
    # image 4: a0 says pronation, a2 says neutral. a0 agreed 4/4 with clear majorities -> weight 5/6;
    # a2 agreed 2/4 -> 3/6. Pronation wins although neutral is the more frequent majority class.
    assert tally(LABELS, 3).majority.tolist() == [1, 0, 1, 2, 0]


def test_tie_between_equally_reliable_annotators_goes_to_the_frequent_class() -> None:
    labels = np.array([[1, 1, 0, 0], [1, 1, 0, 1]])   # image 3: a0 pronation, a1 neutral; both 3/3 -> equal
    result = tally(labels, 3)
    assert result.ties.tolist() == [False, False, False, True]
    assert result.majority[3] == 1   # neutral: majority of 2 of the 3 clear images


def _task(name: str, label: int | None, ref: str = "", order: int = 0) -> Task:
    return Task(name=name, ref=ref or f"/data/upload/1/0a0b0c0d-{name}", label=label, raw_label=str(label),
                status="labelled" if label is not None else "empty result", upload_order=order)


LISTED = [Listed("AAAA11/x.jpg", "x.jpg", "AAAA11"), Listed("BBBB22/x.jpg", "x.jpg", "BBBB22"),
          Listed("AAAA11/y.jpg", "y.jpg", "AAAA11")]


@pytest.mark.parametrize(("tasks", "row", "same_picture", "order_paired"), [
    # one task for a name listed twice: which image it was is unknown -> no vote for either
    ([_task("x.jpg", 0), _task("y.jpg", 1)], [-1, -1, 1], False, 0),
    # ... unless the two listed images are the same picture
    ([_task("x.jpg", 0)], [0, 0, -1], True, 0),
    # two tasks with one label for two images: every pairing gives both that label
    ([_task("x.jpg", 0), _task("x.jpg", 0)], [0, 0, -1], False, 0),
    # two tasks with different labels: paired in upload order with the list order (and counted)
    ([_task("x.jpg", 0, order=7), _task("x.jpg", 1, order=9), _task("y.jpg", 2)], [0, 1, 2], False, 2),
    ([_task("x.jpg", 0, order=9), _task("x.jpg", 1, order=7)], [1, 0, -1], False, 2),
    # an unlabelled task keeps its place in the pairing
    ([_task("x.jpg", None, order=1), _task("x.jpg", 2, order=2)], [-1, 2, -1], False, 1),
    # a folder code in the name or path picks the folder; the rest is then unique
    ([_task("x_BBBB22.jpg", 1), _task("x.jpg", 0)], [0, 1, -1], False, 0),
    ([_task("x.jpg", 2, ref="/data/local-files/?d=anklealign/AAAA11/x.jpg")], [2, -1, -1], False, 0),
    # one annotator contradicting itself on one image gives it no vote
    ([_task("y.jpg", 0), _task("y_2.jpg", 1), _task("x_AAAA11.jpg", 1)], [1, -1, -1], False, 0),
])
def test_repeated_names_in_the_consensus(tasks: list[Task], row: list[int], same_picture: bool,
                                         order_paired: int) -> None:
    result = annotator_labels(LISTED, {"ANN001": tasks}, codes=["AAAA11", "BBBB22", "ANN001"],
                              same_content=lambda ids: same_picture)
    assert result.labels.tolist() == [row]
    assert result.order_paired == order_paired


def test_annotator_without_matching_labels_is_not_usable() -> None:
    result = annotator_labels(LISTED, {"ANN001": [_task("y.jpg", 1)], "ANN002": [_task("zzz.jpg", 1)]},
                              codes=["AAAA11", "BBBB22"], same_content=lambda ids: False)
    assert result.annotators == ["ANN001"]
    assert result.unusable == {"ANN002": "yields no label for any listed image"}
    assert result.notes == [{"annotator": "ANN002", "task": "zzz.jpg", "problem": "names no listed image"}]
