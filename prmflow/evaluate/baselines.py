"""Baseline step scorers to beat: every step 1, and the policy's own token entropy.

The entropy baseline asks whether the policy's uncertainty alone locates errors (the premise of
EDU-PRM, arXiv 2503.22233): a step's score is exp(-max_t H_t) over the tokens t of that step, in
(0, 1], so a confident step scores near 1 and a step with one very uncertain token scores low.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def all_ones(n_steps: int) -> list[float]:
    """The PRM that trusts everything: predicts -1 (no error) for every solution."""
    return [1.0] * n_steps


def entropy_step_scores(entropy: Sequence[float], offsets: Sequence[tuple[int, int]],
                        spans: Sequence[tuple[int, int]]) -> list[float]:
    """exp(-max entropy) of the tokens that start inside each step's char span.

    A step with no token of its own (cannot happen for non-empty lines) scores 1.0.

    >>> entropy_step_scores([0.1, 2.0, 0.0], [(0, 2), (2, 4), (4, 6)], [(0, 4), (4, 6)])
    [0.1353352832366127, 1.0]
    """
    if len(entropy) != len(offsets):
        raise ValueError(f"{len(entropy)} entropies but {len(offsets)} token offsets")
    scores = []
    t = 0
    for start, end in spans:
        worst = 0.0
        while t < len(offsets) and offsets[t][0] < end:
            if offsets[t][0] >= start:
                if not math.isfinite(entropy[t]):
                    raise ValueError(f"non-finite entropy at token {t}")
                worst = max(worst, entropy[t])
            t += 1
        scores.append(math.exp(-worst))
    return scores
