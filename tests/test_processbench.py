import doctest
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prmflow.evaluate import processbench
from prmflow.evaluate.processbench import (
    calibrate_threshold,
    default_candidates,
    evaluate_subsets,
    f1_curve,
    load_processbench,
    predict_first_error,
    processbench_metrics,
)
from prmflow.io import DataError


def row(id="gsm8k-0", steps=("a", "b", "c"), label=-1, final_answer_correct=None, **kw):
    r = {
        "id": id,
        "generator": "Qwen2-7B-Instruct",
        "problem": "What is 1 + 1?",
        "steps": list(steps),
        "final_answer_correct": label == -1 if final_answer_correct is None else final_answer_correct,
        "label": label,
    }
    r.update(kw)
    return r


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- metrics


def test_metrics_hand_made():
    labels = [1, 2, -1, -1]
    preds = [1, 0, -1, -1]
    m = processbench_metrics(labels, preds)
    # 2 erroneous rows, 1 predicted at the right step -> error_acc 0.5;
    # 2 correct rows both predicted -1 -> correct_acc 1.0; f1 = 2*0.5*1/(1.5) = 0.667
    assert m["error_acc"] == 0.5
    assert m["correct_acc"] == 1.0
    assert m["f1"] == pytest.approx(2 / 3)
    assert (m["n_err"], m["n_correct"]) == (2, 2)


def test_metrics_late_and_missed_errors_both_count_wrong():
    # label 1: pred 2 is too late, pred -1 misses it, pred 0 is too early -> error_acc 0
    # correct row flagged at step 0 -> correct_acc 0; both 0 -> f1 0.0 (not NaN as in the reference)
    m = processbench_metrics([1, 1, 1, -1], [2, -1, 0, 0])
    assert (m["error_acc"], m["correct_acc"], m["f1"]) == (0.0, 0.0, 0.0)


def test_metrics_empty_class_is_none_and_json_safe():
    only_err = processbench_metrics([0, 2], [0, 1])  # 1/2 errors found, no correct rows
    assert (only_err["error_acc"], only_err["correct_acc"], only_err["f1"]) == (0.5, None, None)
    only_ok = processbench_metrics([-1], [-1])
    assert (only_ok["error_acc"], only_ok["correct_acc"], only_ok["f1"]) == (None, 1.0, None)
    empty = processbench_metrics([], [])
    assert (empty["n_err"], empty["n_correct"], empty["f1"]) == (0, 0, None)
    json.dumps([only_err, only_ok, empty], allow_nan=False)


def test_metrics_rejects_mismatched_lengths_and_bad_labels():
    with pytest.raises(ValueError, match="2 labels but 1"):
        processbench_metrics([0, -1], [0])
    with pytest.raises(ValueError, match="row 1"):
        processbench_metrics([0, -2], [0, -1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 4), st.integers(-1, 4)), max_size=30))
def test_metrics_bounds(pairs):
    m = processbench_metrics([p[0] for p in pairs], [p[1] for p in pairs])
    for key in ("error_acc", "correct_acc", "f1"):
        assert m[key] is None or 0.0 <= m[key] <= 1.0
    if m["f1"] is not None:
        # harmonic mean lies between the two accuracies
        assert min(m["error_acc"], m["correct_acc"]) - 1e-12 <= m["f1"]
        assert m["f1"] <= max(m["error_acc"], m["correct_acc"]) + 1e-12
    assert m["n_err"] + m["n_correct"] == len(pairs)


# --------------------------------------------------------------------------- predict_first_error


@pytest.mark.parametrize(
    "scores, threshold, expected",
    [
        ([0.9, 0.8, 0.7], 0.5, -1),  # nothing below -> every step right
        ([0.1, 0.9], 0.5, 0),  # first step wrong
        ([0.9, 0.3, 0.1], 0.5, 1),  # first of several low steps
        ([0.5, 0.5], 0.5, -1),  # equal to the threshold is not below it
        ([0.9, 0.2], 0.2, -1),
        ([], 0.5, -1),  # no steps, no error
        ([0.9, 0.6], 1.0, 0),
        ([0.0, 0.0], 0.0, -1),
    ],
)
def test_predict_first_error(scores, threshold, expected):
    assert predict_first_error(scores, threshold) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_predict_first_error_rejects_non_finite_anywhere(bad):
    with pytest.raises(ValueError, match="index 2"):
        predict_first_error([0.9, 0.8, bad], 0.5)
    with pytest.raises(ValueError, match="index 2"):  # even after the first error
        predict_first_error([0.9, 0.1, bad], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        predict_first_error([0.9], math.nan)


# --------------------------------------------------------------------------- calibration


# Correct steps score 0.9, wrong steps 0.2; steps after the first error are noise (0.9 or 0.2).
PLANTED_LABELS = [-1, -1, 0, 2, 1, -1]
PLANTED_SCORES = [
    [0.9, 0.9, 0.9],
    [0.9],
    [0.2, 0.9],
    [0.9, 0.9, 0.2, 0.2],
    [0.9, 0.2, 0.9],
    [0.9, 0.9],
]


def test_calibration_finds_planted_threshold():
    t, f1 = calibrate_threshold(PLANTED_LABELS, PLANTED_SCORES)
    # any threshold in (0.2, 0.9] separates the classes perfectly
    assert f1 == 1.0
    assert 0.2 < t <= 0.9
    assert t == 0.55  # the only default candidate inside: midpoint of 0.2 and 0.9
    assert default_candidates(PLANTED_SCORES) == [0.0, 0.55, 1.0]


def test_calibration_tie_breaking():
    # every candidate in (0.2, 0.9] gives F1 1.0 -> closest to 0.5 wins, then the smaller one
    assert calibrate_threshold(PLANTED_LABELS, PLANTED_SCORES, [0.3, 0.8, 0.5, 0.1]) == (0.5, 1.0)
    assert calibrate_threshold(PLANTED_LABELS, PLANTED_SCORES, [0.6, 0.4, 0.95]) == (0.4, 1.0)


def test_calibration_imperfect_scores():
    labels = [-1, -1, 1]
    scores = [[0.8, 0.6], [0.7, 0.3], [0.9, 0.4]]
    # candidates 0, 0.35, 0.5, 0.65, 0.75, 0.85, 1 (midpoints of 0.3 0.4 0.6 0.7 0.8 0.9)
    # tau <= 0.35: the erroneous row's 0.4 is not flagged -> error_acc 0 -> f1 0
    # tau = 0.5: row 0 -1 (right), row 1 flagged at 1 (wrong), row 2 flagged at 1 (right)
    #   -> error_acc 1, correct_acc 1/2, f1 = 2*1*0.5/1.5 = 2/3
    # tau >= 0.65: both correct rows flagged -> correct_acc 0 -> f1 0
    t, f1 = calibrate_threshold(labels, scores)
    assert f1 == pytest.approx(2 / 3)
    assert t == 0.5


def test_calibration_needs_both_classes():
    with pytest.raises(ValueError, match="erroneous and correct"):
        calibrate_threshold([-1, -1], [[0.9], [0.8]])
    with pytest.raises(ValueError, match="row 0: label 3 out of range"):
        calibrate_threshold([3], [[0.9]])
    with pytest.raises(ValueError, match="row 1: non-finite score nan at step index 0"):
        calibrate_threshold([-1, 0], [[0.9], [math.nan]])


def test_f1_curve_points():
    curve = f1_curve(PLANTED_LABELS, PLANTED_SCORES, [0.1, 0.5, 0.95])
    assert [p["threshold"] for p in curve] == [0.1, 0.5, 0.95]
    # tau=0.1: nothing flagged -> errors 0/3, correct 3/3; tau=0.95: all flagged at step 0
    # -> only the label-0 row matches (1/3), correct 0/3
    assert [(p["error_acc"], p["correct_acc"], p["f1"]) for p in curve] == [
        (0.0, 1.0, 0.0),
        (1.0, 1.0, 1.0),
        (1 / 3, 0.0, 0.0),
    ]


score = st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.7, 0.9, 1.0])


@st.composite
def labelled_rows(draw):
    scores = draw(st.lists(st.lists(score, min_size=1, max_size=5), min_size=1, max_size=12))
    labels = [draw(st.integers(-1, len(s) - 1)) for s in scores]
    return labels, scores


@settings(max_examples=200, deadline=None)
@given(labelled_rows(), st.lists(st.sampled_from([0.0, 0.05, 0.1, 0.15, 0.5, 0.6, 0.95, 1.0, 2.0]), max_size=6))
def test_f1_curve_equals_row_by_row_loop(data, thresholds):
    labels, scores = data
    fast = f1_curve(labels, scores, thresholds)
    for t, point in zip(thresholds, fast):
        slow = processbench_metrics(labels, [predict_first_error(s, t) for s in scores])
        assert point == {"threshold": t, **slow}


@settings(max_examples=100, deadline=None)
@given(labelled_rows())
def test_calibrated_f1_is_the_best_of_all_thresholds(data):
    labels, scores = data
    if all(lab == -1 for lab in labels) or all(lab != -1 for lab in labels):
        return
    t, f1 = calibrate_threshold(labels, scores)
    # default candidates cover every distinct outcome for scores in [0, 1]
    for tau in [0.0, 0.05, 0.1, 0.15, 0.3, 0.5, 0.6, 0.8, 0.95, 1.0, 1.5]:
        m = processbench_metrics(labels, [predict_first_error(s, tau) for s in scores])
        assert m["f1"] <= f1


# --------------------------------------------------------------------------- per-subset evaluation


def test_evaluate_subsets_two_subsets_and_mean_f1():
    rows = [
        {**row("g0", label=-1), "subset": "gsm8k"},
        {**row("g1", label=1), "subset": "gsm8k"},
        {**row("m0", label=-1), "subset": "math"},
        {**row("m1", label=0), "subset": "math"},
        {**row("m2", label=2), "subset": "math"},
    ]
    scores = {
        "g0": [0.9, 0.9, 0.8],  # -1, right
        "g1": [0.9, 0.1, 0.9],  # 1, right
        "m0": [0.9, 0.4, 0.9],  # 1, wrong (correct row flagged)
        "m1": [0.3, 0.9, 0.9],  # 0, right
        "m2": [0.9, 0.9, 0.9],  # -1, wrong (error missed)
        "unused": [0.1],  # extra ids are ignored
    }
    out = evaluate_subsets(rows, scores, 0.5)
    # gsm8k: error_acc 1/1, correct_acc 1/1 -> f1 1.0
    # math: error_acc 1/2, correct_acc 0/1 -> f1 0.0; mean_f1 = (1 + 0) / 2
    assert list(out["subsets"]) == ["gsm8k", "math"]
    assert out["subsets"]["gsm8k"]["f1"] == 1.0
    assert (out["subsets"]["math"]["error_acc"], out["subsets"]["math"]["correct_acc"]) == (0.5, 0.0)
    assert out["subsets"]["math"]["f1"] == 0.0
    assert out["mean_f1"] == 0.5
    assert out["threshold"] == 0.5
    assert [p["pred"] for p in out["predictions"]] == [-1, 1, 1, 0, -1]
    expected = {"id": "g1", "subset": "gsm8k", "pred": 1, "label": 1, "scores": [0.9, 0.1, 0.9]}
    assert out["predictions"][1] == expected
    json.dumps(out, allow_nan=False)


def test_evaluate_subsets_mean_skips_undefined_f1_and_checks_scores():
    rows = [{**row("a", label=-1), "subset": "s1"}, {**row("b", label=0), "subset": "s2"}]
    out = evaluate_subsets(rows, {"a": [0.9] * 3, "b": [0.1] * 3}, 0.5)
    # each subset has a single class -> f1 None for both -> mean_f1 None
    assert out["subsets"]["s1"]["f1"] is None and out["mean_f1"] is None
    with pytest.raises(ValueError, match="no scores for id 'b'"):
        evaluate_subsets(rows, {"a": [0.9] * 3}, 0.5)
    with pytest.raises(ValueError, match="id 'b': 2 scores for 3 steps"):
        evaluate_subsets(rows, {"a": [0.9] * 3, "b": [0.1] * 2}, 0.5)
    with pytest.raises(ValueError, match="id 'b': non-finite score nan at step index 1"):
        evaluate_subsets(rows, {"a": [0.9] * 3, "b": [0.1, math.nan, 0.1]}, 0.5)


# --------------------------------------------------------------------------- loading

REAL_STEPS = [
    "To solve this problem, we need to find all real numbers $x$ such that\n\n"
    "$$\n\\frac{x^2 - 1}{x + 1} \\leq \\sqrt{2}\\,.\n$$\n\n"
    "First, note that $x \\neq -1$, since the denominator vanishes there.",
    "For $x \\neq -1$ we can simplify:\n\\begin{align*}\n\\frac{(x-1)(x+1)}{x+1} &= x - 1.\n\\end{align*}\n"
    "So the inequality becomes $x - 1 \\le \\sqrt 2$, i.e. $x \\le 1 + \\sqrt{2} ≈ 2.414$.",
    "Therefore the answer is $\\boxed{(-\\infty, -1) \\cup (-1, 1+\\sqrt{2}]}$ — 答案 ✓ (naïve check: x = 0 → −1 ≤ √2).",
]


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_load_real_looking_rows(tmp_path, ensure_ascii):
    rows = [
        row("olympiadbench-0", steps=REAL_STEPS, label=-1, problem="Find all $x \\in \\mathbb{R}$…\n\nJustify."),
        row("olympiadbench-1", steps=REAL_STEPS, label=1, final_answer_correct=True),
    ]
    del rows[1]["generator"]  # optional -> ""
    p = write_lines(tmp_path / "olympiadbench.jsonl", [json.dumps(r, ensure_ascii=ensure_ascii) for r in rows])
    out = load_processbench(p)
    assert [r["subset"] for r in out] == ["olympiadbench", "olympiadbench"]
    assert out[0]["steps"] == REAL_STEPS
    assert out[0]["problem"].startswith("Find all $x \\in \\mathbb")
    assert out[1]["generator"] == "" and out[1]["label"] == 1
    assert load_processbench(p, subset="olympiad")[0]["subset"] == "olympiad"


def test_load_keeps_every_row_and_skips_blank_lines(tmp_path):
    p = write_lines(tmp_path / "gsm8k.jsonl", [json.dumps(row(f"gsm8k-{i}", label=i - 1)) for i in range(4)] + [""])
    out = load_processbench(p)
    assert [r["label"] for r in out] == [-1, 0, 1, 2]
    assert set(out[0]) == {"id", "generator", "problem", "steps", "final_answer_correct", "label", "subset"}


def _bad(**changes):
    r = row("x", label=0, final_answer_correct=False)
    for k, v in changes.items():
        if v is ...:
            del r[k]
        else:
            r[k] = v
    return json.dumps(r)


@pytest.mark.parametrize(
    "bad_line, field, detail",
    [
        (_bad(id=...), "id", "missing"),
        (_bad(problem=...), "problem", "missing"),
        (_bad(steps=...), "steps", "missing"),
        (_bad(label=...), "label", "missing"),
        (_bad(final_answer_correct=...), "final_answer_correct", "missing"),
        (_bad(id=7), "id", "expected str, got int"),
        (_bad(generator=3), "generator", "expected str, got int"),
        (_bad(steps="step one\nstep two"), "steps", "expected list, got str"),
        (_bad(steps=["ok", 2]), "steps[1]", "expected str, got int"),
        (_bad(label="1"), "label", "expected int, got str"),
        (_bad(label=True), "label", "got bool"),
        (_bad(label=1.0), "label", "expected int, got float"),
        (_bad(final_answer_correct=1), "final_answer_correct", "expected bool, got int"),
        (_bad(label=3), "label", "3 is out of range: need -1 <= label < len(steps) = 3"),
        (_bad(label=-2), "label", "-2 is out of range"),
        (_bad(steps=[]), "steps", "empty list"),
        (_bad(label=-1, final_answer_correct=False), "label", "final_answer_correct is false"),
    ],
)
def test_load_bad_row_names_file_line_and_field(tmp_path, bad_line, field, detail):
    p = write_lines(tmp_path / "math.jsonl", [json.dumps(row("ok-0")), "", bad_line])
    with pytest.raises(DataError) as e:
        load_processbench(p)
    msg = str(e.value)
    assert f"{p}:3: field '{field}'" in msg  # line 3: blank lines still count
    assert detail in msg
    assert (e.value.line, e.value.field) == (3, field)


def test_load_invalid_json(tmp_path):
    p = write_lines(tmp_path / "math.jsonl", [json.dumps(row("a")), '{"id": "b", "steps": ["x"'])
    with pytest.raises(DataError, match=rf"{p}:2: invalid JSON"):
        load_processbench(p)


def test_load_duplicate_id(tmp_path):
    p = write_lines(tmp_path / "math.jsonl", [json.dumps(row("a")), json.dumps(row("b")), json.dumps(row("a"))])
    with pytest.raises(DataError) as e:
        load_processbench(p)
    assert f"{p}:3: field 'id': duplicate id 'a' (first seen on line 1)" in str(e.value)


def test_load_empty_and_missing_file(tmp_path):
    p = write_lines(tmp_path / "math.jsonl", ["", "  "])
    with pytest.raises(DataError, match=rf"{p}: file has no rows"):
        load_processbench(p)
    with pytest.raises(DataError, match="no such file"):
        load_processbench(tmp_path / "nope.jsonl")


def test_loaded_rows_evaluate_end_to_end(tmp_path):
    p = write_lines(tmp_path / "gsm8k.jsonl", [json.dumps(row("a", label=-1)), json.dumps(row("b", label=2))])
    rows = load_processbench(p)
    out = evaluate_subsets(rows, {"a": [0.9, 0.8, 0.7], "b": [0.9, 0.8, 0.1]}, 0.5)
    assert out["subsets"]["gsm8k"]["f1"] == 1.0 and out["mean_f1"] == 1.0


def test_docstring_examples():
    assert doctest.testmod(processbench).failed == 0
