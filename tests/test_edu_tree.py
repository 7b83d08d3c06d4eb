"""EDU sampling tree: branching rule, budgets and flattening, on a stub backend."""

import pytest

from prmflow.edu.tree import Node, TreeConfig, branch_points, grow_tree
from prmflow.policy.base import Completion, SamplingConfig


class StubBackend:
    """Continues any prefix with [90 + depth-ish marker, 99]; entropy 2.0 on the first token."""

    def __init__(self):
        self.calls = []

    def generate_ids(self, prompt_ids, n, sampling, seeds=None):
        self.calls.append([list(p) for p in prompt_ids])
        out = []
        for p in prompt_ids:
            toks = [len(p), 99]  # first own token encodes the prefix length, so tests can see where it branched
            out.append(
                [
                    Completion(
                        text="",
                        token_ids=toks,
                        offsets=[(0, 0)] * 2,
                        entropy=[2.0, 0.1],
                        top_logprobs=[[(toks[0], -0.5), (7, -1.0)], [(99, -0.01), (7, -5.0)]],
                    )
                ]
            )
        return out


def trunk() -> Completion:
    # H = [0.2, 1.5, 0.3, 2.0, 0.1]; threshold 1.0 -> anchors at 1 and 3 (3 is higher, so first)
    return Completion(
        text="",
        token_ids=[10, 11, 12, 13, 14],
        offsets=[(0, 0)] * 5,
        entropy=[0.2, 1.5, 0.3, 2.0, 0.1],
        top_logprobs=[
            [(10, -0.1), (50, -3.0)],
            [(11, -0.5), (51, -1.0)],
            [(12, -0.1), (52, -3)],
            [(60, -0.6), (13, -0.9)],
            [(14, -0.1), (54, -3)],
        ],
    )


def test_branch_points_take_the_untaken_topk_tokens_highest_entropy_first():
    node = Node(-1, 0, trunk().token_ids, trunk().entropy, trunk().top_logprobs)
    # at 3 the trunk took 13, the top-2 are {60, 13} -> branch on 60; at 1 took 11 -> branch on 51
    assert branch_points(node, TreeConfig(top_k=2), skip_first=False) == [(3, 60), (1, 51)]
    # top_k=1: at 3 the top token 60 was not taken -> branch; at 1 the top token was taken -> none
    assert branch_points(node, TreeConfig(top_k=1), skip_first=False) == [(3, 60)]
    # min_gap 3 drops anchor 1 (only 2 tokens from anchor 3)
    assert branch_points(node, TreeConfig(top_k=2, min_gap=3), skip_first=False) == [(3, 60)]


def test_grow_and_flatten_depth_one():
    be = StubBackend()
    prompt = [1, 2]
    tree = grow_tree(
        be,
        prompt,
        trunk(),
        TreeConfig(top_k=2, max_depth=1, max_branches=8),
        SamplingConfig(max_new_tokens=20, top_logprobs=2),
        seed=0,
    )
    assert len(tree.nodes) == 3  # trunk + 2 branches
    # one batched call with both prefixes: prompt + shared trunk prefix + alternative token
    assert be.calls == [[[1, 2, 10, 11, 12, 60], [1, 2, 10, 51]]]
    flat = [t for t, _ in tree.flatten()]
    assert flat[0] == [10, 11, 12, 13, 14]
    assert flat[1] == [10, 11, 12, 60, 6, 99]  # 6 = length of the prefix the stub saw
    assert flat[2] == [10, 51, 4, 99]
    # the alternative token inherits the entropy of the distribution it came from
    assert tree.full_entropy(1)[:4] == [0.2, 1.5, 0.3, 2.0]
    # cost: only unshared suffixes were generated (3 + 3 tokens), vs 10 flattened tokens beyond the trunk
    assert tree.generated_tokens == 6
    assert sum(len(t) for t in flat[1:]) == 10


def test_budget_and_depth_caps():
    be = StubBackend()
    cfg = TreeConfig(top_k=2, max_depth=3, max_branches=3)
    tree = grow_tree(be, [1], trunk(), cfg, SamplingConfig(max_new_tokens=20, top_logprobs=2), seed=0)
    assert len(tree.nodes) - 1 == 3
    assert max(n.depth for n in tree.nodes) <= 3
    # every child's parent is earlier, and its branch point lies inside the parent's sequence
    for i, n in enumerate(tree.nodes[1:], start=1):
        assert 0 <= n.parent < i
        assert n.branch_pos <= len(tree.full_tokens(n.parent))
    assert (
        len(
            grow_tree(
                StubBackend(), [1], trunk(), TreeConfig(max_branches=0), SamplingConfig(top_logprobs=2), seed=0
            ).nodes
        )
        == 1
    )


def test_config_validation():
    with pytest.raises(ValueError, match="top_k"):
        TreeConfig(top_k=0)


def test_real_backend_tree(tiny_model_dir):
    from prmflow.policy.hf_backend import TransformersBackend

    be = TransformersBackend.from_pretrained(str(tiny_model_dir), batch_size=8)
    s = SamplingConfig(max_new_tokens=16, top_logprobs=2, seed=0)
    prompt = be.encode("Question: Mia\nAnswer:\n")
    t = be.generate_ids([prompt], 1, s)[0][0]
    # a random model has high entropy everywhere: threshold 0 makes every token an anchor
    tree = grow_tree(be, prompt, t, TreeConfig(entropy_threshold=0.0, max_branches=4, max_depth=2), s, seed=1)
    assert 1 < len(tree.nodes) <= 5
    for i, (toks, ents) in enumerate(tree.flatten()):
        assert len(toks) == len(ents)
        n = tree.nodes[i]
        if n.parent >= 0:  # the branch really diverges from its parent at branch_pos
            parent = tree.full_tokens(n.parent)
            assert toks[: n.branch_pos] == parent[: n.branch_pos]
            assert toks[n.branch_pos] != parent[n.branch_pos]


def test_keep_prunes_a_branch_and_its_descendants():
    be = StubBackend()

    # reject every branch whose first own token says it branched at the trunk's position 3 (prefix length 6)
    def keep(tree, i):
        return tree.nodes[i].token_ids[0] != 60

    tree = grow_tree(
        be,
        [1, 2],
        trunk(),
        TreeConfig(top_k=2, max_depth=2, max_branches=8),
        SamplingConfig(max_new_tokens=20, top_logprobs=2),
        seed=0,
        keep=keep,
    )
    pruned = [i for i, n in enumerate(tree.nodes) if n.pruned]
    assert pruned == [1]
    assert all(n.parent != 1 for n in tree.nodes)  # never branched from


def test_edu_guided_sample_reaches_n_and_counts_tokens():
    from prmflow.edu.sampling import edu_guided_sample

    class TrunkBackend(StubBackend):
        def generate_ids(self, prompt_ids, n, sampling, seeds=None):
            if len(prompt_ids) == 1 and len(prompt_ids[0]) == 2:  # a trunk request from the bare prompt
                return [[trunk()]]
            return super().generate_ids(prompt_ids, n, sampling, seeds)

    be = TrunkBackend()
    # depth 2: one tree (trunk + 2 branches + 2 sub-branches) already gives 5 candidates;
    # cost = trunk (5 tokens + EOS) + 4 branches x 3 tokens, vs 5 independent samples
    s = edu_guided_sample(be, [1, 2], 5, TreeConfig(top_k=2, max_depth=2), SamplingConfig(max_new_tokens=20), seed=0)
    assert len(s.trajectories) == 5 and not any(s.pruned)
    assert s.trunks == 1 and s.generated_tokens == 6 + 4 * 3
    # depth 1: a tree has at most 3 nodes, so a second trunk grows the remaining 2 (1 branch)
    s = edu_guided_sample(be, [1, 2], 5, TreeConfig(top_k=2, max_depth=1), SamplingConfig(max_new_tokens=20), seed=0)
    assert len(s.trajectories) == 5 and s.trunks == 2
    assert s.generated_tokens == 2 * 6 + 3 * 3
    # everything pruned -> the pruned ones come back, flagged
    s = edu_guided_sample(
        be,
        [1, 2],
        3,
        TreeConfig(top_k=2, max_depth=1),
        SamplingConfig(max_new_tokens=20),
        seed=0,
        keep=lambda tree, i: False,
        max_trunks=2,
    )
    assert s.pruned and all(s.pruned) and s.trunks == 2
