"""EDU-guided sampling: N solutions from entropy-branching trees instead of N independent samples.

EDU-PRM (arXiv 2503.22233) proposes sampling that branches only where the policy is uncertain
(high-entropy tokens) and prunes branches a PRM scores low (P-EDU, prune below 0.2). Shared
prefixes are generated once, so N candidates cost fewer tokens than N independent samples; the
paper reports +2.6 accuracy points with 32% fewer tokens. We measure it (prmflow.flows.evaluate).

Procedure for one problem, target N candidates:
    repeat: sample a trunk; grow an EDU tree from it (prmflow.edu.tree) with the remaining
            branch budget, asking `keep` about each new branch
    until N non-pruned trajectories exist, or `max_trunks` trunks were tried.
Pruned branches still cost their tokens but are not candidates. If everything was pruned, the
pruned trajectories are returned (flagged), so the caller always has candidates to choose from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from prmflow.edu.tree import Tree, TreeConfig, grow_tree
from prmflow.policy.base import Backend, SamplingConfig


@dataclass
class EDUSample:
    """The candidates of one problem and what they cost."""

    trajectories: list[list[int]]
    """completion token ids of each candidate"""
    pruned: list[bool]
    """per candidate: a PRM check rejected it (only returned when nothing else survived)"""
    generated_tokens: int
    """tokens sampled, EOS included: trunks plus unshared branch suffixes (pruned ones too)"""
    trunks: int
    """trees grown"""


def edu_guided_sample(
    backend: Backend,
    prompt_ids: list[int],
    n: int,
    cfg: TreeConfig,
    sampling: SamplingConfig,
    seed: int,
    keep: Callable[[Tree, int], bool] | None = None,
    max_trunks: int = 0,
) -> EDUSample:
    """Up to `n` candidates from EDU trees (see module docstring). max_trunks 0 means n."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sampling = replace(sampling, top_logprobs=max(sampling.top_logprobs, cfg.top_k))
    kept: list[list[int]] = []
    rejected: list[list[int]] = []
    tokens = 0
    trunks = 0
    while len(kept) < n and trunks < (max_trunks or n):
        trunk = backend.generate_ids([prompt_ids], 1, sampling, seeds=[seed * 1_000_003 + trunks])[0][0]
        tokens += len(trunk.token_ids) + (trunk.finish_reason == "stop")
        budget = replace(cfg, max_branches=max(0, n - len(kept) - 1))
        tree = grow_tree(backend, prompt_ids, trunk, budget, sampling, seed * 7 + trunks, keep=keep)
        tokens += tree.generated_tokens
        trunks += 1
        for i, node in enumerate(tree.nodes):
            if i == 0 and keep is not None and not keep(tree, 0):
                node.pruned = True
            (rejected if node.pruned else kept).append(tree.full_tokens(i))
    if kept:
        return EDUSample(kept[:n], [False] * len(kept[:n]), tokens, trunks)
    return EDUSample(rejected[:n], [True] * len(rejected[:n]), tokens, trunks)
