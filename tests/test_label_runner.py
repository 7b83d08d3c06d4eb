"""Dataset-level MC labeling: exact last step, shared-prefix reuse, chunking, resume."""

import random

from prmflow.label.runner import Solution, mc_label_solutions, prefix_key
from prmflow.policy.base import Completion, SamplingConfig


class Stub:
    """Rollout from a prefix answers 7 with probability p(prefix length) = 0.1 * len % 1.0."""

    def __init__(self):
        self.prefixes_seen = []

    def generate_ids(self, prompt_ids, n, sampling, seeds=None):
        out = []
        for p, seed in zip(prompt_ids, seeds):
            self.prefixes_seen.append(tuple(p))
            rng = random.Random(seed)
            prob = (0.15 * len(p)) % 1.0
            out.append(
                [
                    Completion(
                        text=f"The answer is {7 if rng.random() < prob else 8}",
                        token_ids=[1, 2],
                        offsets=[(0, 1), (1, 2)],
                        entropy=[0.0, 0.0],
                    )
                    for _ in range(n)
                ]
            )
        return out


def sol(id, tokens, ends, final_correct=False, finished=True):
    return Solution(
        id=id,
        prompt_ids=[100],
        token_ids=tokens,
        ends=ends,
        prefix_texts=[f"step{k}\n" for k in range(len(ends))],
        answer="7",
        final_correct=final_correct,
        finished=finished,
    )


def test_exact_last_step_and_costs():
    be = Stub()
    [lab] = mc_label_solutions(be, [sol("a", [1, 2, 3, 4], [2, 4], final_correct=True)], 4, SamplingConfig())
    # step 0 rolled out (4 rollouts); step 1 is the whole finished solution: exact label 1.0, 0 rollouts
    assert lab.rollouts_per_step == [4, 0]
    assert lab.soft_labels[1] == 1.0
    assert be.prefixes_seen == [(100, 1, 2)]
    assert lab.cost.rollouts == 4 and lab.cost.generated_tokens == 4 * 3  # 2 tokens + the EOS that stopped each


def test_unfinished_solution_rolls_out_its_last_step():
    be = Stub()
    [lab] = mc_label_solutions(be, [sol("a", [1, 2, 3, 4], [2, 4], finished=False)], 4, SamplingConfig())
    assert lab.rollouts_per_step == [4, 4]


def test_shared_prefixes_are_rolled_out_once_and_reused():
    be = Stub()
    # two tree branches sharing tokens [1, 2] (their first step)
    a = sol("a", [1, 2, 3, 4], [2, 4])
    b = sol("b", [1, 2, 9, 9, 9], [2, 5])
    la, lb = mc_label_solutions(be, [a, b], 4, SamplingConfig())
    assert be.prefixes_seen.count((100, 1, 2)) == 1
    assert la.soft_labels[0] == lb.soft_labels[0]
    assert la.rollouts_per_step[0] == 4 and lb.rollouts_per_step[0] == 0  # paid once, by the first
    assert la.cost.rollouts + lb.cost.rollouts == 4


def test_labels_do_not_depend_on_chunking():
    sols = [sol(str(i), list(range(1, 2 + i)), [1, 1 + i], finished=False) for i in range(1, 7)]
    a = mc_label_solutions(Stub(), sols, 8, SamplingConfig(seed=3), chunk_size=1)
    b = mc_label_solutions(Stub(), sols, 8, SamplingConfig(seed=3), chunk_size=64)
    assert [x.soft_labels for x in a] == [x.soft_labels for x in b]


def test_resume_from_done_pays_nothing_again():
    sols = [sol(str(i), list(range(1, 2 + i)), [1, 1 + i], finished=False) for i in range(1, 5)]
    saved = {}
    full = mc_label_solutions(Stub(), sols, 4, SamplingConfig(), chunk_size=2, on_chunk=saved.update)
    be = Stub()
    again = mc_label_solutions(be, sols, 4, SamplingConfig(), done=saved)
    assert be.prefixes_seen == []  # everything came from the checkpoint
    assert [x.soft_labels for x in again] == [x.soft_labels for x in full]
    # ... including what each solution paid, so the artifact is the same as the first run's
    assert [(x.cost, x.rollouts_per_step) for x in again] == [(x.cost, x.rollouts_per_step) for x in full]


def test_partial_resume_gives_the_uninterrupted_result():
    sols = [sol(str(i), list(range(1, 2 + i)), [1, 1 + i], finished=False) for i in range(1, 7)]
    full = mc_label_solutions(Stub(), sols, 4, SamplingConfig(), chunk_size=3)
    saved = {}

    def crash_after_first_chunk(new):
        saved.update(new)
        raise KeyboardInterrupt

    try:
        mc_label_solutions(Stub(), sols, 4, SamplingConfig(), chunk_size=3, on_chunk=crash_after_first_chunk)
    except KeyboardInterrupt:
        pass
    assert len(saved) == 3
    be = Stub()
    resumed = mc_label_solutions(be, sols, 4, SamplingConfig(), chunk_size=3, done=saved)
    # 7 distinct prefixes (all six share their first step [1]); 3 were paid before the crash
    assert len(be.prefixes_seen) == 7 - 3
    assert [(x.soft_labels, x.cost, x.rollouts_per_step) for x in resumed] == [
        (x.soft_labels, x.cost, x.rollouts_per_step) for x in full
    ]
    assert prefix_key([1, 2]) != prefix_key([2, 1])
