"""Labelers (oracle, MC, consensus) and the ActPRM loop on a tiny ensemble PRM: who gets labeled,
what is trained, and resuming without paying for a label twice."""

import doctest
from collections import Counter
from dataclasses import asdict, replace

import pytest
import torch

import prmflow.active.labelers
import prmflow.active.loop
from prmflow.active import (
    UNLABELED,
    ConsensusLabeler,
    LabelerCost,
    LabelResult,
    LoopConfig,
    MCLabeler,
    OracleLabeler,
    run_active_learning,
)
from prmflow.label.quality import gold_step_labels
from prmflow.policy.base import Completion, SamplingConfig
from prmflow.prm import PRM, PRMConfig
from prmflow.synth import check_solution, format_prompt, reference_values

MIA = {
    "id": "mia",
    "answer": "28",
    "solution": "23 + 14 = 37\n37 - 9 = 28\nThe answer is 28",
    "problem": "Mia has 23 marbles. She finds 14 more marbles. She gives 9 marbles to Leo. How many marbles does Mia have now?",
}
LEO = {
    "id": "leo",
    "answer": "18",
    "solution": "6 * 3 = 18\nThe answer is 18",
    "problem": "Leo has 6 cards. Then his cards become 3 times as many. How many cards does Leo have now?",
}
ANA = {
    "id": "ana",
    "answer": "7",
    "solution": "12 - 5 = 7\nThe answer is 7",
    "problem": "Ana has 12 pens. She loses 5 pens. How many pens does Ana have now?",
}
PROBLEMS = {p["id"]: p for p in (MIA, LEO, ANA)}
SOLUTIONS = {  # 4 per problem: right, wrong first step, wrong later step, wrong answer line
    "mia": [
        "23 + 14 = 37\n37 - 9 = 28\nThe answer is 28",
        "23 + 14 = 38\n38 - 9 = 29\nThe answer is 29",
        "23 + 14 = 37\n37 - 9 = 27\nThe answer is 27",
        "23 + 14 = 37\n37 - 9 = 28\nThe answer is 82",
    ],
    "leo": [
        "6 * 3 = 18\nThe answer is 18",
        "6 * 3 = 17\nThe answer is 17",
        "6 * 3 = 18\nThe answer is 19",
        "6 + 3 = 9\nThe answer is 9",
    ],
    "ana": [
        "12 - 5 = 7\nThe answer is 7",
        "12 - 5 = 8\nThe answer is 8",
        "12 + 5 = 17\nThe answer is 17",
        "12 - 5 = 7\nThe answer is 5",
    ],
}


def _pool() -> list[dict]:
    """12 segmented solutions (steps = lines with their newline), gold labels from the checker as in
    stage generate (`grade`: with the reference solution, so off-path steps are errors)."""
    rows = []
    for pid, texts in SOLUTIONS.items():
        p = PROBLEMS[pid]
        for j, text in enumerate(texts):
            steps = text.splitlines(keepends=True)
            res = check_solution(p["problem"], text, p["answer"], reference=reference_values(p["solution"]))
            spans, pos = [], 0
            for s in steps:
                spans.append((pos, pos + len(s)))
                pos += len(s)
            rows.append(
                {
                    "id": f"{pid}/{j}",
                    "problem_id": pid,
                    "prompt": format_prompt(p["problem"]),
                    "steps": steps,
                    "gold_labels": gold_step_labels(spans, res.first_error_char),
                }
            )
    return rows


def _evals() -> list[dict]:
    rows = []
    for i, r in enumerate(_pool()):
        p = PROBLEMS[r["problem_id"]]
        label = next((k for k, ok in enumerate(r["gold_labels"]) if not ok), -1)
        rows.append(
            {
                "id": f"e{i}",
                "problem": p["problem"],
                "steps": [s.strip() for s in r["steps"]],
                "label": label,
                "subset": "calib" if i % 2 else "test",
            }
        )
    return rows


class Counting:
    """Wraps a labeler and counts calls per solution (by its first step text and problem)."""

    def __init__(self, inner, name="counting"):
        self.inner, self.name, self.calls = inner, name, Counter()

    @property
    def cost(self):
        return self.inner.cost

    def label(self, row, steps):
        self.calls[(row["id"], "".join(steps))] += 1
        return self.inner.label(row, steps)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture()
def prm(tiny_model_dir):
    return lambda: PRM.from_backbone(
        tiny_model_dir, PRMConfig(num_heads=2, max_len=128, head_data_keep=0.5, l2_to_init=1e-3, seed=0)
    )


def _params(m) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def test_doctests():
    for mod in (prmflow.active.labelers, prmflow.active.loop):
        failed, attempted = doctest.testmod(mod)
        assert attempted >= 2 and failed == 0, mod.__name__


# --------------------------------------------------------------------------- labelers


def test_oracle_on_a_hand_built_wrong_solution():
    # "37 - 9 = 29": the true 28 first differs at the "9", offset 13 + 9 = 22 + 1 = 23; step 1 spans [13, 25)
    steps = ["23 + 14 = 37\n", "37 - 9 = 29\n", "The answer is 29"]
    oracle = OracleLabeler()
    assert oracle.label(MIA, steps) == LabelResult(1, [True, False, False])
    # an entropy cut inside a line: the step ending exactly at the error char is still right
    assert oracle.label(MIA, ["23 + 14 = 37\n37 - 9 = 2", "9\nThe answer is 29"]) == LabelResult(1, [True, False])
    # right solution; "off path" step (adds what should be subtracted) is an error thanks to the reference solution
    assert oracle.label(MIA, ["23 + 14 = 37\n", "37 - 9 = 28\n", "The answer is 28"]) == LabelResult(-1, [True] * 3)
    assert oracle.label(MIA, ["23 + 14 = 37\n", "37 + 9 = 46\n", "The answer is 46"]).first_error == 1
    assert oracle.label({**MIA, "answer": "x/2"}, steps) == UNLABELED  # no exact checker: never guessed
    assert oracle.cost.calls == 5


def test_oracle_reproduces_the_pool_gold_labels():
    oracle = OracleLabeler()
    for r in _pool():
        assert oracle.label(PROBLEMS[r["problem_id"]], r["steps"]).labels == r["gold_labels"]


class StubBackend:
    """Characters as tokens; every rollout answers 28 unless its prefix already wrote a 29 (then 29)."""

    def __init__(self):
        self.forward_passes = 0

    def encode(self, text):
        return [ord(c) for c in text]

    def generate_ids(self, prompt_ids, n, sampling, seeds=None):
        self.forward_passes += 1
        out = []
        for ids in prompt_ids:
            text = "".join(map(chr, ids))
            answer = "29" if "= 29" in text else "28"
            out.append([Completion(f"The answer is {answer}", [1, 2, 3], [], [], finish_reason="stop")] * n)
        return out


def test_mc_labeler_with_a_stub_backend():
    mc = MCLabeler(
        StubBackend(),
        num_rollouts=4,
        sampling=SamplingConfig(max_new_tokens=8),
        encode_text=lambda s: [ord(c) for c in s],
    )
    # step 0 prefix: rollouts say 28 -> right; step 1 wrote 29 -> all rollouts wrong; last step exact (answer 29)
    res = mc.label(MIA, ["23 + 14 = 37\n", "37 - 9 = 29\n", "The answer is 29"])
    assert res == LabelResult(1, [True, False, False])
    # 2 prefixes rolled out (the finished last step is exact): 8 rollouts, 4 tokens each (3 + EOS)
    assert (mc.cost.calls, mc.cost.rollouts, mc.cost.generated_tokens, mc.cost.forward_passes) == (1, 8, 32, 1)


class Fixed:
    def __init__(self, name, first_errors):
        self.name, self.first_errors, self.cost = name, list(first_errors), LabelerCost()

    def label(self, row, steps):
        self.cost.calls += 1
        k = self.first_errors.pop(0)
        return UNLABELED if k is None else LabelResult(k, [k == -1 or i < k for i in range(len(steps))])


def test_consensus_keeps_only_agreements():
    a, b = Fixed("a", [1, 0, -1, None]), Fixed("b", [1, 2, -1])
    both = ConsensusLabeler(a, b)
    steps = ["x\n", "y\n", "z"]
    assert both.label({}, steps) == LabelResult(1, [True, False, False])  # agree on 1
    assert both.label({}, steps) == UNLABELED  # 0 vs 2
    assert both.label({}, steps) == LabelResult(-1, [True, True, True])  # agree: no error
    assert both.label({}, steps) == UNLABELED  # a unlabeled: b is not asked
    assert (a.cost.calls, b.cost.calls, both.cost.calls) == (4, 3, 7)  # cost is the sum
    assert both.name == "consensus(a,b)"


# --------------------------------------------------------------------------- the loop


def _cfg(**kw) -> LoopConfig:
    return LoopConfig(
        **{"batch_size": 4, "lr": 1e-3, "micro_batch_size": 4, "eval_every": 0, "score_batch_size": 16, **kw}
    )


def test_full_labels_everything_and_trains(prm, tmp_path):
    model, labeler = prm(), Counting(OracleLabeler())
    before = _params(model)
    out = run_active_learning(model, _pool(), PROBLEMS, labeler, _cfg(strategy="full"), tmp_path, eval_rows=_evals())
    assert out["rounds"] == 3 and out["counts"] == [4, 4, 4]
    assert out["labels_spent"] == out["labeled"] == 12 and out["unlabeled"] == 0 and out["cost"]["calls"] == 12
    assert sum(labeler.calls.values()) == 12 and max(labeler.calls.values()) == 1
    assert any(not torch.equal(before[k], v) for k, v in _params(model).items())
    # evaluated before training (round 0) and after the last round; F1 in [0, 1] on the test subset
    assert [p["round"] for p in out["curve"]] == [0, 3]
    assert [p["labels_spent"] for p in out["curve"]] == [0, 12]
    assert all(p["f1"] is None or 0 <= p["f1"] <= 1 for p in out["curve"])
    assert (tmp_path / "checkpoint" / "state.json").is_file() and len(list((tmp_path / "labels").iterdir())) == 3


def test_active_labels_only_the_uncertain(prm, tmp_path):
    # std_threshold 1.0 and p 0.0: every step is confident -> nothing labeled, nothing trained
    model, labeler = prm(), Counting(OracleLabeler())
    before = _params(model)
    out = run_active_learning(model, _pool(), PROBLEMS, labeler, _cfg(p=0.0, std_threshold=1.0), tmp_path / "a")
    assert out["labels_spent"] == 0 and not labeler.calls and out["counts"] == [0, 0, 0]
    assert all(h["confident_fraction"] == 1.0 and h["loss"] is None for h in out["history"])
    assert all(torch.equal(before[k], v) for k, v in _params(model).items())
    # pseudo-labels of a random init are checked against gold where gold is known
    assert all(0 <= h["pseudo_label_acc"] <= 1 for h in out["history"])
    # std_threshold -1: nothing is confident -> everything labeled
    labeler = Counting(OracleLabeler())
    out = run_active_learning(prm(), _pool(), PROBLEMS, labeler, _cfg(std_threshold=-1.0), tmp_path / "b")
    assert out["labels_spent"] == 12 and sum(labeler.calls.values()) == 12
    assert all(h["confident_fraction"] == 0.0 and h["selected_fraction"] == 1.0 for h in out["history"])


def test_random_spends_the_given_counts_and_unlabeled_are_skipped(prm, tmp_path):
    class Picky(OracleLabeler):  # cannot decide on Leo's problem
        def label(self, row, steps):
            if row["id"] != "leo":
                return super().label(row, steps)
            self.cost.calls += 1
            return UNLABELED

    out = run_active_learning(prm(), _pool(), PROBLEMS, Picky(), _cfg(strategy="random"), tmp_path, counts=[1, 3, 0])
    assert out["counts"] == [1, 3, 0] and out["labels_spent"] == 4
    assert out["labeled"] + out["unlabeled"] == 4 and out["cost"]["calls"] == 4
    # without a schedule: round(select_fraction * batch) = 2 per round
    out = run_active_learning(
        prm(), _pool(), PROBLEMS, OracleLabeler(), _cfg(strategy="random", select_fraction=0.5), tmp_path / "b"
    )
    assert out["counts"] == [2, 2, 2]


@pytest.mark.parametrize(
    "checkpoint_every, killed_after, paid_before, paid_after",
    [
        (1, 2, 6, 6),  # checkpoint at round 2: resume at round 3
        (2, 3, 9, 3),  # checkpoint at round 2, round 3's labels on disk: round 3 replays from them
    ],
)
def test_resume_after_interruption_pays_no_label_twice(
    prm, tmp_path, checkpoint_every, killed_after, paid_before, paid_after
):
    cfg = _cfg(batch_size=3, std_threshold=-1.0, checkpoint_every=checkpoint_every)  # 4 rounds, label all 3 each
    reference = prm()
    ref = run_active_learning(reference, _pool(), PROBLEMS, Counting(OracleLabeler()), cfg, tmp_path / "ref")

    def kill(t, record):
        if t == killed_after:
            raise KeyboardInterrupt(f"killed after round {t}")

    first = Counting(OracleLabeler())
    with pytest.raises(KeyboardInterrupt):
        run_active_learning(prm(), _pool(), PROBLEMS, first, cfg, tmp_path / "run", on_round=kill)
    assert sum(first.calls.values()) == paid_before
    second = Counting(OracleLabeler())
    resumed = prm()
    out = run_active_learning(resumed, _pool(), PROBLEMS, second, cfg, tmp_path / "run")
    assert sum(second.calls.values()) == paid_after and not set(first.calls) & set(second.calls)
    assert out["labels_spent"] == 12 and out["history"] == ref["history"]
    assert out["cost"]["calls"] == 12  # cost is read back from the saved rounds
    resumed_params = _params(resumed)
    for k, v in _params(reference).items():
        assert torch.equal(v, resumed_params[k]), k
    # a finished run reruns for free
    third = Counting(OracleLabeler())
    again = run_active_learning(prm(), _pool(), PROBLEMS, third, cfg, tmp_path / "run")
    assert not third.calls and again["history"] == ref["history"]


def test_a_crash_inside_a_round_keeps_the_labels_already_bought(prm, tmp_path):
    class Flaky(Counting):  # the endpoint dies at the 5th solution (round 2, 2nd solution)
        def label(self, row, steps):
            if sum(self.calls.values()) == 4 and self.name == "flaky":
                raise ConnectionError("judge down")
            return super().label(row, steps)

    cfg = _cfg(batch_size=3, std_threshold=-1.0)
    first = Flaky(OracleLabeler(), name="flaky")
    with pytest.raises(ConnectionError):
        run_active_learning(prm(), _pool(), PROBLEMS, first, cfg, tmp_path)
    assert sum(first.calls.values()) == 4
    second = Counting(OracleLabeler(), name="flaky")  # same name: same run
    out = run_active_learning(prm(), _pool(), PROBLEMS, second, cfg, tmp_path)
    assert sum(second.calls.values()) == 8 and not set(first.calls) & set(second.calls)
    assert out["labels_spent"] == 12 and out["cost"]["calls"] == 12


def test_a_changed_config_refuses_the_old_state(prm, tmp_path):
    run_active_learning(prm(), _pool(), PROBLEMS, OracleLabeler(), _cfg(strategy="full"), tmp_path)
    with pytest.raises(ValueError, match="another config"):
        run_active_learning(prm(), _pool(), PROBLEMS, OracleLabeler(), _cfg(strategy="full", lr=2e-3), tmp_path)


def test_a_ragged_last_batch_joins_the_round_before_it(prm, tmp_path):
    # 12 solutions in batches of 5: rounds of 5 and 7, not 5, 5 and a round of 2 trained for grad_steps
    out = run_active_learning(prm(), _pool(), PROBLEMS, OracleLabeler(), _cfg(strategy="full", batch_size=5), tmp_path)
    assert out["rounds"] == 2 and [h["batch"] for h in out["history"]] == [5, 7]
    assert out["labels_spent"] == 12


def test_the_lr_schedule_runs_over_rounds_and_resumes(prm, tmp_path):
    def run(cfg, run_dir, kill_after=None):
        model, snaps = prm(), {}

        def on_round(t, record):
            snaps[t] = _params(model)
            if t == kill_after:
                raise KeyboardInterrupt

        run_active_learning(model, _pool(), PROBLEMS, OracleLabeler(), cfg, run_dir, on_round=on_round)
        return snaps

    # linear down to 0: the last of the 3 rounds trains at rate 0, so it moves nothing; constant does
    decayed = run(_cfg(strategy="full", lr_schedule="linear", lr_final=0.0), tmp_path / "lin")
    constant = run(_cfg(strategy="full"), tmp_path / "const")
    assert all(torch.equal(v, decayed[2][k]) for k, v in decayed[3].items())
    assert any(not torch.equal(v, constant[2][k]) for k, v in constant[3].items())
    # round 1 trains at lr under every schedule; later rounds differ from constant's
    assert all(torch.equal(v, constant[1][k]) for k, v in decayed[1].items())
    assert any(not torch.equal(v, constant[2][k]) for k, v in decayed[2].items())
    # a decaying rate that ends where it starts is the constant rate, bit for bit
    flat = run(_cfg(strategy="full", lr_schedule="cosine", lr_final=1.0), tmp_path / "flat")
    assert all(torch.equal(v, constant[3][k]) for k, v in flat[3].items())
    # the rate is a function of the round, so a killed cosine run resumes to the same parameters
    cfg = _cfg(strategy="full", lr_schedule="cosine", lr_final=0.2, batch_size=3)
    whole = run(cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "killed", kill_after=2)
    resumed = run(cfg, tmp_path / "killed")
    assert min(resumed) == 3 and all(torch.equal(v, whole[4][k]) for k, v in resumed[4].items())


def test_a_constant_rate_keeps_the_fingerprint_of_loop_version_2(prm, tmp_path):
    """Saved constant-rate runs (made before the schedule existed) still resume; a schedule is a new run."""
    from prmflow.active.loop import config_key

    cfg = _cfg(strategy="full")
    old = {k: v for k, v in asdict(cfg).items() if k not in ("lr_schedule", "lr_final")}
    assert config_key(cfg) == old and config_key(replace(cfg, lr_schedule="linear"))["lr_schedule"] == "linear"
    run_active_learning(prm(), _pool(), PROBLEMS, OracleLabeler(), cfg, tmp_path)
    with pytest.raises(ValueError, match="another config"):
        run_active_learning(prm(), _pool(), PROBLEMS, OracleLabeler(), replace(cfg, lr_schedule="linear"), tmp_path)
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfg(lr_schedule="step")
