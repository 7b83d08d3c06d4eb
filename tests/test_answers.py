"""Real-text verdicts: answer extraction and verification, grade's dispatch by row source, the MC
verifier's real mode, and the synthetic world's verdicts left exactly as they were."""

import doctest
import json
import re
from pathlib import Path

import pytest

import prmflow.answers
import prmflow.policy.evaluate
from prmflow.answers import (
    REAL_SOURCES,
    answer_key,
    answers_match,
    extract_final_answer,
    is_real,
    parse_number,
    verify_answer,
)
from prmflow.label.mc import answer_verifier
from prmflow.label.quality import gold_step_labels, label_quality
from prmflow.policy.evaluate import Graded, grade, solve_stats
from prmflow.synth import generate_problems, load_gsm8k
from prmflow.synth.sources import SOURCES

GSM8K_TRAIN = Path(__file__).resolve().parents[2] / "shared/data/gsm8k/train.jsonl"
NO_GSM8K = pytest.mark.skipif(not GSM8K_TRAIN.is_file(), reason=f"GSM8K not found at {GSM8K_TRAIN}")


@pytest.mark.parametrize("module", [prmflow.answers, prmflow.policy.evaluate])
def test_docstring_examples(module):
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


# --------------------------------------------------------------------------- formats

# each format with the right number (260) must pass, with a wrong one (250 / 26 / 2600) must fail
FORMATS = [
    "So the farmer has \\boxed{{{n}}} sheep.",
    "2 * 130 = {n}\n#### {n}",
    "The answer is $ {n} $.",
    "The answer is ${n}$.",
    "The answer is {n} sheep.",
    "The answer is: {n}",
    "The answer is **{n}**.",
    "**Answer:** {n}",
    "The final answer is $\\boxed{{{n}}}$",
    "Final answer:\n{n}",
    "the answer is {n}",
    "The answer is {n}.00",
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_right_when_right_and_wrong_when_wrong(fmt):
    assert verify_answer("260", fmt.format(n=260))
    for wrong in (250, 26, 2600, -260):
        assert not verify_answer("260", fmt.format(n=wrong)), fmt.format(n=wrong)


@pytest.mark.parametrize("text, gold", [
    ("It costs $1,234 in total.\n#### $1,234", "1234"),
    ("The answer is 1,234,567.", "1234567"),
    ("The temperature falls to -3 degrees.\nThe answer is -3", "-3"),
    ("The answer is −3", "-3"),              # a Unicode minus
    ("The answer is 0.5", "0.5"),
    ("The answer is 1/2", "0.5"),
    ("The answer is $\\frac{1}{2}$", "0.5"),  # LaTeX goes to math-verify
    ("#### \\frac{520}{2}", "260"),
    ("The answer is x = 3 + 4 = 7", "7"),     # after the last "="
    ("The answer is 25%.", "25"),
    ("\\boxed{\\$260}", "260"),
    ("\\boxed{260 \\text{ sheep}}", "260"),
])  # fmt: skip
def test_numbers(text, gold):
    assert verify_answer(gold, text)


@pytest.mark.parametrize("gold, right, wrong", [
    ("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}", "\\boxed{\\frac{1}{3}}"),
    ("\\frac{1}{2}", "The answer is $0.5$.", "The answer is $0.6$."),
    ("x^2+1", "\\boxed{1 + x^2}", "\\boxed{x^2 - 1}"),
    ("\\sqrt{2}", "\\boxed{\\sqrt{2}}", "\\boxed{1.41}"),
    ("(1,2)", "#### (1, 2)", "#### (2, 1)"),
])  # fmt: skip
def test_math_answers_via_math_verify(gold, right, wrong):
    assert verify_answer(gold, right)
    assert not verify_answer(gold, wrong)


def test_priority_boxed_then_hashes_then_answer_is():
    # all three present: the last \boxed{} wins, wherever it stands
    text = "\\boxed{1}\nThe answer is 3\n#### 2\n\\boxed{4} is wrong, the answer is 5"
    assert extract_final_answer(text) == "4"
    # no box: the last "####" beats any "answer is"
    assert extract_final_answer("#### 2\nThe answer is 3\n#### 6\nThe answer is 5") == "6"
    # only "answer is": the last one
    assert extract_final_answer("The answer is 3.\nNo wait, the answer is 5.") == "5"
    # an unclosed box does not count; the next rule applies
    assert extract_final_answer("#### 7\n\\boxed{8") == "7"
    assert extract_final_answer("I do not know.") is None
    assert not verify_answer("7", "I do not know.")
    assert not verify_answer("7", "The answer is")
    assert not verify_answer("7", "7")  # a bare number is not a stated answer


def test_parse_number_edges():
    assert parse_number("1,234") == 1234 and parse_number("12,34") == 12  # not a thousands separator
    assert parse_number("5/0") is None
    assert parse_number("no digits") is None
    assert parse_number(".5 of it") == parse_number("0.5")
    assert answers_match("1,200", "1200") and not answers_match("1200", "120")


def test_answer_key_groups_equal_numbers_for_votes():
    same = ["260", "260.00", "$260", "260 sheep", "**260**", "\\$260"]
    assert {answer_key(a) for a in same} == {"260"}
    assert answer_key("-3") == "-3" != answer_key("3")
    assert answer_key("2 or 3") != answer_key("2")  # several numbers: not a plain number
    # every key groups only answers the verdict treats as equal (on these numbers)
    for a in same:
        assert answers_match("260", a)


def test_sources_agree():
    assert set(REAL_SOURCES) | {"synthetic"} == set(SOURCES)
    with pytest.raises(ValueError, match="field 'source'.*'gsm8K'"):
        is_real({"id": "x", "source": "gsm8K"})


# --------------------------------------------------------------------------- grade


def test_grade_real_row_checks_the_final_answer_only():
    row = {
        "id": "g",
        "problem": "Weng earns $12 an hour. How much for 50 minutes?",
        "answer": "10",
        "solution": "12/60 = 0.2 per minute.\n0.2 x 50 = 10",
        "source": "gsm8k",
    }
    good = "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\nThe answer is $10."
    g = grade(row, good)
    assert g == Graded(first_error=None, final_correct=True, n_steps=3, first_error_char=None)
    assert not g.step_truth
    assert grade(row, good.replace("$10.", "$12.")).final_correct is False
    # the same text on a row without a source is the synthetic world's: natural language = wrong step 0
    synthetic = {k: v for k, v in row.items() if k != "source"}
    assert grade(synthetic, good).first_error == 0


def test_grade_synthetic_rows_unchanged():
    # the synthetic world's own verdicts (exact checker), as before the source dispatch
    for p in generate_problems(30, seed=3):
        row = p.to_row()
        assert "source" not in row
        g = grade(row, p.solution)
        assert (g.first_error, g.final_correct, g.first_error_char) == (-1, True, -1)
        broken = p.solution.replace("The answer is", "The answer is 1")  # e.g. 37 -> 137
        g = grade(row, broken)
        assert g.final_correct is False and g.first_error == len(p.solution.splitlines()) - 1
    row = generate_problems(1, seed=0)[0].to_row()
    assert grade(row, "The answer is " + row["answer"] + " apples").final_correct is False  # not an answer there


def test_solve_stats_with_unknown_first_errors():
    known = [Graded(-1, True, 3), Graded(1, False, 3)]
    before = solve_stats(known)
    assert "n_unknown_first_error" not in before and before["process_correct_rate"] == 0.5
    mixed = solve_stats(known + [Graded(None, True, 4, None)])
    assert mixed["solve_rate"] == pytest.approx(2 / 3)
    assert mixed["process_correct_rate"] == 0.5 and mixed["first_error_hist"] == {"-1": 1, "1": 1}
    assert mixed["n_unknown_first_error"] == 1


def test_gold_label_functions_refuse_unknown_truth():
    with pytest.raises(ValueError, match="no step-level truth"):
        gold_step_labels([(0, 3)], None)
    with pytest.raises(ValueError, match="solution 1: gold labels are None"):
        label_quality([[True], [False]], [[True], None])


# --------------------------------------------------------------------------- the MC verifier


def test_verifier_real_mode_reads_prefix_plus_rollout():
    verify = answer_verifier("260", ["He has 130 + 130 = 260 sheep.\n", "He has 260.\nThe answer is 2"], real=True)
    assert verify(0, "The answer is 260 sheep.") and verify(0, "#### 260") and verify(0, "\\boxed{260}")
    assert verify(1, "60") and not verify(1, "6") and not verify(0, "so 260")


def test_verifier_synthetic_default_unchanged():
    # the synthetic world: only a bare integer after "The answer is " counts
    verify = answer_verifier("5", [""])
    assert verify(0, "The answer is 5") and verify(0, "The answer is 5.")
    for text in ("The answer is 5 apples", "#### 5", "\\boxed{5}", "The answer is $5$"):
        assert not verify(0, text), text


# --------------------------------------------------------------------------- real GSM8K rows


def strip_calc(solution):
    return re.sub(r"<<[^>]*>>", "", solution)


@NO_GSM8K
def test_gold_solutions_of_real_gsm8k_rows_grade_correct():
    rows = load_gsm8k(GSM8K_TRAIN)[:200]
    assert all(r["source"] == "gsm8k" for r in rows)
    with open(GSM8K_TRAIN, encoding="utf-8") as f:
        raw_answers = [json.loads(next(f))["answer"] for _ in rows]  # the file's text, <<calc>> and "####" kept
    for r, raw_answer in zip(rows, raw_answers, strict=True):
        assert grade(r, raw_answer).final_correct, r["id"]
        raw = f"{strip_calc(r['solution'])}\n#### {r['answer']}"
        assert grade(r, raw).final_correct, r["id"]
        said = f"{strip_calc(r['solution'])}\nThe answer is {r['answer']}."
        assert grade(r, said).final_correct, r["id"]
        wrong = str(int(float(r["answer"])) + 1)
        assert not grade(r, f"{strip_calc(r['solution'])}\n#### {wrong}").final_correct, r["id"]
        assert not grade(r, f"{strip_calc(r['solution'])}\nThe answer is {wrong}.").final_correct, r["id"]
        verify = answer_verifier(r["answer"], [strip_calc(r["solution"]) + "\n"], real=True)
        assert verify(0, f"The answer is {r['answer']}") and not verify(0, f"The answer is {wrong}")


@NO_GSM8K
def test_shuffled_gsm8k_is_a_seeded_permutation():
    rows = load_gsm8k(GSM8K_TRAIN)
    a, b = load_gsm8k(GSM8K_TRAIN, shuffle_seed=0), load_gsm8k(GSM8K_TRAIN, shuffle_seed=0)
    assert a == b and a != rows and sorted(r["id"] for r in a) == sorted(r["id"] for r in rows)
    assert load_gsm8k(GSM8K_TRAIN, shuffle_seed=1)[:10] != a[:10]
