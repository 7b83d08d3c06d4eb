import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prmflow.edu.entropy import check_finite, token_entropy, topk_entropy, topk_entropy_upper


def test_known_distributions():
    # uniform over 8 tokens: H = log 8
    assert math.isclose(float(token_entropy(torch.zeros(8))), math.log(8), rel_tol=1e-6)
    # one-hot (other logits -inf): H = 0, not NaN
    logits = torch.tensor([0.0, -math.inf, -math.inf])
    assert float(token_entropy(logits)) == 0.0
    # p = (1/2, 1/4, 1/4): H = 1.5 log 2
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    assert math.isclose(float(token_entropy(logits)), 1.5 * math.log(2), rel_tol=1e-6)


def test_batched_shape():
    assert token_entropy(torch.zeros(2, 3, 5)).shape == (2, 3)


def test_topk_exact_when_topk_holds_all_mass():
    p = [0.7, 0.2, 0.1]
    lps = [math.log(x) for x in p]
    exact = -sum(x * math.log(x) for x in p)
    assert math.isclose(topk_entropy(lps), exact, rel_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=3, max_size=40), st.integers(1, 40))
def test_topk_bounds_true_entropy(logits, k):
    # eq. 2 lower bound <= H <= uniform-leftover upper bound, for every k
    t = torch.tensor(logits, dtype=torch.float64)
    H = float(token_entropy(t))
    lp = torch.log_softmax(t, -1).sort(descending=True).values[: min(k, len(logits))].tolist()
    assert topk_entropy(lp) <= H + 1e-6
    assert H <= topk_entropy_upper(lp, len(logits)) + 1e-6


def test_check_finite_points_at_the_bad_index():
    try:
        check_finite(torch.tensor([0.1, float("nan"), 0.3]), "entropy")
    except FloatingPointError as e:
        assert "index [1]" in str(e)
    else:
        raise AssertionError("NaN not caught")
