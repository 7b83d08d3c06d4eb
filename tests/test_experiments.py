"""The experiment suite's library parts: intervals, budget subsets, verdicts and the report."""

import doctest

import pytest

import prmflow.stats
import tasks.experiments
from prmflow import experiment_report as rep
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
    noisy = {0.015: {s: _train(0.80 + (0.2 if s % 2 else -0.2)) for s in range(4)}, 1.0: {s: _train(0.8) for s in range(4)}}
    wide = rep.data_efficiency(noisy, {s: _train(0.8) for s in range(4)}, 0.95)
    assert wide["supported"] is None and "inconclusive" in wide["verdict"]
    assert sec["numbers"]["edu_smallest_minus_static"]["mean"] == pytest.approx(-0.20)
    one_seed = rep.data_efficiency({0.015: {0: _train(0.8)}}, {0: _train(0.8)}, 0.95)
    assert one_seed["supported"] is None


def test_edu_sampling_and_active_verdicts():
    pedu = {"n": 8, "prune_below": 0.2,
            "standard": {k: {"per_seed": [0.6, 0.62, 0.61]} for k in ("acc_prm", "acc_majority")} | {"tokens": {"per_seed": [100, 101, 99]}},
            "p_edu": {k: {"per_seed": [0.6, 0.63, 0.61]} for k in ("acc_prm", "acc_majority")} | {"tokens": {"per_seed": [120, 126, 124]}},
            "acc_prm_delta": {"per_seed": [0.0, 0.01, 0.0]}, "acc_majority_delta": {"per_seed": [0.0, 0.01, 0.0]},
            "token_change": {"per_seed": [0.2, 0.25, 0.25]}}
    assert rep.edu_sampling(pedu, 0.95)["supported"] is False  # more tokens: the claim fails
    pedu["token_change"] = {"per_seed": [-0.3, -0.32, -0.31]}
    assert rep.edu_sampling(pedu, 0.95)["supported"] is True
    per_seed = lambda fr: {str(s): {"fraction_of_full": fr} for s in range(3)}  # noqa: E731
    summary = {"active": {"final_f1_last_eval": {"0": 0.8, "1": 0.81, "2": 0.79}, "match": {"0.95": {"per_seed": per_seed(0.4)}}},
               "full": {"final_f1_last_eval": {"0": 0.8, "1": 0.8, "2": 0.8}, "match": {"0.95": {"per_seed": per_seed(1.0)}}}}
    assert rep.active_learning(summary, 0.95)["supported"] is True  # no random arm to compare with
    # the saving must be the selection's: random at the same budget must need clearly more
    summary["random"] = {"final_f1_last_eval": {"0": 0.8, "1": 0.8, "2": 0.8},
                         "match": {"0.95": {"per_seed": {"0": {"fraction_of_full": 0.7}, "1": {"fraction_of_full": 0.75},
                                                         "2": {"fraction_of_full": None}}}}}  # None: never got there
    sec = rep.active_learning(summary, 0.95)
    assert sec["supported"] is True and sec["numbers"]["active_minus_random"]["mean"] == pytest.approx((-0.3 - 0.35 - 0.6) / 3)
    for seed, fr in (("0", 0.35), ("1", 0.45), ("2", 0.4)):  # random needs as few: not the selection's saving
        summary["random"]["match"]["0.95"]["per_seed"][seed]["fraction_of_full"] = fr
    sec = rep.active_learning(summary, 0.95)
    assert sec["supported"] is None and "not shown to come from the selection" in sec["verdict"]
    summary["random"]["match"]["0.95"]["per_seed"] = per_seed(0.3)  # random clearly needs fewer
    assert rep.active_learning(summary, 0.95)["supported"] is False
    del summary["random"]
    summary["active"]["match"]["0.95"]["per_seed"]["2"]["fraction_of_full"] = None  # one seed never got there
    assert rep.active_learning(summary, 0.95)["supported"] is False


def test_render_has_every_section_table_and_verdict():
    static = {s: _train(0.8) for s in range(2)}
    sec = rep.data_efficiency({1.0: {s: _train(0.8) for s in range(2)}}, static, 0.95)
    text = rep.render([sec, sec], {"command": "python -m flows.experiments", "seeds": [0, 1], "level": 0.95})
    assert text.count("## 2. Data efficiency") == 2 and text.count("**Verdict.**") == 2
    assert "| edu@1 |" in text and "![experiments/data_efficiency.png]" in text
    assert "Wall time" not in text  # no timing given, none made up
    timed = rep.render([sec], {"command": "c", "seeds": [0], "level": 0.95,
                               "seconds": {"data_efficiency": 90.0, "edu_sampling": 30.0}})
    assert "Wall time: 2.0 min on this machine (data_efficiency: 1.5 min, edu_sampling: 0.5 min)." in timed
