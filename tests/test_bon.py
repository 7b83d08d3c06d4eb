import doctest
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prmflow.evaluate import bon
from prmflow.evaluate.bon import (
    METHODS,
    aggregate,
    bon_accuracy,
    majority_vote,
    normalize_answer,
    select_prm,
    weighted_vote,
)

# --------------------------------------------------------------------------- aggregate / select


def test_aggregate_each_how():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "min") == 0.5
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "prod") == pytest.approx(0.36)  # 0.9 * 0.5 * 0.8
    assert aggregate(s, "mean") == pytest.approx(2.2 / 3)
    assert aggregate([0.3], "prod") == 0.3


def test_aggregate_errors():
    with pytest.raises(ValueError, match="no step scores"):
        aggregate([], "min")
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate([0.5], "max")
    with pytest.raises(ValueError, match="index 1"):
        aggregate([0.5, math.nan], "mean")


# Each aggregation prefers a different candidate:
#   c0 [0.6, 0.6, 0.6]  min .6   last .6   prod .216  mean .6
#   c1 [0.5, 0.99, 0.99] min .5  last .99  prod .49   mean .827
#   c2 [1.0, 1.0, 0.55] min .55  last .55  prod .55   mean .85
#   c3 [0.9, 0.95, 0.1] min .1   last .1   prod .086  mean .65
CANDS = [[0.6, 0.6, 0.6], [0.5, 0.99, 0.99], [1.0, 1.0, 0.55], [0.9, 0.95, 0.1]]


@pytest.mark.parametrize("how, expected", [("min", 0), ("last", 1), ("prod", 2), ("mean", 2)])
def test_select_prm_each_how(how, expected):
    assert select_prm(CANDS, how) == expected


def test_select_prm_ties_go_to_lowest_index():
    assert select_prm([[0.2], [0.7], [0.7], [0.1]], "min") == 1
    assert select_prm([[0.5, 0.5], [0.5, 0.5]], "prod") == 0
    assert select_prm([[0.3]], "last") == 0


def test_select_prm_errors_name_the_candidate():
    with pytest.raises(ValueError, match="no candidates"):
        select_prm([], "min")
    with pytest.raises(ValueError, match="candidate 1: no step scores"):
        select_prm([[0.5], []], "min")


# --------------------------------------------------------------------------- votes


def test_normalize_answer():
    assert normalize_answer("  42. ") == "42"
    assert normalize_answer("42") == normalize_answer("42.") == "42"
    assert normalize_answer("3.50") == "3.50"  # only trailing dots go; no numeric parsing
    assert normalize_answer("\\frac{1}{2}") == "\\frac{1}{2}"
    assert normalize_answer("") is None and normalize_answer(" . ") is None and normalize_answer(None) is None
    with pytest.raises(TypeError):
        normalize_answer(42)


def test_majority_vote():
    assert majority_vote(["3", "5", "5"]) == "5"
    assert majority_vote(["3", "5", "5", "3"]) == "3"  # 2-2 tie -> "3" was seen first
    assert majority_vote([None, None, "5", "3", "3", None]) == "3"  # None ignored
    assert majority_vote(["7.", " 7", "8"]) == "7"  # normalized before counting
    assert majority_vote([None, "", None]) is None
    assert majority_vote([]) is None


def test_weighted_vote():
    # 3 votes for "1" with weight 0.1 each (0.3) lose to one "2" with 0.9
    assert weighted_vote(["1", "1", "2", "1"], [0.1, 0.1, 0.9, 0.1]) == "2"
    # tie 0.5 vs 0.5 -> "2" seen first
    assert weighted_vote(["2", "1", "1"], [0.5, 0.25, 0.25]) == "2"
    # a None answer's weight counts for nothing
    assert weighted_vote([None, "1"], [5.0, 0.1]) == "1"
    assert weighted_vote([None], [1.0]) is None
    with pytest.raises(ValueError, match="2 answers but 1 weights"):
        weighted_vote(["1", "2"], [1.0])
    with pytest.raises(ValueError, match="index 0"):
        weighted_vote(["1"], [math.inf])


# --------------------------------------------------------------------------- bon_accuracy


def cand(answer, *scores):
    return {"answer": answer, "step_scores": list(scores)}


# Problem A, gold "12": min / last / prod / mean per candidate
#   c0 "10"  .3 / .3  / .27 / .6
#   c1 "12"  .6 / .7  / .42 / .65
#   c2 "10"  .5 / .5  / .40 / .65
#   c3 "12." .4 / .95 / .38 / .675
# Problem B, gold "7":
#   c0 "7"   .5 / .5  / .25  / .5
#   c1 "8"   .9 / .9  / .81  / .9
#   c2 "7"   .3 / .3  / .18  / .45
#   c3 "7"   .2 / .99 / .198 / .595
PROBLEMS = [
    {
        "id": "A",
        "answer": "12",
        "candidates": [cand("10", 0.9, 0.3), cand("12", 0.6, 0.7), cand("10", 0.8, 0.5), cand("12.", 0.4, 0.95)],
    },
    {
        "id": "B",
        "answer": " 7",
        "candidates": [cand("7", 0.5, 0.5), cand("8", 0.9, 0.9), cand("7", 0.6, 0.3), cand("7", 0.2, 0.99)],
    },
]


def test_bon_accuracy_hand_made():
    out = bon_accuracy(PROBLEMS, ns=[1, 2, 4], how="min")
    acc = out["accuracy"]
    assert out["ns"] == [1, 2, 4] and out["n_problems"] == 2 and out["how"] == "min"
    assert list(acc) == list(METHODS)
    # first: A c0 "10" wrong, B c0 "7" right, at every N
    assert acc["first"] == [0.5, 0.5, 0.5]
    # oracle: A has no "12" at N=1, one at N>=2; B right from N=1
    assert acc["oracle"] == [0.5, 1.0, 1.0]
    # majority: A ties 1-1 / 2-2 between "10" and "12" -> "10" seen first, wrong; B "7" leads or ties first
    assert acc["majority_vote"] == [0.5, 0.5, 0.5]
    # weighted (min): A N=2 10:.3 vs 12:.6 right, N=4 10:.8 vs 12:1.0 right;
    #                 B N=2 7:.5 vs 8:.9 wrong,   N=4 7:1.0 vs 8:.9 right
    assert acc["weighted_vote"] == [0.5, 0.5, 1.0]
    # prm_min: A picks c1 (.6) at N=2,4 right; B picks c1 "8" (.9) at N=2,4 wrong
    assert acc["prm_min"] == [0.5, 0.5, 0.5]
    # prm_last: A c1 (.7) then c3 "12." (.95) right; B c1 (.9) wrong then c3 "7" (.99) right
    assert acc["prm_last"] == [0.5, 0.5, 1.0]
    # prm_prod: A c1 (.42) right; B c1 (.81) wrong
    assert acc["prm_prod"] == [0.5, 0.5, 0.5]
    # prm_mean: A c1 (.65) then c3 (.675) right; B c1 (.9) wrong
    assert acc["prm_mean"] == [0.5, 0.5, 0.5]
    json.dumps(out, allow_nan=False)


def test_bon_accuracy_how_sets_vote_weights_only():
    # weighted (last): A N=4 10:.8 vs 12:1.65 right; B N=2 7:.5 vs 8:.9 wrong, N=4 7:1.79 vs 8:.9 right
    out = bon_accuracy(PROBLEMS, ns=[2, 4], methods=["weighted_vote", "prm_min"], how="last")
    assert out["accuracy"] == {"weighted_vote": [0.5, 1.0], "prm_min": [0.5, 0.5]}


def test_bon_accuracy_uses_first_n_candidates_only():
    # candidate 2 has no step scores: fine when N <= 2 never reaches it
    problems = [{"answer": "1", "candidates": [cand("2", 0.9), cand("1", 0.8), cand("1")]}]
    out = bon_accuracy(problems, ns=[1, 2])
    assert out["accuracy"]["oracle"] == [0.0, 1.0]
    assert out["accuracy"]["prm_min"] == [0.0, 0.0]  # 0.9 beats 0.8


def test_bon_accuracy_none_answer_is_never_right():
    problems = [{"answer": "5", "candidates": [cand(None, 0.99), cand("5", 0.1)]}]
    acc = bon_accuracy(problems, ns=[2])["accuracy"]
    assert acc["prm_min"] == [0.0]  # picks the unanswered candidate
    assert acc["majority_vote"] == [1.0] and acc["weighted_vote"] == [1.0]


def test_bon_accuracy_errors():
    with pytest.raises(ValueError, match="problem 'A': 4 candidates, fewer than N = 8"):
        bon_accuracy(PROBLEMS, ns=[1, 8])
    with pytest.raises(ValueError, match="unknown methods"):
        bon_accuracy(PROBLEMS, methods=["best"], ns=[1])
    with pytest.raises(ValueError, match="positive ints"):
        bon_accuracy(PROBLEMS, ns=[0, 1])
    with pytest.raises(ValueError, match="no problems"):
        bon_accuracy([], ns=[1])
    bad = [{"answer": "1", "candidates": [cand("1", 0.5), cand("2")]}]
    with pytest.raises(ValueError, match="problem 0: no step scores"):
        bon_accuracy(bad, ns=[2], methods=["prm_min"])
    assert bon_accuracy(bad, ns=[2], methods=["majority_vote", "oracle"])["accuracy"]["oracle"] == [1.0]
    with pytest.raises(ValueError, match="empty reference"):
        bon_accuracy([{"answer": " ", "candidates": [cand("1", 0.5)]}], ns=[1])


answer = st.sampled_from(["1", "2", "3", None])
step_scores = st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.8, 1.0]), min_size=1, max_size=3)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(answer, step_scores), min_size=4, max_size=4), st.sampled_from(["1", "2"]))
def test_bon_accuracy_matches_selection_functions(cands, gold):
    problem = {"answer": gold, "candidates": [cand(a, *s) for a, s in cands]}
    out = bon_accuracy([problem], ns=[1, 2, 4], how="prod")["accuracy"]
    for k, n in enumerate([1, 2, 4]):
        first_n = cands[:n]
        for how in ("min", "last", "prod", "mean"):
            pick = select_prm([s for _, s in first_n], how)
            assert out[f"prm_{how}"][k] == float(first_n[pick][0] == gold)
        weights = [aggregate(s, "prod") for _, s in first_n]
        assert out["weighted_vote"][k] == float(weighted_vote([a for a, _ in first_n], weights) == gold)
        assert out["majority_vote"][k] == float(majority_vote([a for a, _ in first_n]) == gold)
        # oracle bounds every method from above
        assert all(out[m][k] <= out["oracle"][k] for m in METHODS)


def test_docstring_examples():
    assert doctest.testmod(bon).failed == 0


# --------------------------------------------------------------------------- verified (real) answers


def verified(answers, scores, is_right, equal):
    """Candidates in verified mode: verdicts from `is_right`, classes from `equal`."""
    from prmflow.evaluate.bon import answer_classes

    classes = answer_classes(answers, equal)
    return [
        {"answer": a, "step_scores": s, "correct": is_right(a), "answer_class": k}
        for a, s, k in zip(answers, scores, classes)
    ]


def numeric_equal(a, b):
    """A stand-in for math-verify: equal as numbers once '$' is stripped."""
    try:
        return float(a.strip("$")) == float(b.strip("$"))
    except ValueError:
        return False


def test_majority_vote_groups_by_verified_equivalence():
    from prmflow.evaluate.bon import answer_classes

    answers = ["20", "18", "20", "$18$", "18.0", None]
    assert answer_classes(answers, numeric_equal) == [0, 1, 0, 1, 1, None]
    right = lambda a: a is not None and numeric_equal(a, "18")  # noqa: E731
    cands = verified(answers, [[0.5]] * 6, right, numeric_equal)
    acc = bon_accuracy([{"id": "q", "candidates": cands}], ns=[3, 5], methods=["majority_vote", "oracle"])["accuracy"]
    # N=3: "20" x2 vs the 18-class x1 -> wrong; N=5: the 18-class x3 ("18", "$18$", "18.0") beats "20" x2
    assert acc == {"majority_vote": [0.0, 1.0], "oracle": [1.0, 1.0]}
    # raw strings would have voted "20" at N=5 (2 vs 1 vs 1 vs 1)
    assert majority_vote(answers[:5]) == "20"


def test_verified_vote_counts_classes_not_verdicts():
    # two right classes that the verifier did not merge must not pool their votes against a wrong one
    cands = [
        {"answer": a, "step_scores": [0.5], "correct": ok, "answer_class": k}
        for a, ok, k in [("7", False, 0), ("7", False, 0), ("x", True, 2), ("y", True, 3)]
    ]
    acc = bon_accuracy([{"candidates": cands}], ns=[4], methods=["majority_vote", "prm_min", "oracle"])["accuracy"]
    assert acc == {"majority_vote": [0.0], "prm_min": [0.0], "oracle": [1.0]}  # "7" x2 wins; ties -> c0 (wrong)


def test_verified_mode_checks_classes():
    cands = [
        {"answer": "1", "step_scores": [0.5], "correct": True, "answer_class": 1},
        {"answer": "1", "step_scores": [0.5], "correct": True, "answer_class": 1},
    ]
    with pytest.raises(ValueError, match="candidate 0: answer_class 1 is not the index of its class's first member"):
        bon_accuracy([{"candidates": cands}], ns=[2])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(answer, step_scores), min_size=4, max_size=4), st.sampled_from(["1", "2"]))
def test_verified_mode_with_string_equality_equals_string_mode(cands, gold):
    plain = bon_accuracy([{"answer": gold, "candidates": [cand(a, *s) for a, s in cands]}], ns=[1, 2, 4], how="mean")
    v = verified([a for a, _ in cands], [s for _, s in cands], lambda a: a == gold, lambda a, b: a == b)
    assert bon_accuracy([{"candidates": v}], ns=[1, 2, 4], how="mean") == plain
