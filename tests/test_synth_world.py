"""The synthetic world: deterministic, within its config, and always solvable by its own solutions."""

import doctest
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prmflow.synth.checker
import prmflow.synth.format
import prmflow.synth.sources
import prmflow.synth.world
from prmflow.synth import Problem, Step, WorldConfig, check_solution, generate_problem, generate_problems


@pytest.mark.parametrize(
    "module", [prmflow.synth.format, prmflow.synth.world, prmflow.synth.checker, prmflow.synth.sources]
)
def test_docstring_examples(module):
    # the docstring examples are the spec (world's shows the real first problem for seed 0)
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


def test_seed_0_first_problem():
    p = generate_problems(1, seed=0, cfg=WorldConfig())[0]
    assert p.to_row() == {
        "id": "synth-000000",
        "problem": "Nora has 4 toys. She gets 9 boxes of 8 toys each. She buys 7 bags with 7 toys in each bag."
        " How many toys does Nora have now?",
        "answer": "125",  # a string in rows
        "solution": "9 * 8 = 72\n4 + 72 = 76\n7 * 7 = 49\n76 + 49 = 125\nThe answer is 125",
    }


def test_step_text_and_solution():
    p = Problem("x", "Mia has 23 marbles. ...", 37, (Step(23, "+", 14, 37),))
    assert Step(37, "/", 4, 9).text == "37 / 4 = 9"  # text only formats; no arithmetic is checked
    assert p.solution == "23 + 14 = 37\nThe answer is 37"


def test_same_seed_same_rows_other_seed_differs():
    rows = [p.to_row() for p in generate_problems(50, seed=1)]
    assert rows == [p.to_row() for p in generate_problems(50, seed=1)]
    assert rows != [p.to_row() for p in generate_problems(50, seed=2)]
    assert len({r["problem"] for r in rows}) == 50  # varied


def test_longer_list_extends_shorter_and_ids():
    many, few = generate_problems(20, seed=3), generate_problems(5, seed=3)
    assert many[:5] == few
    assert [p.id for p in few] == [f"synth-{i:06d}" for i in range(5)]
    assert generate_problems(1, seed=3, id_prefix="train")[0].id == "train-000000"
    assert generate_problems(0, seed=3) == []


def test_does_not_touch_global_random():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_problems(20, seed=0)
    assert random.random() == expected


def _check_world_invariants(problems, cfg):
    for p in problems:
        assert cfg.min_steps <= len(p.steps) <= cfg.max_steps
        for s in p.steps:
            assert 0 <= s.result <= cfg.max_value
            assert s.op in "+-*/"
            if s.op == "/":
                assert s.b >= 2 and s.a % s.b == 0 and s.a // s.b == s.result  # exact division
            else:
                assert s.result == {"+": s.a + s.b, "-": s.a - s.b, "*": s.a * s.b}[s.op]
        assert p.answer == p.steps[-1].result
        r = check_solution(p.problem, p.solution, answer=p.to_row()["answer"], reference=[s.result for s in p.steps])
        assert (r.first_error, r.first_error_char, r.final_correct) == (-1, -1, True), (p, r.verdicts)


def test_default_world_invariants_and_step_counts():
    cfg = WorldConfig()
    problems = generate_problems(500, seed=0, cfg=cfg)
    _check_world_invariants(problems, cfg)
    counts = {len(p.steps) for p in problems}
    assert counts == set(range(cfg.min_steps, cfg.max_steps + 1))  # every count in [2, 8] occurs
    ops = {s.op for p in problems for s in p.steps}
    assert ops == set("+-*/")


def test_fixed_step_count_and_tight_numbers():
    cfg = WorldConfig(min_steps=3, max_steps=3, start_min=1, start_max=5, add_max=3, mul_max=2, div_max=2, max_value=6)
    problems = generate_problems(200, seed=5, cfg=cfg)
    assert {len(p.steps) for p in problems} == {3}
    _check_world_invariants(problems, cfg)


def test_only_add_weight_gives_only_additions():
    cfg = WorldConfig(w_sub=0, w_mul=0, w_div=0, w_group=0)
    problems = generate_problems(50, seed=0, cfg=cfg)
    assert {s.op for p in problems for s in p.steps} == {"+"}
    assert all("more" in p.problem or "gives her" in p.problem or "gives him" in p.problem for p in problems)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    min_steps=st.integers(1, 4),
    extra_steps=st.integers(0, 4),
    start_max=st.integers(1, 50),
    add_max=st.integers(1, 50),
    mul_max=st.integers(2, 12),
    div_max=st.integers(2, 12),
    headroom=st.integers(0, 200),
    weights=st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=5, max_size=5).filter(any),
)
def test_any_valid_config_gives_valid_problems(
    seed, min_steps, extra_steps, start_max, add_max, mul_max, div_max, headroom, weights
):
    cfg = WorldConfig(
        min_steps=min_steps, max_steps=min_steps + extra_steps, start_min=1, start_max=start_max,
        add_max=add_max, mul_max=mul_max, div_max=div_max, max_value=max(2, start_max) + headroom,
        w_add=weights[0], w_sub=weights[1], w_mul=weights[2], w_div=weights[3], w_group=weights[4],
    )  # fmt: skip
    _check_world_invariants([generate_problem(random.Random(seed), cfg, "p")], cfg)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"min_steps": 0}, "min_steps"),
        ({"min_steps": 5, "max_steps": 4}, "max_steps"),
        ({"start_min": 0}, "start_min"),
        ({"start_min": 10, "start_max": 9}, "start_max"),
        ({"add_max": 0}, "add_max"),
        ({"mul_max": 1}, "mul_max"),
        ({"div_max": 1}, "div_max"),
        ({"max_value": 39}, "max_value"),  # below the default start_max=40
        ({"w_mul": -1.0}, "w_mul"),
        ({"w_div": float("nan")}, "w_div"),
        ({"w_add": 0, "w_sub": 0, "w_mul": 0, "w_div": 0, "w_group": 0}, "w_add"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"min_steps": True}, "min_steps"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"WorldConfig\.{field}="):
        WorldConfig(**kwargs)


def test_negative_n_rejected():
    with pytest.raises(ValueError, match="n=-1"):
        generate_problems(-1, seed=0)
