r"""OmegaPRM's binary search for the first error of a solution (arXiv 2406.06592).

Labeling every step of an n-step solution with Math-Shepherd rollouts (prmflow.label.mc) costs
n * N rollouts. OmegaPRM locates the first error by divide and conquer instead, with MC(k) the
Monte-Carlo value of the prefix that ends after step k (0-based):

    MC(k) = (1/N) * sum_j 1[rollout j from s_{1:k} reaches a*]
    MC(k) >  0  ->  steps 0..k are correct: the error is after k        (search k+1 .. hi)
    MC(k) == 0  ->  the first error is at or before k                   (search lo .. k)

starting from lo = 0, hi = n ("n" meaning: no error) and probing the middle, so

    first_error = min{k : MC(k) = 0}, or -1 if every MC(k) > 0,

found with at most ceil(log2(n + 1)) probes, i.e. O(N log n) rollouts instead of N * n. This
assumes MC is monotone (once a prefix cannot reach the answer, no longer prefix can), which
holds for the true values; sampled values can break it, and then the search still returns a k
with MC(k) = 0 and (k = 0 or MC(k-1) > 0), both probed, but maybe not the earliest zero.

    >>> first_error, probes = binary_search_first_error(lambda k: 1.0 if k < 5 else 0.0, 8)
    >>> first_error, probes       # 4 reaches the answer, 6 does not, 5 does not
    (5, [4, 6, 5])
    >>> binary_search_first_error(lambda k: 0.5, 8)
    (-1, [4, 6, 7])

`omega_labels` runs the search with real rollouts and turns it into step labels:

    hard_label[k] = k < first_error        (all True when first_error = -1)
    soft_label[k] = MC(k) where probed, else 1.0 before first_error and 0.0 from it on

The unprobed soft labels are the values the monotone assumption implies, not estimates.
A solution whose own final answer is correct needs no rollouts at all (OmegaPRM's shortcut):
the solution itself is a rollout from each of its prefixes that reaches a*, so every hard label
is 1 (and every soft label is set to 1.0). Like any outcome-based label this calls a step right
when a lucky later step repairs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prmflow.label.mc import LabelCost, StepEstimate, Verify, mc_estimates
from prmflow.policy.base import Backend, SamplingConfig


def binary_search_first_error(mc_at: Callable[[int], float], n_steps: int) -> tuple[int, list[int]]:
    """Smallest k in [0, n_steps) with mc_at(k) == 0, or -1; and the probed k in probe order.

    Calls mc_at at most ceil(log2(n_steps + 1)) times, each k at most once (see module docstring).
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    lo, hi = 0, n_steps  # the first error is in [lo, hi]; hi == n_steps means "none"
    probes: list[int] = []
    while lo < hi:
        mid = (lo + hi) // 2
        probes.append(mid)
        if mc_at(mid) == 0:
            hi = mid  # error at or before mid
        else:
            lo = mid + 1  # steps 0..mid are fine
    return (lo if lo < n_steps else -1), probes


@dataclass
class OmegaLabels:
    """Step labels of one solution from the binary search."""

    hard_labels: list[bool]
    """per step: True before first_error, False from it on"""
    soft_labels: list[float]
    """per step: MC value where probed, else 1.0 before first_error and 0.0 from it on"""
    first_error: int
    """index of the earliest wrong step, -1 if none"""
    probes: list[int]
    """step indices rolled out from, in order (empty when the final answer is correct)"""
    estimates: dict[int, StepEstimate]
    """the rollout counts behind each probe"""
    cost: LabelCost
    """rollouts and tokens spent on this solution"""


def omega_labels(
    backend: Backend,
    step_prefixes: Sequence[Sequence[int]],
    final_correct: bool,
    verify: Verify,
    num_rollouts: int,
    sampling: SamplingConfig,
) -> OmegaLabels:
    """Label each step of one solution by binary search for its first error.

    step_prefixes[k]: token ids of prompt + completion up to the end of step k.
    verify(k, rollout_text): is a rollout from step k's prefix right (e.g. `answer_verifier`
    over the step-prefix texts). The rollouts of step k are seeded with sampling.seed + k, the
    backend's default for prefix k, so a probe gives exactly the estimate that labeling every
    step in one `mc_estimates(backend, step_prefixes, ...)` call gives that step.
    """
    n = len(step_prefixes)
    if final_correct:  # OmegaPRM's shortcut: the solution is its own successful rollout
        return OmegaLabels([True] * n, [1.0] * n, -1, [], {}, LabelCost())

    estimates: dict[int, StepEstimate] = {}
    cost = LabelCost()

    def mc_at(k: int) -> float:
        nonlocal cost
        (est,), probe_cost = mc_estimates(
            backend,
            [step_prefixes[k]],
            lambda _, text: verify(k, text),
            num_rollouts,
            sampling,
            seeds=[sampling.seed + k],
        )
        estimates[k] = est
        cost += probe_cost
        return est.soft_label

    first_error, probes = binary_search_first_error(mc_at, n)
    cut = n if first_error == -1 else first_error
    hard = [k < cut for k in range(n)]
    soft = [estimates[k].soft_label if k in estimates else float(k < cut) for k in range(n)]
    return OmegaLabels(hard, soft, first_error, probes, estimates, cost)
