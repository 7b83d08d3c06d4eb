import pytest

from prmflow.io import DataError
from prmflow.label import checkpoint
from prmflow.label.mc import LabelCost, StepEstimate


def test_roundtrip_and_torn_last_line(tmp_path):
    p = tmp_path / "c.jsonl"
    assert checkpoint.load(p) == {}
    a = {"k1": (StepEstimate(3, 8), LabelCost(rollouts=8, generated_tokens=40))}
    b = {"k2": (StepEstimate(0, 8), LabelCost(rollouts=8, generated_tokens=12, forward_passes=3))}
    checkpoint.append(p, a)
    checkpoint.append(p, b)
    assert checkpoint.load(p) == {**a, **b}
    with open(p, "a") as f:  # a kill in the middle of an append leaves half a line
        f.write('{"key": "k3", "n_corr')
    assert checkpoint.load(p) == {**a, **b}


def test_damage_before_the_end_is_an_error(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('garbage\n{"key": "k", "n_correct": 1, "num_rollouts": 2, "cost": {}}\n')
    with pytest.raises(DataError, match="c.jsonl:1"):
        checkpoint.load(p)
