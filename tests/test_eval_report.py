"""prmflow.evaluate.report: what stage `evaluate` writes and logs, on hand-made rows."""

from __future__ import annotations

import doctest

import pytest

from prmflow.evaluate import report


def test_doctests():
    assert doctest.testmod(report).failed == 0


# two test rows: c is correct (label -1), e errs at step 1; two calib rows of one class only
ROWS = [
    {"id": "c", "subset": "test", "label": -1, "steps": ["a", "b"]},
    {"id": "e", "subset": "test", "label": 1, "steps": ["a", "b"]},
    {"id": "k1", "subset": "calib", "label": -1, "steps": ["a"]},
    {"id": "k2", "subset": "calib", "label": -1, "steps": ["a"]},
]
SCORES = {"c": [0.9, 0.8], "e": [0.9, 0.1], "k1": [0.7], "k2": [0.6]}


def test_assess_or_fixed_falls_back_when_the_calib_subset_has_one_class():
    res = report.assess_or_fixed(ROWS, SCORES, {"calibrate_on": "calib"}, 0.5)
    assert res["threshold"] == 0.5 and res["threshold_mode"].startswith("fixed 0.5 (calibration impossible: ")
    # at 0.5: c is predicted correct (-1), e's first error is step 1: both right on `test`
    assert res["subsets"]["test"]["error_acc"] == 1.0 and res["subsets"]["test"]["correct_acc"] == 1.0
    with pytest.raises(ValueError):  # a fixed threshold has nothing to fall back from
        report.assess_or_fixed(ROWS, {}, {"threshold": 0.5}, 0.5)


def test_headline_and_synthetic_summary():
    res = report.assess_or_fixed(ROWS, SCORES, {"threshold": 0.5}, 0.5)
    head = report.headline(res)
    assert (head["err_acc"], head["correct_acc"], head["f1"], head["n_err"], head["n_correct"]) == (1.0, 1.0, 1.0, 1, 1)
    info = {"truncated_rows": 0, "truncated_steps": 0}
    summary = report.synthetic_summary({"prm": res}, ROWS, 7, 2, info)
    assert summary["prm"] == head
    assert summary["data"] == {
        "rows": 4,
        "candidates_before_balance": 7,
        "left_out_no_answer": 2,
        "test_rows": 2,
        "prm_truncated_rows": 0,
        "prm_truncated_steps": 0,
    }
    assert report.count_rows(summary, None, 3) == {
        "synthetic_processbench": 4,
        "processbench_files": 0,
        "bon_problems": 3,
    }


def test_named_results_and_report():
    rows = [{**r, "subset": "gsm8k"} for r in ROWS[:2]]
    results = report.named_results(rows, SCORES, "fixed", 0.5, 0.3, 0)
    assert set(results) == {"prm", "prm_fixed", "all_ones"} and results["prm"] == results["prm_fixed"]
    ones = results["all_ones"]["subsets"]["gsm8k"]  # all ones never flags an error: 0 of 1 erroneous row
    assert (ones["error_acc"], ones["correct_acc"]) == (0.0, 1.0)
    info = {"max_len": 8, "skipped": [], "truncated_ids": [], "truncated_steps": 0}
    rep = report.named_report(results, {"gsm8k": "g.jsonl"}, {"all": {"scored": 2}}, info, "\n")
    assert all("predictions" not in rep[k] for k in results)
    assert rep["data"]["files"] == {"gsm8k": "g.jsonl"} and rep["data"]["truncation"] == report.TRUNCATION
    assert report.count_rows({}, rep, 0)["processbench_files"] == 2
    preds = report.prediction_rows(results["prm"])
    assert [(p["id"], p["pred"], p["label"]) for p in preds] == [("c", -1, -1), ("e", 1, 1)]
    assert set(preds[0]) == {"id", "subset", "pred", "label", "scores"}


def test_calibrate_on_split_falls_back_to_the_fixed_threshold():
    rows = [{**r, "subset": "math"} for r in ROWS[2:]]  # correct rows only: no F1 to fit
    res = report.calibrate_on_split(rows, SCORES, 0.5, 0, 0.4)
    assert res["calib_rows"] == 0 and res["threshold"] == 0.4 and res["threshold_mode"].startswith("fixed 0.4")


def _cands(tokens, correct, answers, scored):
    return [
        {
            "candidates": [
                {"tokens": t, "correct": c, "answer": a, "scored": s}
                for t, c, a, s in zip(tokens, correct, answers, scored, strict=True)
            ]
        }
    ]


def test_bon_report_synthetic_and_real():
    bon, problem = report.bon_report({"ns": [1]}, _cands([3, 5], [0, 0], [None, None], [1, 1]), False, False)
    assert bon == {"ns": [1], "mean_tokens_per_solution": 4.0} and problem is None

    table = {"ns": [1, 2], "n_problems": 1, "accuracy": {"oracle": [0.0, 0.0]}}
    cands = _cands([2, 4, 6, 8], [False] * 4, ["1", None, None, "2"], [True, True, False, True])
    bon, problem = report.bon_report(dict(table), cands, True, False)
    assert "pass@2" in problem and "warnings" not in bon
    assert (
        bon["mean_tokens_per_solution"],
        bon["candidate_solve_rate"],
        bon["no_answer_fraction"],
        bon["unscored_candidates"],
    ) == (5.0, 0.0, 0.5, 1)
    assert list(bon)[:4] == ["ns", "n_problems", "accuracy", "mean_tokens_per_solution"]  # bon.json key order
    bon, problem = report.bon_report(dict(table), cands, True, True)
    assert bon["warnings"] == [problem]


def test_eval_metrics_names_and_steps():
    summary = {"prm": {"f1": 0.5, "n_err": 3, "threshold_mode": "fixed"}, "entropy": {"f1": None}}
    named = {"prm": {"subsets": {"gsm8k": {"error_acc": 1.0, "correct_acc": None, "f1": 0.25}}}, "data": {}}
    bon = {"ns": [1, 4], "accuracy": {"prm_min": [0.1, 0.2]}}
    assert report.eval_metrics(summary, named, bon) == [
        ({"eval/prm/f1": 0.5, "eval/prm/n_err": 3}, None),
        ({}, None),  # entropy: every value None
        ({"eval/files/prm/gsm8k/error_acc": 1.0, "eval/files/prm/gsm8k/f1": 0.25}, None),
        ({"eval/bon/prm_min": 0.1}, 1),
        ({"eval/bon/prm_min": 0.2}, 4),
    ]
    pedu = {k: {"mean": i, "std": 0.0} for i, k in enumerate(("acc_prm_delta", "acc_majority_delta", "token_change"))}
    assert report.pedu_metrics(pedu) == {
        "eval/pedu/acc_prm_delta": 0,
        "eval/pedu/acc_majority_delta": 1,
        "eval/pedu/token_change": 2,
    }


def test_console_lines():
    bon = {"ns": [1, 2], "n_problems": 3, "accuracy": {"oracle": [0.5, 1.0], "prm_min": [0.25, 0.5]}}
    assert report.bon_lines(bon) == [
        "evaluate: Best-of-N accuracy on 3 problems, N = [1, 2]",
        "   oracle: 0.500  1.000",
        "  prm_min: 0.250  0.500",
    ]
    assert report.bon_lines({}) == [] and report.summary_lines({}) == []
