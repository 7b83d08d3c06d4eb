"""EDU sampling tree: branch a solution at its high-entropy tokens (EDU-PRM, arXiv 2503.22233).

One trunk solution is sampled. At every anchor, a token t whose entropy H_t exceeds the
threshold, the generation also tries the other top-k tokens of p_t and continues each to
completion. Branches can branch again, up to `max_depth`, and `max_branches` caps the total.

    trunk:      a b c [d] e f g            H_3 > threshold, top-2 at 3 = {d, d'}
    branch 1:   a b c [d'] x y              shares a b c with the trunk

The tree is stored compactly: a node holds its parent, the position in the parent's full
sequence where it diverges (`branch_pos`), and only its own suffix tokens. Flattening gives
one full trajectory per node. Those trajectories cost only their unshared suffixes, and their
shared prefixes let MC labels be reused (prefix -> estimate).

    >>> # a node with parent 0, branch_pos 3 and tokens [d', x, y] flattens to
    >>> # trunk.tokens[:3] + [d', x, y]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prmflow.policy.base import Backend, Completion, SamplingConfig


@dataclass(frozen=True)
class TreeConfig:
    """Budget and branching rule of the EDU sampling tree."""

    entropy_threshold: float = 1.0
    """nats; a token above it is an anchor (the paper's 1.0)"""
    top_k: int = 2
    """branch into the top-k tokens at an anchor (those the parent did not take)"""
    max_branches: int = 8
    """most branches (nodes other than the trunk) per tree"""
    max_depth: int = 2
    """most nested branchings: 1 = branch the trunk only"""
    min_gap: int = 2
    """anchors closer than this many tokens to the previous branched anchor of the same node are skipped"""

    def __post_init__(self) -> None:
        for name in ("top_k", "max_depth", "min_gap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_branches < 0:
            raise ValueError(f"max_branches must be >= 0, got {self.max_branches}")


@dataclass
class Node:
    """One branch of the tree (node 0 is the trunk)."""

    parent: int
    """index of the parent node, -1 for the trunk"""
    branch_pos: int
    """tokens of the parent's full sequence kept before this node's own tokens"""
    token_ids: list[int]
    """this node's own (unshared) tokens; token_ids[0] is the alternative token it branched on"""
    entropy: list[float]
    """H_t for each own token"""
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    depth: int = 0
    finish_reason: str = "stop"
    pruned: bool = False
    """a `keep` check rejected it: never branched from, and not a candidate (P-EDU)"""


@dataclass
class Tree:
    """All nodes of one problem's EDU tree, plus what building it cost."""

    nodes: list[Node]
    generated_tokens: int = 0

    def full_tokens(self, i: int) -> list[int]:
        """Node i's whole completion: its ancestors' shared prefix + its own tokens."""
        node = self.nodes[i]
        if node.parent < 0:
            return list(node.token_ids)
        return self.full_tokens(node.parent)[: node.branch_pos] + node.token_ids

    def full_entropy(self, i: int) -> list[float]:
        node = self.nodes[i]
        if node.parent < 0:
            return list(node.entropy)
        return self.full_entropy(node.parent)[: node.branch_pos] + node.entropy

    def flatten(self) -> list[tuple[list[int], list[float]]]:
        """One (token ids, entropies) trajectory per node, trunk first."""
        return [(self.full_tokens(i), self.full_entropy(i)) for i in range(len(self.nodes))]

    def to_row(self, decimals: int = 5) -> dict[str, Any]:
        return {
            "nodes": [
                {
                    "parent": n.parent,
                    "branch_pos": n.branch_pos,
                    "token_ids": n.token_ids,
                    "entropy": [round(h, decimals) for h in n.entropy],
                    "depth": n.depth,
                    "finish_reason": n.finish_reason,
                }
                for n in self.nodes
            ],
            "generated_tokens": self.generated_tokens,
        }


def branch_points(node: Node, cfg: TreeConfig, skip_first: bool) -> list[tuple[int, int]]:
    """(position in node.token_ids, alternative token) pairs to branch on, highest entropy first.

    Position 0 of a branch is the token it was forced to take, so it is skipped there.
    """
    cand = [i for i, h in enumerate(node.entropy) if h > cfg.entropy_threshold and not (skip_first and i == 0)]
    cand.sort(key=lambda i: (-node.entropy[i], i))
    chosen: list[int] = []
    for i in cand:
        if all(abs(i - j) >= cfg.min_gap for j in chosen):
            chosen.append(i)
    out = []
    for i in sorted(chosen, key=lambda i: (-node.entropy[i], i)):
        if i >= len(node.top_logprobs):
            raise ValueError(f"branching needs top_logprobs >= top_k at every token; none at token {i}")
        tops = node.top_logprobs[i][: cfg.top_k]
        out += [(i, tok) for tok, _ in tops if tok != node.token_ids[i]]
    return out


def grow_tree(
    backend: Backend,
    prompt_ids: Sequence[int],
    trunk: Completion,
    cfg: TreeConfig,
    sampling: SamplingConfig,
    seed: int,
    keep: Callable[[Tree, int], bool] | None = None,
) -> Tree:
    """Grow an EDU tree from a sampled `trunk` (which must carry top_logprobs >= cfg.top_k).

    Breadth first: all branches of one depth are generated in one batched backend call.
    `keep(tree, i)` (e.g. a PRM score above a floor, P-EDU) is asked about every new node; a
    rejected node is marked `pruned` and never branched from.
    """
    if sampling.top_logprobs < cfg.top_k:
        sampling = replace(sampling, top_logprobs=cfg.top_k)
    tree = Tree(
        [Node(-1, 0, list(trunk.token_ids), list(trunk.entropy), list(trunk.top_logprobs), 0, trunk.finish_reason)]
    )
    frontier = [0]
    for depth in range(1, cfg.max_depth + 1):
        requests: list[tuple[int, int, int]] = []  # (parent node, position in parent's own tokens, alt token)
        for idx in frontier:
            for pos, alt in branch_points(tree.nodes[idx], cfg, skip_first=idx != 0):
                if len(requests) + len(tree.nodes) - 1 >= cfg.max_branches:
                    break
                requests.append((idx, pos, alt))
        if not requests:
            break
        prefixes, shared = [], []
        for idx, pos, alt in requests:
            node = tree.nodes[idx]
            n_shared = (node.branch_pos if node.parent >= 0 else 0) + pos  # parent's full tokens kept
            shared.append(n_shared)
            prefixes.append(list(prompt_ids) + tree.full_tokens(idx)[:n_shared] + [alt])
        # a branch may grow to the trunk's token budget counted from its shared prefix
        sub = replace(sampling, max_new_tokens=max(1, sampling.max_new_tokens - min(shared) - 1))
        outs = backend.generate_ids(
            prefixes, 1, sub, seeds=[seed * 7919 + depth * 1009 + k for k in range(len(requests))]
        )
        frontier = []
        for (idx, pos, alt), n_shared, out in zip(requests, shared, outs, strict=True):
            c = out[0]
            parent = tree.nodes[idx]
            h_alt = parent.entropy[pos]  # the same distribution produced the alternative token
            top_alt = parent.top_logprobs[pos] if pos < len(parent.top_logprobs) else []
            tree.nodes.append(
                Node(
                    idx,
                    n_shared,
                    [alt] + c.token_ids,
                    [h_alt] + c.entropy,
                    [top_alt] + c.top_logprobs,
                    depth,
                    c.finish_reason,
                )
            )
            tree.generated_tokens += 1 + len(c.token_ids)
            if keep is not None and not keep(tree, len(tree.nodes) - 1):
                tree.nodes[-1].pruned = True
            else:
                frontier.append(len(tree.nodes) - 1)
    return tree
