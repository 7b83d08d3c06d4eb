"""Baseline step scorers to beat: every step 1, the policy's own token entropy, and its likelihood.

The entropy baseline asks whether the policy's uncertainty alone locates errors (the premise of
EDU-PRM, arXiv 2503.22233): a step's score is exp(-max_t H_t) over the tokens t of that step, in
(0, 1], so a confident step scores near 1 and a step with one very uncertain token scores low.

The likelihood baseline scores a step by its least likely token, exp(min_t log p(x_t | x_<t)):
where entropy says "the policy was unsure here", likelihood says "the policy did not expect
this token", which is what a sampling slip looks like.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def all_ones(n_steps: int) -> list[float]:
    """The PRM that trusts everything: predicts -1 (no error) for every solution."""
    return [1.0] * n_steps


def _per_span(
    values: Sequence[float], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], what: str
) -> list[list[float]]:
    """The values of the tokens that start inside each char span (offsets ascending)."""
    if len(values) != len(offsets):
        raise ValueError(f"{len(values)} {what} values but {len(offsets)} token offsets")
    out: list[list[float]] = []
    t = 0
    for start, end in spans:
        inside = []
        while t < len(offsets) and offsets[t][0] < end:
            if offsets[t][0] >= start:
                if not math.isfinite(values[t]):
                    raise ValueError(f"non-finite {what} at token {t}")
                inside.append(values[t])
            t += 1
        out.append(inside)
    return out


def likelihood_step_scores(
    logprobs: Sequence[float], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[float]:
    """exp(min log p) of the tokens that start inside each step's char span (1.0 if none).

    >>> likelihood_step_scores([-0.1, -2.0, 0.0], [(0, 2), (2, 4), (4, 6)], [(0, 4), (4, 6)])
    [0.1353352832366127, 1.0]
    """
    return [math.exp(min(lp, default=0.0)) for lp in _per_span(logprobs, offsets, spans, "log-prob")]


def entropy_step_scores(
    entropy: Sequence[float], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[float]:
    """exp(-max entropy) of the tokens that start inside each step's char span.

    A step with no token of its own (cannot happen for non-empty lines) scores 1.0.

    >>> entropy_step_scores([0.1, 2.0, 0.0], [(0, 2), (2, 4), (4, 6)], [(0, 4), (4, 6)])
    [0.1353352832366127, 1.0]
    """
    return [math.exp(-max(h, default=0.0)) for h in _per_span(entropy, offsets, spans, "entropy")]
