"""Monte-Carlo step labels (Math-Shepherd) and OmegaPRM's binary search, on a policy stub whose
success probability per prefix is known, and once on the real transformers backend."""

import doctest
import math
import random

import pytest

import prmflow.label.mc
import prmflow.label.omega
from prmflow.label import (
    LabelCost,
    StepEstimate,
    answer_verifier,
    binary_search_first_error,
    hard_label,
    mc_estimates,
    normalize_answer,
    omega_labels,
)
from prmflow.policy.base import Completion, SamplingConfig
from prmflow.synth import extract_answer

SAMPLING = SamplingConfig(max_new_tokens=8, seed=0)


def completion(text, finish_reason="stop"):
    ids = [ord(ch) for ch in text]  # one token per character
    return Completion(
        text=text,
        token_ids=ids,
        offsets=[(i, i + 1) for i in range(len(ids))],
        entropy=[0.0] * len(ids),
        finish_reason=finish_reason,
    )


class CoinPolicy:
    """Answers 'The answer is 7' with probability p(len(prefix)), else 'The answer is 8'.

    Prefix i's rollouts draw from random.Random(seeds[i]) (default sampling.seed + i), like the
    real backend: they do not depend on the other prefixes in the call.
    """

    def __init__(self, p_by_len):
        self.p_by_len = p_by_len
        self.calls = 0

    def generate_ids(self, prompt_ids, n, sampling, seeds=None):
        self.calls += 1
        if seeds is None:
            seeds = [sampling.seed + i for i in range(len(prompt_ids))]
        out = []
        for ids, seed in zip(prompt_ids, seeds, strict=True):
            rng, p = random.Random(seed), self.p_by_len[len(ids)]
            out.append([completion("The answer is 7" if rng.random() < p else "The answer is 8") for _ in range(n)])
        return out


def says_7(i, text):
    return extract_answer(text) == "7"


@pytest.mark.parametrize("module", [prmflow.label.mc, prmflow.label.omega])
def test_docstring_examples(module):
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


# --------------------------------------------------------------------------- estimators


def test_hard_label_is_any_rollout_correct():
    assert [hard_label(s) for s in (0.0, 0.25, 1.0)] == [False, True, True]
    assert StepEstimate(3, 8).soft_label == 0.375 and StepEstimate(3, 8).hard_label
    assert StepEstimate(0, 8).soft_label == 0.0 and not StepEstimate(0, 8).hard_label
    with pytest.raises(ValueError):
        hard_label(1.5)
    with pytest.raises(ValueError):
        StepEstimate(5, 4)
    with pytest.raises(ValueError):
        StepEstimate(0, 0)


def test_soft_label_mean_matches_p():
    # 400 prefixes per length, p known per length. The mean soft label over one length is
    # Binomial(400 * 8, p) / 3200: std sqrt(p(1-p)/3200) <= sqrt(0.25/3200) = 0.0088, so 4 sigma
    # is 0.035. p = 0 and p = 1 are exact.
    p_by_len = {1: 0.0, 2: 0.2, 3: 0.5, 4: 0.9, 5: 1.0}
    prefixes = [[0] * length for length in p_by_len for _ in range(400)]
    policy = CoinPolicy(p_by_len)
    estimates, cost = mc_estimates(
        policy, prefixes, says_7, num_rollouts=8, sampling=SAMPLING, seeds=range(len(prefixes))
    )
    assert policy.calls == 1  # one batched call
    assert cost.rollouts == 2000 * 8
    for length, p in p_by_len.items():
        soft = [e.soft_label for prefix, e in zip(prefixes, estimates) if len(prefix) == length]
        assert abs(sum(soft) / len(soft) - p) <= 4 * math.sqrt(p * (1 - p) / (len(soft) * 8)) + 1e-12


def test_hard_label_false_negative_rate_is_one_minus_p_to_the_n():
    # p = 0.2, N = 4: P(no rollout right) = 0.8^4 = 0.4096. Over 2000 prefixes the observed rate
    # has std sqrt(0.4096 * 0.5904 / 2000) = 0.0110; 4 sigma = 0.044.
    prefixes = [[1, 2]] * 2000
    estimates, _ = mc_estimates(CoinPolicy({2: 0.2}), prefixes, says_7, 4, SAMPLING, seeds=range(2000))
    rate = sum(not e.hard_label for e in estimates) / len(estimates)
    assert abs(rate - 0.4096) <= 0.044


def test_cost_accounting_exact():
    class Scripted:
        """Fixed completions; counters that start non-zero (only the deltas count)."""

        forward_passes, prompt_tokens_encoded = 100, 50

        def generate_ids(self, prompt_ids, n, sampling, seeds=None):
            self.forward_passes += 5
            self.prompt_tokens_encoded += sum(len(p) for p in prompt_ids)
            return [[completion("abc"), completion("abcd", "length")], [completion(""), completion("ab")]]

    seen = []

    def verify(i, text):
        seen.append((i, text))
        return text.startswith("ab")

    estimates, cost = mc_estimates(Scripted(), [[5, 6, 7], [8, 9]], verify, 2, SAMPLING)
    assert seen == [(0, "abc"), (0, "abcd"), (1, ""), (1, "ab")]
    assert [(e.n_correct, e.num_rollouts) for e in estimates] == [(2, 2), (1, 2)]
    # tokens: (3 + EOS) + 4 (budget hit, no EOS) + (0 + EOS) + (2 + EOS) = 12
    assert cost == LabelCost(rollouts=4, generated_tokens=12, forward_passes=5, prefill_tokens=5)

    # a backend without counters costs rollouts and tokens only
    class Bare:
        def generate_ids(self, prompt_ids, n, sampling, seeds=None):
            return [[completion("x")] * n for _ in prompt_ids]

    _, cost = mc_estimates(Bare(), [[1]], verify, 3, SAMPLING)
    assert cost.to_dict() == {"rollouts": 3, "generated_tokens": 6, "forward_passes": 0, "prefill_tokens": 0}


def test_label_cost_adds_up():
    total = LabelCost()
    total += LabelCost(4, 12, 5, 5)
    total += LabelCost(3, 6, 0, 0)
    assert total == LabelCost(rollouts=7, generated_tokens=18, forward_passes=5, prefill_tokens=5)


def test_mc_estimates_rejects_bad_arguments():
    policy = CoinPolicy({1: 0.5})
    with pytest.raises(ValueError, match="num_rollouts"):
        mc_estimates(policy, [[1]], says_7, 0, SAMPLING)
    with pytest.raises(ValueError, match="seeds"):
        mc_estimates(policy, [[1]], says_7, 2, SAMPLING, seeds=[1, 2])
    assert mc_estimates(policy, [], says_7, 2, SAMPLING) == ([], LabelCost())
    assert policy.calls == 0


# --------------------------------------------------------------------------- answer checking


def test_answer_verifier_integer_answers():
    prefix_texts = ["23 + 14 = 37\n", "23 + 14 = 37\nThe answer is 3", "The answer is 37"]
    verify = answer_verifier("37", prefix_texts)
    assert verify(0, "The answer is 37")
    assert verify(0, "The answer is 037.")  # numerically equal
    assert verify(1, "7")  # the answer line starts in the prefix: "...is 3" + "7"
    assert not verify(1, "")  # "The answer is 3"
    assert verify(2, "")  # the prefix already concluded and the rollout stopped at once
    assert not verify(0, "so it is 37")  # never emits an answer -> wrong
    assert not verify(0, "The answer is 37 marbles")  # extract_answer accepts nothing after it
    assert answer_verifier("1,000", [""])(0, "The answer is 1000")


def test_answer_verifier_non_integer_answers():
    verify = answer_verifier(r"\frac{1}{2}", [""])
    assert verify(0, r"The answer is $\frac{1}{2}$.")
    assert verify(0, r"so \boxed{\frac{1}{2}}")
    assert verify(0, "The answer is 0.5")  # math-verify: 1/2 == 0.5
    assert not verify(0, "The answer is 0.25")
    assert not verify(0, "I give up")
    assert answer_verifier("2.5", [""])(0, "The answer is $2.5$.")
    assert normalize_answer(" $1,234.5$. ") == "1234.5"
    with pytest.raises(ValueError, match="empty"):
        answer_verifier(" $ ", [""])


# --------------------------------------------------------------------------- binary search


@pytest.mark.parametrize("n", range(1, 10))
def test_binary_search_finds_every_planted_error(n):
    budget = math.ceil(math.log2(n)) + 1
    for k in range(n + 1):  # k == n: no error
        probed = []

        def mc_at(i, probed=probed, k=k):
            probed.append(i)
            return 1.0 if i < k else 0.0

        first_error, probes = binary_search_first_error(mc_at, n)
        assert first_error == (k if k < n else -1)
        assert probes == probed and len(set(probes)) == len(probes)
        assert all(0 <= i < n for i in probes) and len(probes) <= budget


def test_binary_search_no_steps():
    assert binary_search_first_error(lambda i: 0.0, 0) == (-1, [])


def test_omega_labels_plants_error_and_saves_rollouts():
    # 8 steps; step prefixes have lengths 1..8; prefixes through step 4 always reach the answer,
    # from step 5 on never: first_error = 5. Probes 4 (ok), 6 (0), 5 (0) as in the docstring.
    p_by_len = {length: 1.0 if length <= 5 else 0.0 for length in range(1, 9)}
    prefixes = [[0] * length for length in range(1, 9)]
    out = omega_labels(CoinPolicy(p_by_len), prefixes, False, says_7, num_rollouts=4, sampling=SAMPLING)
    assert out.first_error == 5 and out.probes == [4, 6, 5]
    assert out.hard_labels == [True] * 5 + [False] * 3
    assert out.soft_labels == [1.0] * 5 + [0.0] * 3
    assert out.hard_labels == [hard_label(s) for s in out.soft_labels]
    assert out.cost.rollouts == 3 * 4 < len(prefixes) * 4  # 12 rollouts instead of 32


def test_omega_probes_equal_per_step_labels():
    # mixed p: each probe must give exactly the estimate that labeling every step in one call gives
    p_by_len = {1: 0.9, 2: 0.7, 3: 0.6, 4: 0.5, 5: 0.4, 6: 0.0}
    prefixes = [[0] * length for length in range(1, 7)]
    every, every_cost = mc_estimates(CoinPolicy(p_by_len), prefixes, says_7, 4, SAMPLING)
    out = omega_labels(CoinPolicy(p_by_len), prefixes, False, says_7, 4, SAMPLING)
    for k, est in out.estimates.items():
        assert est == every[k] and out.soft_labels[k] == every[k].soft_label
    assert out.cost.rollouts < every_cost.rollouts


def test_omega_correct_solution_needs_no_rollouts():
    policy = CoinPolicy({})  # would KeyError if called
    out = omega_labels(policy, [[1], [1, 2], [1, 2, 3]], True, says_7, 4, SAMPLING)
    assert policy.calls == 0 and out.cost == LabelCost() and out.probes == []
    assert out.hard_labels == [True] * 3 and out.soft_labels == [1.0] * 3 and out.first_error == -1


# --------------------------------------------------------------------------- real backend


def test_mc_estimates_on_transformers_backend(tiny_model_dir):
    from prmflow.policy.hf_backend import TransformersBackend

    class Recording:
        """Keeps the completions; the backend's counters show through."""

        def __init__(self, inner):
            self.inner, self.out = inner, None

        def generate_ids(self, *args, **kwargs):
            self.out = self.inner.generate_ids(*args, **kwargs)
            return self.out

        def __getattr__(self, name):
            return getattr(self.inner, name)

    backend = TransformersBackend.from_pretrained(str(tiny_model_dir), batch_size=8)
    short = backend.encode("Question: Leo has 6 cards.\nAnswer:\n")
    long = backend.encode("Question: Mia has 23 marbles. She finds 14 more marbles.\nAnswer:\n23 + 14 = 37\n")
    recording = Recording(backend)
    before = backend.generated_tokens

    estimates, cost = mc_estimates(
        recording, [short, long], answer_verifier("37", ["", ""]), 4, SamplingConfig(max_new_tokens=6, seed=1)
    )

    assert [e.num_rollouts for e in estimates] == [4, 4] and cost.rollouts == 8
    # each prefix is encoded once for its 4 rollouts, not 4 times
    assert cost.prefill_tokens == len(short) + len(long)
    # both prefixes fit one batch: 1 prefill + at most 6 decode passes
    assert 1 < cost.forward_passes <= 1 + 6
    rollouts = [c for row in recording.out for c in row]
    assert backend.generated_tokens - before == sum(len(c.token_ids) for c in rollouts)
    # ours also counts each EOS, which the backend's counter leaves out
    n_eos = sum(c.finish_reason == "stop" for c in rollouts)
    assert cost.generated_tokens == backend.generated_tokens - before + n_eos


def test_math_equal_for_non_integer_answers():
    from prmflow.label.mc import answer_verifier, math_equal

    assert math_equal(r"\frac{1}{2}", "0.5") and math_equal(r"\frac{1}{2}", r"\frac{2}{4}")
    assert math_equal("x^2+1", "1+x^2")
    assert not math_equal(r"\sqrt{2}", "1.41") and not math_equal("3", "4")
    verify = answer_verifier(r"\frac{3}{4}", ["so the fraction is\n"])
    assert verify(0, "The answer is 0.75") and not verify(0, "The answer is 0.7") and not verify(0, "no answer")


def test_math_equal_works_off_the_main_thread():
    # Prefect runs tasks in worker threads, where math-verify's signal timeouts cannot work
    import threading

    from prmflow.label.mc import math_equal

    out = []
    t = threading.Thread(target=lambda: out.append(math_equal(r"\frac{1}{2}", "0.5")))
    t.start()
    t.join()
    assert out == [True]
