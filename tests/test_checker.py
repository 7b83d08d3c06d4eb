"""check_solution on hand-made solutions: every error kind, its step index and its character."""

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prmflow.synth import WorldConfig, check_solution, extract_answer, generate_problem, split_steps
from prmflow.synth.checker import KINDS

P = "Mia has 23 marbles. She finds 14 more marbles. She gives 9 marbles to Leo. How many marbles does Mia have now?"
REF = [37, 28]
# offsets: "23 + 14 = 37" is 0..12, "\n" at 12, "37 - 9 = 28" is 13..24, "\n" at 24,
# "The answer is 28" is 25..41 and its number starts at 25 + 14 = 39
GOOD = "23 + 14 = 37\n37 - 9 = 28\nThe answer is 28"


def kinds(r):
    return [v.kind for v in r.verdicts]


def test_correct_solution():
    r = check_solution(P, GOOD, answer="28", reference=REF)
    assert r.steps == ["23 + 14 = 37", "37 - 9 = 28", "The answer is 28"]
    assert r.spans == [(0, 12), (13, 24), (25, 41)]
    assert kinds(r) == ["ok", "ok", "ok"]
    assert all(v.ok and v.error_char == -1 and v.detail == "" for v in r.verdicts)
    assert (r.first_error, r.first_error_char, r.final_answer, r.final_correct) == (-1, -1, "28", True)


@pytest.mark.parametrize(
    "solution, first_error, kind, error_char",
    [
        # "38" vs true "37": the result starts at 10, the first differing char is its index 1
        ("23 + 14 = 38\n38 - 9 = 29\nThe answer is 29", 0, "arithmetic", 11),
        # "3" vs "37": "3" is a prefix, so the error begins where "3" ends (10 + 1)
        ("23 + 14 = 3\nThe answer is 3", 0, "arithmetic", 11),
        # "370" vs "37": the extra "0" at 10 + 2
        ("23 + 14 = 370\nThe answer is 370", 0, "arithmetic", 12),
        # "-9" vs true "9": the sign at 10 + 0 is already wrong
        ("23 - 14 = -9\nThe answer is -9", 0, "arithmetic", 10),
        # second line "37 - 9 = 29" starts at 13; its result starts at 13 + 9 = 22; "29" vs "28" -> +1
        ("23 + 14 = 37\n37 - 9 = 29\nThe answer is 29", 1, "arithmetic", 23),
        # 15 is not in the problem (23, 14, 9): the operand at offset 5
        ("23 + 15 = 38\nThe answer is 38", 0, "unknown_operand", 5),
        # unknown operand is reported before the (also wrong) arithmetic
        ("24 + 14 = 99\nThe answer is 99", 0, "unknown_operand", 0),
        # 8 is unknown: line 2 starts at 13, the "8" sits at 13 + 5
        ("23 + 14 = 37\n37 - 8 = 29\nThe answer is 29", 1, "unknown_operand", 18),
        # "+ 9" where Mia gives 9 away: right arithmetic, off the reference path -> line start 13
        ("23 + 14 = 37\n37 + 9 = 46\nThe answer is 46", 1, "off_path", 13),
        # all steps right, the answer line says 29: its number starts at 39
        ("23 + 14 = 37\n37 - 9 = 28\nThe answer is 29", 2, "wrong_answer", 39),
        ("23 + 14 = 37\n37 - 9 = 28\nThe answer is -28", 2, "wrong_answer", 39),  # the "-" at 39
        ("23 plus 14 is 37\nThe answer is 37", 0, "unparseable", 0),
        ("23 + 14 = 37\n37 - 9 = 28 marbles\nThe answer is 28", 1, "unparseable", 13),
        ("23 + 14 = 37\n37 - 9 = 28\nSo the answer is 28", 2, "unparseable", 25),
        ("23 + 14 = 37\n37 - 9 = 28\nThe answer is 28 marbles", 2, "unparseable", 25),
        ("23 + 14 = 37\n37 - 9 = 28\nThe answer is 28.5", 2, "unparseable", 25),
        ("23 × 14 = 322\nThe answer is 322", 0, "unparseable", 0),  # only + - * / are operators
        ("٢٣ + 14 = 37\nThe answer is 37", 0, "unparseable", 0),  # only ASCII digits are numbers
        # leading spaces: the step (and the error) start after them, at 2
        ("  23 + 14 = 38\nThe answer is 38", 0, "arithmetic", 2 + 11),
    ],
)
def test_first_error_of_each_kind(solution, first_error, kind, error_char):
    r = check_solution(P, solution, answer="28", reference=REF)
    assert r.first_error == first_error
    assert r.verdicts[first_error].kind == kind
    assert r.first_error_char == r.verdicts[first_error].error_char == error_char
    assert all(v.ok for v in r.verdicts[:first_error])


def test_off_path_needs_a_reference():
    # without a reference "37 + 9 = 46" is right arithmetic on known numbers; only the answer is wrong
    r = check_solution(P, "23 + 14 = 37\n37 + 9 = 46\nThe answer is 46", answer="28")
    assert kinds(r) == ["ok", "ok", "wrong_answer"]
    assert (r.first_error, r.first_error_char) == (2, 39)


def test_claimed_results_of_wrong_lines_are_usable_later():
    # 38 is wrong, but later steps may build on it: they are judged given what was written
    r = check_solution(P, "23 + 14 = 38\n38 - 9 = 29\nThe answer is 29", answer="28")
    assert kinds(r) == ["arithmetic", "ok", "wrong_answer"]
    assert r.verdicts[0].detail == "23 + 14 = 37, not 38"


def test_missing_answer_line_is_the_first_error():
    r = check_solution(P, "23 + 14 = 37\n37 - 9 = 28", answer="28", reference=REF)
    assert kinds(r) == ["ok", "ok"]
    # no step is wrong, so the missing conclusion is: index len(steps), char len(solution)
    assert (r.first_error, r.first_error_char, r.final_answer, r.final_correct) == (2, 24, None, False)
    # an earlier real error still comes first
    r = check_solution(P, "23 + 14 = 38\n38 - 9 = 29", answer="28")
    assert (r.first_error, r.first_error_char) == (0, 11)


@pytest.mark.parametrize("solution, first_error_char", [("", 0), ("\n \n", 3), ("   ", 3)])
def test_empty_solution(solution, first_error_char):
    r = check_solution(P, solution, answer="28")
    assert (r.steps, r.spans, r.verdicts) == ([], [], [])
    assert (r.first_error, r.first_error_char, r.final_answer, r.final_correct) == (0, first_error_char, None, False)


def test_crlf_and_lone_cr_lines():
    r = check_solution(P, "23 + 14 = 37\r\n37 - 9 = 28\r\nThe answer is 28\r\n", answer="28", reference=REF)
    assert r.steps == ["23 + 14 = 37", "37 - 9 = 28", "The answer is 28"]
    assert r.spans == [(0, 12), (14, 25), (27, 43)]  # each "\r\n" is 2 chars
    assert (r.first_error, r.final_correct) == (-1, True)
    r = check_solution(P, "23 + 14 = 37\r37 - 9 = 28\rThe answer is 28", answer="28")
    assert r.spans == [(0, 12), (13, 24), (25, 41)]
    assert (r.first_error, r.final_correct) == (-1, True)
    # line 2 starts at 14; "29" starts at 14 + 9 = 23 and differs from "28" at its index 1
    r = check_solution(P, "23 + 14 = 37\r\n37 - 9 = 29\r\nThe answer is 29", answer="28")
    assert (r.first_error, r.first_error_char) == (1, 24)


@pytest.mark.parametrize("solution", ["23+14=37", "23 +\t14 =  37", "23  +  14=37"])
def test_flexible_spaces(solution):
    r = check_solution(P, solution + "\n37 - 9 = 28\nThe answer is 28.", answer=28)
    assert r.first_error == -1 and r.final_correct


def test_division():
    d = "Ava has 24 stickers. She splits her stickers equally into 4 groups and keeps one group. How many?"
    assert check_solution(d, "24 / 4 = 6\nThe answer is 6", answer=6).first_error == -1
    # "8" vs "6": the result starts at 9
    assert check_solution(d, "24 / 4 = 8\nThe answer is 8", answer=6).first_error_char == 9
    t = "Tom has 7 cards, 2 boxes and 0 bags."
    # 7 / 2 = 3.5: "3" matches "3" and ends where "." would begin -> 8 + 1
    r = check_solution(t, "7 / 2 = 3")
    assert (r.verdicts[0].kind, r.first_error_char) == ("arithmetic", 9)
    assert r.verdicts[0].detail == "7 / 2 is not a whole number"
    assert check_solution(t, "7 / 2 = 4").first_error_char == 8  # "4" vs "3.5" at index 0
    assert check_solution(t, "7 / 2 = 35").first_error_char == 9  # "35" vs "3.5" at index 1
    r = check_solution(t, "7 / 0 = 0")  # division by zero: no true result, error at the start of c
    assert (r.verdicts[0].kind, r.first_error_char, r.verdicts[0].detail) == ("arithmetic", 8, "7 / 0 is undefined")
    assert check_solution(t, "0 / 7 = 0\nThe answer is 0", answer=0).first_error == -1


def test_negative_numbers_in_solutions():
    p = "Max has 5 coins and 7 cards."
    r = check_solution(p, "5 - 7 = -2\n-2 + 7 = 5\n5 - -2 = 7\nThe answer is 7", answer=7)
    assert (r.first_error, r.final_correct) == (-1, True)
    assert check_solution(p, "5 - -7 = 12").verdicts[0].kind == "unknown_operand"  # -7 is not 7


def test_without_answer_the_answer_line_must_be_a_known_value():
    r = check_solution(P, GOOD)
    assert kinds(r) == ["ok", "ok", "ok"]
    assert (r.first_error, r.final_answer, r.final_correct) == (-1, "28", False)  # no answer: never correct
    assert kinds(check_solution(P, "The answer is 23")) == ["ok"]  # a problem number
    r = check_solution(P, "23 + 14 = 37\n37 - 9 = 28\nThe answer is 99")
    assert (kinds(r)[2], r.first_error_char) == ("unknown_operand", 39)


@pytest.mark.parametrize("answer", [28, "28", " 28 ", "028"])
def test_answer_forms(answer):
    assert check_solution(P, GOOD, answer=answer).final_correct
    assert check_solution(P, GOOD.replace("is 28", "is 028"), answer=answer).final_correct


@pytest.mark.parametrize("answer", ["abc", "28.0", "", True, 28.0])
def test_bad_answer_argument_raises(answer):
    with pytest.raises(ValueError, match="answer must be an integer"):
        check_solution(P, GOOD, answer=answer)


def test_last_answer_line_is_the_final_answer():
    r = check_solution(P, GOOD.replace("The answer is 28", "The answer is 37\nThe answer is 28"), answer="28")
    assert kinds(r) == ["ok", "ok", "wrong_answer", "ok"]
    assert (r.first_error, r.final_answer, r.final_correct) == (2, "28", True)


def test_huge_numbers():
    n30, n31 = "1" * 30, "1" * 31
    p = f"Ben has {n30} and {n31} cards and 1 box."
    r = check_solution(p, f"{n30} + 1 = 1{'1' * 28}2\nThe answer is 1{'1' * 28}2")
    assert kinds(r) == ["ok", "ok"]
    assert kinds(check_solution(p, f"{n31} + 1 = 2")) == ["unparseable"]  # over 30 digits
    assert kinds(check_solution(p, f"The answer is {n31}")) == ["unparseable"]
    check_solution("9" * 10_000, "9" * 10_000 + " + 1 = 2")  # no int() on 10,000 digits


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data())
def test_one_changed_digit_is_found_exactly(seed, data):
    # change one digit of one step's result in a real canonical solution: that step, that char
    p = generate_problem(random.Random(seed), WorldConfig(), "p")
    solution = p.solution
    k = data.draw(st.integers(0, len(p.steps) - 1))
    start = sum(len(s.text) + 1 for s in p.steps[:k])
    result = str(p.steps[k].result)
    j = data.draw(st.integers(0, len(result) - 1))
    at = start + len(p.steps[k].text) - len(result) + j
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != solution[at]]))
    if j == 0 and new == "0" and len(result) > 1:
        return  # "072" is still 72 (read as a number), so it would not be an error
    r = check_solution(p.problem, solution[:at] + new + solution[at + 1 :], answer=p.answer)
    assert (r.first_error, r.first_error_char, r.verdicts[k].kind) == (k, at, "arithmetic")


_FRAGMENTS = ["23", "14", "9", "37", "28", "0", "-", "+", "*", "/", " = ", "=", " ", "\t", "\n", "\r\n", "\r",
              "The answer is ", ".", "x", "٣", "\x00", "\u2028", "9" * 31]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    problem=st.one_of(st.just(P), st.text()),
    solution=st.one_of(st.text(), st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join)),
    answer=st.one_of(st.none(), st.integers(-40, 40), st.just("28")),
    reference=st.one_of(st.none(), st.just(REF)),
)
def test_never_raises_and_keeps_invariants(problem, solution, answer, reference):
    r = check_solution(problem, solution, answer=answer, reference=reference)
    assert r.steps == split_steps(solution) == [solution[s:e] for s, e in r.spans]
    assert len(r.verdicts) == len(r.steps)
    for v, (s, e) in zip(r.verdicts, r.spans):
        assert v.kind in KINDS
        assert v.ok == (v.kind == "ok") == (v.error_char == -1)
        assert v.ok or s <= v.error_char <= e  # the error lies inside its step (or right at its end)
    bad = [i for i, v in enumerate(r.verdicts) if not v.ok]
    if bad:
        assert (r.first_error, r.first_error_char) == (bad[0], r.verdicts[bad[0]].error_char)
    elif r.final_answer is None:
        assert (r.first_error, r.first_error_char) == (len(r.steps), len(solution))
    else:
        assert (r.first_error, r.first_error_char) == (-1, -1)
    assert r.final_answer is None or re.fullmatch(r"-?[0-9]+", r.final_answer)
    if answer is None:
        assert not r.final_correct
    else:
        assert r.first_error != -1 or r.final_correct
        assert r.final_correct or r.first_error != -1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 42", "42"),
        ("The answer is -7.", "-7"),
        ("The answer is 42.  \n", "42"),
        ("The answer is 1\nblah\nThe answer is 2", "2"),  # the LAST one
        ("The answer is 1\nThe answer is two", None),  # the last one decides, and it has no number
        ("The answer is 5.5", None),
        ("The answer is 12 apples", None),
        ("no conclusion", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected
