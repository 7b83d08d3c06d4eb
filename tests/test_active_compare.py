"""F1-vs-labels curves -> label saving at matched F1 (prmflow.active.compare), and the curve plot."""

import doctest

import pytest

import prmflow.active.compare
from prmflow import plots
from prmflow.active import labels_to_reach, mean_curve, summarize


def _curve(points):
    return [{"round": 2 * i, "labels_spent": n, "f1": f} for i, (n, f) in enumerate(points)]


RUNS = {
    # full spends 40 labels per seed; last F1 0.8 (seed 0) and 0.6 (seed 1)
    "full": {
        0: {"curve": _curve([(0, 0.2), (20, 0.78), (40, 0.8)]), "labels_spent": 40},
        1: {"curve": _curve([(0, 0.2), (20, 0.5), (40, 0.6)]), "labels_spent": 40},
    },
    "active": {
        0: {"curve": _curve([(0, 0.2), (10, 0.76), (16, 0.81)]), "labels_spent": 16},
        1: {"curve": _curve([(0, 0.2), (12, 0.4), (20, None)]), "labels_spent": 20},
    },
}


def test_doctests():
    failed, attempted = doctest.testmod(prmflow.active.compare)
    assert attempted >= 3 and failed == 0


def test_labels_to_reach_takes_the_first_point_at_or_above_target():
    curve = _curve([(0, 0.5), (8, None), (16, 0.7), (24, 0.6), (32, 0.7)])
    assert labels_to_reach(curve, 0.7) == 16  # >= is enough; a later dip does not matter
    assert labels_to_reach(curve, 0.5) == 0 and labels_to_reach(curve, 0.71) is None


def test_summary_by_hand():
    s = summarize(RUNS, [0.95, 1.0])  # window 1: final F1 = last evaluation with an F1
    # final F1: full (0.8 + 0.6) / 2 = 0.7; active (0.81 + 0.4) / 2 = 0.605 (seed 1's last F1 is None)
    assert s["full"]["final_f1"]["mean"] == pytest.approx(0.7)
    assert s["active"]["final_f1"]["mean"] == pytest.approx(0.605)
    # labels 16 and 20: mean 18, sample std sqrt((4 + 4) / 1)
    assert s["active"]["labels_spent"] == {"mean": 18.0, "std": pytest.approx(8**0.5)}
    # q = 0.95, seed 0: start 0.2, full gains 0.6 -> target 0.2 + 0.95 * 0.6 = 0.77;
    # active has 0.76 at 10 labels (short) and 0.81 at 16 -> 16 / 40 = 0.4
    m = s["active"]["match"]["0.95"]
    assert m["per_seed"]["0"]["target_f1"] == pytest.approx(0.77)
    assert m["per_seed"]["0"]["labels"] == 16 and m["per_seed"]["0"]["fraction_of_full"] == pytest.approx(0.4)
    # seed 1: target 0.2 + 0.95 * 0.4 = 0.58; active peaks at 0.4 -> never
    assert m["per_seed"]["1"]["target_f1"] == pytest.approx(0.58) and m["per_seed"]["1"]["labels"] is None
    assert m["fraction_of_full"] == {"mean": pytest.approx(0.4), "std": 0.0, "reached": 1, "seeds": 2}
    # full itself: seed 0 reaches 0.77 at 20 (0.5), seed 1 reaches 0.58 at 40 (1.0)
    assert s["full"]["match"]["0.95"]["fraction_of_full"]["mean"] == pytest.approx(0.75)
    # q = 1.0: active seed 0 needs 16 labels for 0.8 (0.4 of full's); full needs all of its own
    assert s["active"]["match"]["1.0"]["per_seed"]["0"]["fraction_of_full"] == pytest.approx(0.4)
    assert s["full"]["match"]["1.0"]["fraction_of_full"]["mean"] == 1.0


def test_a_seed_where_full_does_not_improve_is_left_out():
    runs = {
        "full": {0: {"curve": _curve([(0, 0.3), (20, 0.35), (40, 0.25)]), "labels_spent": 40}},
        "active": {0: {"curve": _curve([(0, 0.3), (20, 0.4)]), "labels_spent": 20}},
    }
    m = summarize(runs, [0.95])["active"]["match"]["0.95"]
    assert m["per_seed"]["0"]["full_gain"] == pytest.approx(-0.05) and m["per_seed"]["0"]["labels"] is None
    assert m["fraction_of_full"] == {"mean": None, "std": None, "reached": 0, "seeds": 0}


def test_summary_with_a_trailing_window():
    s = summarize(RUNS, [0.95], window=2)
    # full seed 0: F1~ = 0.2, (0.2 + 0.78) / 2 = 0.49, (0.78 + 0.8) / 2 = 0.79 -> final 0.79;
    # target 0.2 + 0.95 * 0.59 = 0.7605; active seed 0: F1~ = 0.2, 0.48, 0.785 -> reached at 16 labels
    seed0 = s["active"]["match"]["0.95"]["per_seed"]["0"]
    assert seed0["target_f1"] == pytest.approx(0.7605) and seed0["labels"] == 16
    assert s["full"]["match"]["0.95"]["per_seed"]["0"]["labels"] == 40


def test_no_full_run_no_match_section():
    assert "match" not in summarize({"active": RUNS["active"]})["active"]


def test_mean_curve_and_plot(tmp_path):
    means = {k: mean_curve([r["curve"] for r in v.values()]) for k, v in RUNS.items()}
    assert [p["round"] for p in means["active"]] == [0, 2]  # round 4 has a None F1 for seed 1
    assert means["active"][1]["labels_spent"] == 11.0 and means["active"][1]["f1_min"] == 0.4
    plots.active_curves(means, tmp_path / "curve.png", {"0.95 x full": 0.665})
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_plateau_by_hand():
    from prmflow.active import paired_plateau, plateau_difference

    def run(f1s):  # evaluations at rounds 0, 2, 4, 6, 8
        return {"curve": [{"round": 2 * i, "labels_spent": 5 * i, "f1": f} for i, f in enumerate(f1s)]}

    runs = {
        "full": {0: run([0.2, 0.6, 0.7, 0.7, 0.7]), 1: run([0.2, 0.6, 0.7, 0.8, 0.6])},
        "active": {0: run([0.2, 0.5, 0.8, 0.8, 0.9]), 1: run([0.2, 0.6, 0.7, None, 0.7])},
        "random": {0: run([0.2, 0.7, 0.6, 0.7, 0.7]), 1: run([0.2, 0.6, 0.7, 0.6, 0.6])},
    }
    p = paired_plateau(runs)  # rounds > 0.5 * 8: 6 and 8 (round 6 missing in active seed 1)
    assert p["active_minus_random"]["per_seed"] == pytest.approx({"0": 0.15, "1": 0.1})
    assert p["active_minus_full"]["per_seed"] == pytest.approx({"0": 0.15, "1": 0.1})
    assert p["active_minus_random"]["mean"] == pytest.approx(0.125) and p["active_minus_random"]["lo"] < 0.125
    # an early lead does not count: round 2 favours random in seed 0, yet start=0.5 ignores it
    assert plateau_difference(runs["active"][0]["curve"], runs["random"][0]["curve"], 0.0) == pytest.approx(0.075)
    assert paired_plateau({"active": runs["active"]})["active_minus_random"] is None
    with pytest.raises(ValueError, match="start"):
        plateau_difference(runs["active"][0]["curve"], runs["random"][0]["curve"], 1.0)
