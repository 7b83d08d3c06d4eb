"""prmflow.summaries: stage summaries on hand-made rows, and the degenerate-run checks."""

from __future__ import annotations

import pytest

from prmflow.summaries import (
    DegenerateRun,
    calibration_warning,
    degenerate_message,
    generate_stats,
    has_gold,
    is_real,
    label_balance_problem,
    label_stats,
    numeric,
    real_summary,
    segment_stats,
    solve_rate_problem,
    step_lengths,
    token_entropies,
)

COST = {"rollouts": 8, "generated_tokens": 80, "forward_passes": 4, "prompt_tokens": 10}


def _seg(gold):
    return {"steps": ["a", "b"], "starts": [0, 3], "ends": [3, 5], "gold_labels": gold}


def _lab(labels, soft, gold):
    return {"labels": labels, "soft_labels": soft, "gold_labels": gold}


def test_segment_stats_gold_and_real():
    synth = segment_stats([_seg([True, False]), _seg([True, True])], 0, 0.5)
    assert synth["frac_gold_correct_steps"] == 0.75  # 3 of 4 gold steps right
    assert synth["mean_step_tokens"] == 2.5  # lengths 3, 2, 3, 2
    real = segment_stats([_seg(None), _seg(None)], 1, 0.5)
    assert real["frac_gold_correct_steps"] is None and real["skipped_empty"] == 1 and real["mean_steps"] == 2


def test_segment_stats_keep_the_calibration_last():
    cal = {"tau": 0.7, "met": True, "forced_fraction": 0.0}
    stats = segment_stats([_seg([True, False])], 0, 0.7, cal)
    assert list(stats)[-1] == "calibration" and stats["calibration"] is cal
    assert "calibration" not in segment_stats([_seg([True, False])], 0, 0.7)
    assert step_lengths([_seg(None), _seg(None)]) == ([2, 2], [3, 2, 3, 2])


@pytest.mark.parametrize("met, forced, warns", [(True, 0.5, False), (True, 0.51, True), (False, 0.0, True)])
def test_calibration_warning(met, forced, warns):
    cal = {
        "tau": 1.23456,
        "met": met,
        "forced_fraction": forced,
        "mean_steps": 3.0,
        "target_mean_steps": 4,
        "note": "target out of reach",
    }
    warning = calibration_warning(cal)
    assert (warning is not None) == warns
    if warns:  # tau to 4 significant digits, the note instead of the default reason
        assert warning.startswith("calibrated threshold 1.235 gives 3.00 steps") and warning.endswith(
            "target out of reach"
        )
    assert calibration_warning(None) is None


def test_numeric_and_entropies():
    # None, strings and nested dicts are no metrics; bools are ints, as MLflow has always logged them
    assert numeric({"n": 2, "f": 0.5, "none": None, "s": "x", "d": {"a": 1}, "b": True}, "x/") == {
        "x/n": 2,
        "x/f": 0.5,
        "x/b": True,
    }
    assert token_entropies([{"entropy": [0.1]}, {"entropy": []}, {"entropy": [0.2, 0.3]}]) == [0.1, 0.2, 0.3]


def test_mixed_gold_is_an_error():
    with pytest.raises(ValueError, match="mixed"):
        has_gold([{"gold_labels": [True]}, {"gold_labels": None}], "gold_labels")


def test_label_stats_reports_quality_only_with_gold():
    synth = label_stats([_lab([True, False], [0.9, 0.1], [True, True])], COST)
    assert synth["quality_step_acc"] == 0.5 and synth["mean_soft_gold_correct"] == 0.5  # (0.9 + 0.1) / 2
    real = label_stats([_lab([True, False], [0.9, 0.1], None), _lab([False], [0.0], None)], COST)
    assert real["quality_step_acc"] is None and real["quality_first_error_acc"] is None
    assert real["quality_n_steps"] == 3 and real["frac_labels_true"] == pytest.approx(1 / 3)
    assert real["rollouts_per_step"] == pytest.approx(8 / 3)


def test_generate_stats_truncated_fraction():
    rows = [
        {"entropy": [0.5, 2.0], "final_correct": True, "finish_reason": "stop", "token_ids": [1, 2]},
        {"entropy": [0.1], "final_correct": False, "finish_reason": "length", "token_ids": [1]},
    ]
    s = generate_stats(rows, [], 1)
    assert s["solve_rate"] == 0.5 and s["truncated"] == 1 and s["truncated_fraction"] == 0.5
    assert s["frac_tokens_entropy_gt_1"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(("rate", "bad"), [(0.0, True), (1.0, True), (0.5, False), (1e-3, False)])
def test_solve_rate_problem(rate, bad):
    assert (solve_rate_problem(rate, 10) is not None) == bad


def test_label_balance_problem():
    assert label_balance_problem([[False, False], [False]]) is not None
    assert label_balance_problem([]) == "no step labels"
    assert label_balance_problem([[False], [True]]) is None


def test_is_real_and_message():
    assert not is_real([{"id": "synth-1"}, {"id": "synth-2", "source": "synthetic"}])
    assert is_real([{"id": "g", "source": "gsm8k"}])
    assert degenerate_message("generate", [None, None]) is None
    assert "generate: degenerate" in degenerate_message("generate", ["x"])
    assert issubclass(DegenerateRun, RuntimeError)


def _reports(solve_rate=0.25, frac_true=0.3):
    return {
        "generate": {"solve_rate": solve_rate, "n_completions": 8, "truncated_fraction": 0.125, "mean_tokens": 90.0},
        "segment": {"threshold": 0.4, "mean_steps": 3.0, "mean_step_tokens": 30.0, "frac_one_step": 0.0},
        "label": {
            "quality_n_steps": 24,
            "quality_n_solutions": 8,
            "frac_labels_true": frac_true,
            "cost_rollouts": 96,
            "cost_generated_tokens": 5000,
        },
        "train": {"final_loss": 0.5, "losses": [1, 2]},
        "bon": {"ns": [1, 4], "n_problems": 6, "accuracy": {"majority": [0.1, 0.2], "prm_min": [0.1, 0.3]}},
    }


def test_real_summary_headline_numbers():
    info = {"generate": {"wall_s": 100.0, "peak_rss_mib": 2000.0}, "label": {"wall_s": 50.5, "peak_rss_mib": 3000.0}}
    s = real_summary(_reports(), info)
    assert s["wall_s"] == 150.5 and s["peak_rss_mib"] == 3000.0  # stages add up; the largest peak
    assert s["best_of_n"]["accuracy"]["prm_min"] == {"1": 0.1, "4": 0.3}
    assert s["labels"]["frac_false"] == pytest.approx(0.7) and s["truncated_fraction"] == 0.125
    assert "losses" not in s["train"] and s["degenerate"] == []


def test_real_summary_names_what_is_degenerate():
    s = real_summary(_reports(solve_rate=0.0, frac_true=0.0), {})
    assert len(s["degenerate"]) == 2 and "solve rate 0.000" in s["degenerate"][0]
    assert "all 24 step labels are False" in s["degenerate"][1]
