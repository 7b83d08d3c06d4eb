"""The experiment suite's library parts: intervals, budget subsets, verdicts and the report."""

import doctest

import pytest

import prmflow.stats
import tasks.experiments
from prmflow import experiment_report as rep
from prmflow.active import paired_at_budget, summarize
from prmflow.stats import mean_ci
from tasks.experiments import budget_subset, problem_subset


@pytest.mark.parametrize("module", [prmflow.stats, tasks.experiments, rep])
def test_doctests(module):
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


def test_mean_ci_matches_the_t_interval_and_narrows_with_seeds():
    few = mean_ci([0.5, 0.7, 0.6])
    assert few["lo"] < 0.6 < few["hi"] and few["half_width"] == pytest.approx(0.2484, abs=1e-4)
    many = mean_ci([0.5, 0.7, 0.6] * 4)
    assert many["half_width"] < few["half_width"]
    assert mean_ci([0.3, 0.3])["half_width"] == 0.0
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([0.1, float("nan")])


def test_budget_subset_respects_the_budget_and_depends_only_on_seed():
    rows = [{"id": str(i), "cost": {"generated_tokens": 1 + i % 7}} for i in range(200)]
    total = sum(r["cost"]["generated_tokens"] for r in rows)
    for f in (0.015, 0.05, 0.25):
        sub = budget_subset(rows, f, seed=3)
        assert sum(r["cost"]["generated_tokens"] for r in sub) <= f * total + 1e-9
        assert sum(r["cost"]["generated_tokens"] for r in sub) >= f * total - 7  # filled up to within one row
        assert sub == budget_subset(list(rows), f, seed=3) != budget_subset(rows, f, seed=4)
        assert [r["id"] for r in sub] == sorted((r["id"] for r in sub), key=int)  # file order kept
    assert budget_subset(rows, 1.0, 0) == rows


def test_problem_subset_is_seeded_and_ordered():
    probs = [{"id": f"p{i}"} for i in range(50)]
    a = problem_subset(probs, 10, 1)
    assert len(a) == 10 and a == problem_subset(probs, 10, 1) != problem_subset(probs, 10, 2)
    assert [probs.index(p) for p in a] == sorted(probs.index(p) for p in a)
    assert problem_subset(probs, 99, 0) == probs


def _train(f1):
    return {"f1": f1, "label_tokens": 100.0, "train_rows": 10}


def test_data_efficiency_verdict_follows_the_paired_interval():
    static = {s: _train(0.80 + 0.01 * s) for s in range(5)}
    close = {0.015: {s: _train(0.79 + 0.01 * s) for s in range(5)}, 1.0: {s: _train(0.81) for s in range(5)}}
    far = {0.015: {s: _train(0.60 + 0.01 * s) for s in range(5)}, 1.0: {s: _train(0.81) for s in range(5)}}
    assert rep.data_efficiency(close, static, 0.95)["supported"] is True
    sec = rep.data_efficiency(far, static, 0.95)
    assert sec["supported"] is False and "not supported" in sec["verdict"]
    noisy = {
        0.015: {s: _train(0.80 + (0.2 if s % 2 else -0.2)) for s in range(4)},
        1.0: {s: _train(0.8) for s in range(4)},
    }
    wide = rep.data_efficiency(noisy, {s: _train(0.8) for s in range(4)}, 0.95)
    assert wide["supported"] is None and "inconclusive" in wide["verdict"]
    assert sec["numbers"]["edu_smallest_minus_static"]["mean"] == pytest.approx(-0.20)
    one_seed = rep.data_efficiency({0.015: {0: _train(0.8)}}, {0: _train(0.8)}, 0.95)
    assert one_seed["supported"] is None


def test_edu_sampling_and_active_verdicts():
    pedu = {
        "n": 8,
        "prune_below": 0.2,
        "standard": {k: {"per_seed": [0.6, 0.62, 0.61]} for k in ("acc_prm", "acc_majority")}
        | {"tokens": {"per_seed": [100, 101, 99]}},
        "p_edu": {k: {"per_seed": [0.6, 0.63, 0.61]} for k in ("acc_prm", "acc_majority")}
        | {"tokens": {"per_seed": [120, 126, 124]}},
        "acc_prm_delta": {"per_seed": [0.0, 0.01, 0.0]},
        "acc_majority_delta": {"per_seed": [0.0, 0.01, 0.0]},
        "token_change": {"per_seed": [0.2, 0.25, 0.25]},
    }
    assert rep.edu_sampling(pedu, 0.95)["supported"] is False  # more tokens: the claim fails
    pedu["token_change"] = {"per_seed": [-0.3, -0.32, -0.31]}
    assert rep.edu_sampling(pedu, 0.95)["supported"] is True


def _active_summary(f1: dict[str, list[float]], labels: dict[str, list[int]]) -> dict:
    """The active stage's summary for per-seed final F1s and label counts (one evaluation at the end)."""
    runs = {
        strat: {
            seed: {
                "curve": [{"labels_spent": 0, "f1": 0.3}, {"labels_spent": labels[strat][seed], "f1": f}],
                "labels_spent": labels[strat][seed],
            }
            for seed, f in enumerate(f1s)
        }
        for strat, f1s in f1.items()
    }
    summary = summarize(runs, [0.95])
    for strat in runs:
        summary[strat]["final_f1_last_eval"] = {str(seed): r["curve"][-1]["f1"] for seed, r in runs[strat].items()}
    summary["paired"] = paired_at_budget(runs)
    return summary


def test_active_verdict_needs_the_selection_to_beat_random_at_comparable_f1_and_half_the_labels():
    full = [0.80, 0.82, 0.81, 0.79, 0.80]
    half, all_ = [50] * 5, [100] * 5
    pays = _active_summary(
        {
            "full": full,
            "active": [f + 0.003 * (-1) ** i for i, f in enumerate(full)],
            "random": [f - 0.04 + 0.002 * i for i, f in enumerate(full)],
        },
        {"full": all_, "active": half, "random": half},
    )
    sec = rep.active_learning(pays, 0.95)
    assert sec["supported"] is True and "selection pays: holds" in sec["verdict"]
    assert sec["numbers"]["active_minus_random"]["mean"] == pytest.approx(0.036, abs=1e-3)
    assert sec["numbers"]["label_fraction"]["mean"] == pytest.approx(0.5)
    assert sec["rows"][0][:3] == ["active", sec["rows"][0][1], "50 (50%)"]
    # random as good as active: the saving is not the selection's
    tie = _active_summary(
        {"full": full, "active": full, "random": [f + 0.01 * (-1) ** i for i, f in enumerate(full)]},
        {"full": all_, "active": half, "random": half},
    )
    sec = rep.active_learning(tie, 0.95)
    assert sec["supported"] is None and "selection pays: undecided" in sec["verdict"]
    # selection pays and F1 is comparable, but with 80% of the labels: not "about half"
    most = _active_summary(
        {"full": full, "active": full, "random": [f - 0.05 for f in full]},
        {"full": all_, "active": [80, 79, 81, 80, 80], "random": [80, 79, 81, 80, 80]},
    )
    sec = rep.active_learning(most, 0.95)
    assert sec["supported"] is False and "about half the labels (at most 60%): fails" in sec["verdict"]
    assert "selection pays: holds" in sec["verdict"] and "a saving of 20%" in sec["verdict"]
    # clearly below full: not comparable
    worse = _active_summary(
        {"full": full, "active": [f - 0.1 for f in full], "random": [f - 0.2 for f in full]},
        {"full": all_, "active": half, "random": half},
    )
    assert rep.active_learning(worse, 0.95)["supported"] is False
    # no random arm: the selection is untested, so the claim is not decided
    del pays["random"], pays["paired"]["active_minus_random"]
    pays["paired"]["active_minus_random"] = None
    sec = rep.active_learning(pays, 0.95)
    assert sec["supported"] is None and "untested" in sec["verdict"]
    # a summary without the paired block (an older stage output) says so instead of guessing
    del pays["paired"]
    assert "re-run" in rep.active_learning(pays, 0.95)["verdict"]
    # one seed has no interval: nothing is decided
    one = _active_summary(
        {"full": [0.8], "active": [0.8], "random": [0.7]}, {"full": [100], "active": [50], "random": [50]}
    )
    sec = rep.active_learning(one, 0.95)
    assert sec["supported"] is None and "selection pays: undecided" in sec["verdict"]


def test_render_has_every_section_table_and_verdict():
    static = {s: _train(0.8) for s in range(2)}
    sec = rep.data_efficiency({1.0: {s: _train(0.8) for s in range(2)}}, static, 0.95)
    text = rep.render([sec, sec], {"command": "python -m flows.experiments", "seeds": [0, 1], "level": 0.95})
    assert text.count("## 2. Data efficiency") == 2 and text.count("**Verdict.**") == 2
    assert "| edu@1 |" in text and "![experiments/data_efficiency.png]" in text
    assert "Wall time" not in text  # no timing given, none made up
    timed = rep.render(
        [sec], {"command": "c", "seeds": [0], "level": 0.95, "seconds": {"data_efficiency": 90.0, "edu_sampling": 30.0}}
    )
    assert "Wall time: 2.0 min on this machine (data_efficiency: 1.5 min, edu_sampling: 0.5 min)." in timed


def test_arms_and_suite_metrics_by_hand():
    summary = {
        "random": {"final_f1_last_eval": {"1": 0.4, "0": 0.3}, "labeler_cost": {"1": {"calls": 0}}},
        "active": {"final_f1_last_eval": {"0": None}},
        "paired": {"x": 1},
    }
    # active before random; seeds as ints; 0 calls is no label count; a None F1 is kept for the run
    assert rep.active_arms(summary) == [
        ("active", 0, {"final_f1": None}),
        ("random", 1, {"final_f1": 0.4}),
        ("random", 0, {"final_f1": 0.3}),
    ]
    assert rep.active_arms({}) == []
    pedu = {
        arm: {"acc_prm": {"per_seed": [0.5]}, "acc_majority": {"per_seed": [0.25]}, "tokens": {"per_seed": [9]}}
        for arm in ("standard", "p_edu")
    }
    assert rep.edu_sampling_arms(pedu) == [
        ("standard", 0, {"acc_prm": 0.5, "acc_majority": 0.25, "tokens": 9}),
        ("p_edu", 0, {"acc_prm": 0.5, "acc_majority": 0.25, "tokens": 9}),
    ]
    assert rep.suite_metrics([{"title": "T", "supported": False}], {}) == [{}, {"experiments/supported/T": 0.0}]
    rows = [{"problem_id": "b", "i": 0}, {"problem_id": "a", "i": 1}]
    assert rep.by_problem(rows, [{"id": "a"}, {"id": "c"}]) == [{"problem_id": "a", "i": 1}]


def test_section_plots_write_pngs(tmp_path):
    from prmflow import plots

    ci = {"mean": 0.5, "lo": 0.4, "hi": 0.6}
    plots.label_efficiency(
        {"edu": {"tokens_per_solution": {"mean": 10.0, "lo": 8.0, "hi": 12.0}, "first_error_acc": ci}},
        tmp_path / "le.png",
    )
    numbers = {
        "edu@0.5": {"f1": ci, "label_tokens": {"mean": 5.0}},
        "edu@1": {"f1": ci, "label_tokens": {"mean": 10.0}},
        "static@1": {"f1": ci},
    }
    plots.data_efficiency(numbers, [1.0, 0.5], tmp_path / "de.png")
    arm = {
        "f1": ci,
        "steps_per_solution": ci,
        "tokens_per_solution": {"mean": 300.0, "lo": 200.0, "hi": 400.0},
        "threshold": {"mean": 1.0},
    }
    plots.threshold_ablation({"fixed@0.5": arm, "fixed@2": arm, "calibrated": arm}, [0.5, 2.0], tmp_path)
    for name in ("le.png", "de.png", "threshold_f1.png", "threshold_cost.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert plots.scale_ci({"mean": 300.0, "lo": 200.0, "hi": 400.0, "n": 2}, 0.01) == {
        "mean": 3.0,
        "lo": 2.0,
        "hi": 4.0,
        "n": 2,
    }
