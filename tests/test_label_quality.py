"""Gold step labels from first_error_char, and label-quality metrics checkable by hand."""

import doctest
import json

import pytest

import prmflow.label.quality
from prmflow.label import first_error_of, gold_step_labels, label_quality
from prmflow.synth import check_solution

P = "Mia has 23 marbles. She finds 14 more marbles. She gives 9 marbles to Leo. How many marbles does Mia have now?"
# "23 + 14 = 38" is 0..12, "38 - 9 = 29" is 13..24, "The answer is 29" is 25..41;
# the error begins at the "8" of "38": offset 11
WRONG = "23 + 14 = 38\n38 - 9 = 29\nThe answer is 29"


def test_docstring_examples():
    failed, attempted = doctest.testmod(prmflow.label.quality)
    assert attempted > 0 and failed == 0


def test_gold_labels_by_line_steps():
    r = check_solution(P, WRONG, answer="28")
    assert r.spans == [(0, 12), (13, 24), (25, 41)] and r.first_error_char == 11
    # step 0 ends at 12 > 11: it contains the error, so it and everything after are wrong
    assert gold_step_labels(r.spans, r.first_error_char) == [False, False, False]
    # a correct solution: first_error_char = -1, all right
    r = check_solution(P, "23 + 14 = 37\n37 - 9 = 28\nThe answer is 28", answer="28")
    assert gold_step_labels(r.spans, r.first_error_char) == [True, True, True]


def test_gold_labels_by_arbitrary_spans():
    # an entropy-cut partition of WRONG: "23 + 14 = 3" [0, 11), "8\n38 - 9" [11, 19), "= 29..." [19, 41)
    # [0, 11) ends exactly where the error begins: its text "23 + 14 = 3" can still become 37
    assert gold_step_labels([(0, 11), (11, 19), (19, 41)], 11) == [True, False, False]
    # the error in the last step only
    assert gold_step_labels([(0, 12), (13, 24), (25, 41)], 39) == [True, True, False]
    # no answer line: the checker puts first_error_char at len(solution), every step ends by then
    r = check_solution(P, "23 + 14 = 37\n37 - 9 = 28", answer="28")
    assert (r.first_error, r.first_error_char) == (2, 24)
    assert gold_step_labels(r.spans, r.first_error_char) == [True, True]
    assert gold_step_labels([], 5) == [] and gold_step_labels([], -1) == []


def test_gold_labels_reject_bad_input():
    with pytest.raises(ValueError, match="first_error_char"):
        gold_step_labels([(0, 3)], -2)
    with pytest.raises(ValueError, match="step 1"):
        gold_step_labels([(0, 3), (5, 4)], 2)


def test_first_error_of():
    assert first_error_of([]) == -1
    assert first_error_of([True, True, True]) == -1
    assert first_error_of([True, False, True]) == 1  # only the first False counts
    assert first_error_of([False]) == 0


def test_label_quality_by_hand():
    pred = [[True, False, False, False], [True, True], [True, True, True]]
    gold = [[True, True, False, False], [True, False], [True, True, True]]
    q = label_quality(pred, gold)
    # steps: solution 0 agrees on 3 of 4, solution 1 on 1 of 2, solution 2 on 3 of 3 -> 7 / 9
    assert q["step_acc"] == pytest.approx(7 / 9)
    # first errors pred (1, -1, -1) vs gold (2, 1, -1): only solution 2 matches -> 1 / 3
    assert q["first_error_acc"] == pytest.approx(1 / 3)
    # predicted wrong: sol 0 steps 1, 2, 3 (3 steps), of which gold-wrong: steps 2, 3 -> 2 / 3
    assert q["wrong_precision"] == pytest.approx(2 / 3)
    # gold wrong: sol 0 steps 2, 3 and sol 1 step 1 (3 steps), predicted wrong: 2 -> 2 / 3
    assert q["wrong_recall"] == pytest.approx(2 / 3)
    assert (q["n_solutions"], q["n_steps"]) == (3, 9)


def test_label_quality_simple_case():
    q = label_quality([[True, True, True, False]], [[True, True, False, False]])
    assert q["step_acc"] == 0.75  # 3 of 4 steps agree
    assert q["first_error_acc"] == 0.0  # 3 != 2
    assert q["wrong_precision"] == 1.0 and q["wrong_recall"] == 0.5  # 1 of 1 predicted, 1 of 2 caught


def test_label_quality_empty_classes_are_none_and_json_safe():
    # nothing predicted wrong and nothing wrong: precision and recall are 0/0 -> None
    q = label_quality([[True, True]], [[True, True]])
    assert q["step_acc"] == 1.0 and q["first_error_acc"] == 1.0
    assert q["wrong_precision"] is None and q["wrong_recall"] is None
    json.dumps(q, allow_nan=False)
    # no solutions at all: every ratio undefined
    assert label_quality([], []) == {
        "step_acc": None,
        "first_error_acc": None,
        "wrong_precision": None,
        "wrong_recall": None,
        "n_solutions": 0,
        "n_steps": 0,
    }
    # predicted wrong but gold all right: precision 0/1 = 0.0, recall 0/0 = None
    q = label_quality([[False]], [[True]])
    assert q["wrong_precision"] == 0.0 and q["wrong_recall"] is None


def test_label_quality_length_mismatch_names_the_solution():
    with pytest.raises(ValueError, match="solution 1: pred has 1 step labels, gold has 2"):
        label_quality([[True], [True]], [[True], [True, False]])
    with pytest.raises(ValueError, match="pred has 1 solutions, gold has 2"):
        label_quality([[True]], [[True], [True]])
