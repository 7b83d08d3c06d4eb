import math

import pytest

from prmflow.evaluate.baselines import all_ones, entropy_step_scores
from prmflow.evaluate.processbench import predict_first_error
from prmflow.evaluate.synthetic import balance, processbench_rows, split_subsets

PROBLEM = {
    "id": "p",
    "problem": "Mia has 23 marbles. She finds 14 more marbles. She gives 9 marbles to Leo. "
    "How many marbles does Mia have now?",
    "answer": "28",
    "solution": "23 + 14 = 37\n37 - 9 = 28\nThe answer is 28",
}


def test_processbench_rows_use_checker_labels_and_leave_out_unfinished():
    texts = [
        "23 + 14 = 37\n37 - 9 = 28\nThe answer is 28",  # all right -> label -1
        "23 + 14 = 37\n37 - 9 = 29\nThe answer is 29",  # arithmetic error on line 1 -> label 1
        "23 + 14 = 37\n37 + 9 = 46\nThe answer is 46",  # off the path on line 1 -> label 1
        "23 + 14 = 37\n37 - 9 = 28",  # never answers -> left out
    ]
    rows, left_out = processbench_rows([PROBLEM], [texts], generator="tiny")
    assert left_out == 1
    assert [r["label"] for r in rows] == [-1, 1, 1]
    assert [r["final_answer_correct"] for r in rows] == [True, False, False]
    assert rows[1]["steps"] == ["23 + 14 = 37", "37 - 9 = 29", "The answer is 29"]
    assert {r["generator"] for r in rows} == {"tiny"}


def _rows(n_correct, n_wrong):
    return [{"id": f"c{i}", "label": -1} for i in range(n_correct)] + [
        {"id": f"w{i}", "label": 0} for i in range(n_wrong)
    ]


@pytest.mark.parametrize(
    "nc, nw, f, want",
    [
        (3, 5, 0.5, (3, 3)),  # limited by the 3 correct rows
        (10, 4, 0.5, (4, 4)),  # limited by the 4 wrong rows
        (10, 10, 0.25, (3, 9)),  # 0.25/0.75 * 10 = 3.33 -> 3 correct; then 3 * 0.75/0.25 = 9 wrong (exactly 25%)
    ],
)
def test_balance(nc, nw, f, want):
    out = balance(_rows(nc, nw), f, seed=0)
    assert (sum(r["label"] == -1 for r in out), sum(r["label"] != -1 for r in out)) == want
    assert out == balance(_rows(nc, nw), f, seed=0)  # deterministic


def test_split_subsets_is_stratified():
    out = split_subsets(_rows(10, 20), 0.3, seed=1)
    calib = [r for r in out if r["subset"] == "calib"]
    assert sum(r["label"] == -1 for r in calib) == 3 and sum(r["label"] != -1 for r in calib) == 6


def test_baselines():
    # all-ones never predicts an error
    assert predict_first_error(all_ones(4), 0.5) == -1
    # a step whose worst token has entropy 2.0 scores e^-2
    s = entropy_step_scores([0.0, 2.0, 0.5], [(0, 1), (1, 2), (2, 3)], [(0, 1), (1, 3)])
    assert s[0] == 1.0 and math.isclose(s[1], math.exp(-2.0))
    with pytest.raises(ValueError, match="non-finite"):
        entropy_step_scores([float("nan")], [(0, 1)], [(0, 1)])
