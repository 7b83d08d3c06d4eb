"""prmflow.active.report: what stage `active` reads and reports, on hand-made runs."""

from __future__ import annotations

import doctest
import json

import pytest

from prmflow.active import report


def test_doctests():
    assert doctest.testmod(report).failed == 0


def _run(f1s, labels, cost=None):
    curve = [{"round": t, "labels_spent": n, "f1": f} for t, (f, n) in enumerate(zip(f1s, labels, strict=True))]
    return {
        "curve": curve,
        "history": curve,
        "labels_spent": labels[-1],
        "final_f1": f1s[-1],
        "cost": cost or {},
        "rounds": len(curve) - 1,
    }


# one seed: full goes 0.2 -> 0.6 with 8 labels, active reaches 0.6 with 4
RUNS = {"full": {0: _run([0.2, 0.6], [0, 8], {"rollouts": 8})}, "active": {0: _run([0.2, 0.6], [0, 4])}}


def test_summary_adds_per_run_numbers_paired_and_data():
    data = report.data_summary(RUNS, ["a", "b"], [{"subset": "test"}, {"subset": "calib"}], "oracle", None)
    assert data == {
        "pool": 2,
        "eval_rows": 2,
        "eval_test_rows": 1,
        "rounds": 1,
        "labeler": "oracle",
        "backbone_passes": None,
    }
    assert report.data_summary(RUNS, [], [], "oracle", 3)["rounds"] == 0  # no pool: no rounds
    s = report.stage_summary(RUNS, {"full": [2.0, 4.0], "active": [1.0]}, [1.0], 1, data)
    assert list(s) == ["full", "active", "paired", "plateau", "data"]  # summary.json key order
    assert s["full"]["seconds_per_run"] == 3.0 and s["active"]["seconds_per_run"] == 1.0
    assert s["full"]["final_f1_last_eval"] == {"0": 0.6} and s["full"]["labeler_cost"] == {"0": {"rollouts": 8}}
    assert s["data"] == data
    # active's labels are 4 / 8 of full's at the same final F1
    assert s["paired"]["label_fraction"]["mean"] == 0.5 and s["paired"]["active_minus_full"]["mean"] == 0.0
    json.dumps(s)  # written as JSON: string keys only


def test_gain_targets_metrics_and_lines():
    s = report.stage_summary(RUNS, {"full": [1.0], "active": [1.0]}, [0.5, 1.0], 1, {})
    # initial 0.2, full gains 0.4: 0.2 + 0.5 * 0.4 = 0.4 and 0.2 + 1.0 * 0.4 = 0.6
    targets = report.gain_targets(s, RUNS, [0.5, 1.0])
    assert list(targets) == ["initial + 0.5 x full's gain", "initial + 1 x full's gain"]
    assert targets["initial + 0.5 x full's gain"] == pytest.approx(0.4)
    assert report.gain_targets({"active": s["active"]}, RUNS, [1.0]) == {}  # no full run
    metrics = report.stage_metrics(s, ["full", "active"])
    assert metrics[1] == {
        "active/active/final_f1_mean": 0.6,
        "active/active/labels_spent_mean": 4.0,
        "active/active/labels_fraction_at_0.5": 0.5,
        "active/active/labels_fraction_at_1.0": 0.5,
    }
    assert "active/paired/label_fraction" in metrics[2] and all(k.startswith("active/plateau/") for k in metrics[3])
    lines = report.summary_lines(s, ["full", "active"])
    assert lines[1].startswith("  active: final F1 0.6 +- 0.0, labels 4.0 +- 0.0")
    assert any(line.startswith("  paired label_fraction: 0.5000") for line in lines)


def test_run_metrics():
    assert report.run_metrics({"final_f1": 0.5, "labels_spent": 3}, 2.0) == {
        "active/final_f1": 0.5,
        "active/labels_spent": 3,
        "active/seconds": 2.0,
    }


def test_readers(tmp_path):
    seg = tmp_path / "seg.jsonl"
    rows = [
        {"id": "b", "problem_id": "p", "prompt": "q", "steps": ["x"], "extra": 1},
        {"id": "a", "problem_id": "p", "prompt": "q", "steps": ["y"]},
        {"id": "c", "problem_id": "p", "prompt": "q", "steps": []},
    ]  # no step: left out
    seg.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = report.load_pool(str(seg), {"p": {}}, 0)
    assert [r["id"] for r in pool] == ["a", "b"] and "extra" not in pool[1]
    assert [r["id"] for r in report.load_pool(str(seg), {"p": {}}, 1)] == ["a"]
    with pytest.raises(Exception, match="problem 'p' is not in the problems file"):
        report.load_pool(str(seg), {}, 0)
    ev = tmp_path / "eval.jsonl"
    ev.write_text(
        "".join(
            json.dumps({"id": str(i), "problem": "q", "steps": ["s"], "label": -1, "subset": "test"}) + "\n"
            for i in range(5)
        )
    )
    assert len(report.load_eval(str(ev), 0)) == 5
    two = report.load_eval(str(ev), 2)
    assert len(two) == 2 and two == report.load_eval(str(ev), 2)  # seeded
