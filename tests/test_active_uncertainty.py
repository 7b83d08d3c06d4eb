"""ActPRM's confident/uncertain rule on hand-made ensemble outputs (num_heads x num_steps)."""

import doctest

import pytest
import torch

import prmflow.active.uncertainty
from prmflow.active import solution_uncertainty


def test_doctests():
    failed, attempted = doctest.testmod(prmflow.active.uncertainty)
    assert attempted >= 4 and failed == 0


def test_masking_after_first_predicted_error():
    # heads [[.95,.02,.5],[.96,.03,.9]] -> step 1 is the first predicted error, step 2 masked;
    # std of step 0 = 0.005, of step 1 = 0.005 -> confident (step 2, std 0.2 and mean 0.7, ignored)
    u = solution_uncertainty([[0.95, 0.02, 0.5], [0.96, 0.03, 0.9]])
    assert u.pseudo_labels == [True, False, True]
    assert u.mask == [False, False, True]
    assert u.first_error == 1
    assert u.head_mean == pytest.approx([0.955, 0.025, 0.7])
    assert u.head_std == pytest.approx([0.005, 0.005, 0.2])
    assert u.confident


def test_the_first_predicted_error_itself_is_judged():
    # step 1 mean 0.3 < 0.5 -> first error, not masked; 0.3 > 1 - 0.9 -> not confident
    u = solution_uncertainty([[0.95, 0.3, 0.0], [0.95, 0.3, 0.0]])
    assert u.mask == [False, False, True] and not u.confident


def test_unmasked_uncertain_step_after_confident_ones():
    # no predicted error: all 3 steps judged; step 2 mean 0.85 < 0.9 -> uncertain
    assert not solution_uncertainty([[0.99, 0.99, 0.85], [0.99, 0.99, 0.85]]).confident
    # heads disagree on step 0: 0.95 vs 0.99, std 0.02 > 0.01 -> uncertain; with 0.03 confident
    assert not solution_uncertainty([[0.95, 0.99], [0.99, 0.99]], std_threshold=0.01).confident
    assert solution_uncertainty([[0.95, 0.99], [0.99, 0.99]], std_threshold=0.03).confident


def test_thresholds_are_inclusive():
    # exactly representable numbers: mean 0.75 with p = 0.75 -> confident (>=)
    assert solution_uncertainty([[0.75], [0.75]], p=0.75, std_threshold=0.0).confident
    # mean 0.25 = 1 - p -> confident (<=); it is the first predicted error
    assert solution_uncertainty([[0.25], [0.25]], p=0.75, std_threshold=0.0).confident
    # std exactly 0.25 (heads 0.5 and 1.0, mean 0.75) with std_threshold 0.25 -> confident (<=)
    assert solution_uncertainty([[0.5], [1.0]], p=0.75, std_threshold=0.25).confident
    assert not solution_uncertainty([[0.5], [1.0]], p=0.75, std_threshold=0.24).confident
    # mean 0.5 is a pseudo-label True (>= 0.5)
    assert solution_uncertainty([[0.5], [0.5]], p=0.5, std_threshold=0.0).pseudo_labels == [True]


def test_switches_everything_on_or_off():
    heads = torch.tensor([[0.5, 0.1, 0.7], [0.6, 0.9, 0.2]])
    assert solution_uncertainty(heads, p=0.0, std_threshold=1.0).confident  # everything confident
    assert not solution_uncertainty([[1.0], [1.0]], p=0.9, std_threshold=-1).confident  # nothing is


def test_single_head_and_empty_and_bad_input():
    assert solution_uncertainty([[0.97, 0.02]]).confident  # one head: std 0
    assert solution_uncertainty([[]]).confident  # no steps: vacuously confident
    with pytest.raises(ValueError):
        solution_uncertainty([0.5, 0.5])  # not 2-D
    with pytest.raises(ValueError):
        solution_uncertainty([[1.5]])
    with pytest.raises(ValueError):
        solution_uncertainty([[float("nan")]])
