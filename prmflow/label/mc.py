r"""Monte-Carlo step labels: Math-Shepherd's soft and hard estimators (arXiv 2312.08935).

The label of step k of a solution comes from the step prefix s_{1:k} (prompt + completion
tokens up to the end of step k): the policy completes it N times (`num_rollouts`), giving final
answers a_1..a_N, each compared with the gold answer a*:

    soft_label(s_k) = (1/N) * sum_j 1[a_j = a*]                  (Math-Shepherd, soft estimation)
    hard_label(s_k) = 1 if any a_j = a* else 0                   (Math-Shepherd, hard estimation)

so hard_label = soft_label > 0. A step is "good" when the policy can still reach the answer
from it. If a prefix reaches the answer with probability p, then the hard label is a false
negative with probability (1 - p)^N (p = 0.2, N = 4: 0.8^4 = 0.4096).

    >>> est = StepEstimate(n_correct=1, num_rollouts=4)
    >>> est.soft_label, est.hard_label
    (0.25, True)
    >>> StepEstimate(0, 4).hard_label
    False

Query cost. Each prefix costs N rollouts; `LabelCost` adds up what they consumed, which is what
EDU-PRM (arXiv 2503.22233) sets out to cut:

    rollouts          = len(prefixes) * N
    generated_tokens  = sum over rollouts of len(token_ids) + 1 if it stopped on EOS
                        (the EOS token was generated too, `Completion.token_ids` drops it)
    forward_passes    = model calls, from the backend's counter (0 if it has none)
    prefill_tokens    = prompt tokens encoded, from the backend's `prompt_tokens_encoded`
                        (0 if it has none); TransformersBackend encodes a prefix once for all
                        N of its rollouts, so this is sum(len(prefix)), not N times that.

Correctness of a rollout is decided by a `verify(prefix_index, rollout_text)` callback. The
final answer may sit in the prefix ("...The answer is 3" + rollout "7" says 37), so
`answer_verifier` reads the answer from prefix text + rollout text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from prmflow.answers import verify_answer
from prmflow.policy.base import Backend, SamplingConfig
from prmflow.synth.format import ANSWER_PREFIX, extract_answer
from prmflow.synth.sources import last_boxed

Verify = Callable[[int, str], bool]
"""verify(prefix_index, rollout_text) -> is this rollout's final answer right?"""


@dataclass
class LabelCost:
    """What labeling consumed; add them up per solution and per dataset.

    >>> c = LabelCost(rollouts=4, generated_tokens=30) + LabelCost(rollouts=2, forward_passes=5)
    >>> c.to_dict()
    {'rollouts': 6, 'generated_tokens': 30, 'forward_passes': 5, 'prefill_tokens': 0}
    """

    rollouts: int = 0
    """number of continuations sampled"""
    generated_tokens: int = 0
    """tokens sampled across all rollouts, EOS included"""
    forward_passes: int = 0
    """model forward calls (prefill and decode steps; a batch counts once)"""
    prefill_tokens: int = 0
    """prompt tokens encoded (a prefix shared by N rollouts counts once)"""

    def __add__(self, other: LabelCost) -> LabelCost:
        if not isinstance(other, LabelCost):
            return NotImplemented
        return LabelCost(
            rollouts=self.rollouts + other.rollouts,
            generated_tokens=self.generated_tokens + other.generated_tokens,
            forward_passes=self.forward_passes + other.forward_passes,
            prefill_tokens=self.prefill_tokens + other.prefill_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def hard_label(soft_label: float) -> bool:
    """Math-Shepherd hard estimation: a step is good iff ANY rollout reached the answer.

    >>> hard_label(0.0), hard_label(0.125), hard_label(1.0)
    (False, True, True)
    """
    if not 0.0 <= soft_label <= 1.0:
        raise ValueError(f"soft_label must be in [0, 1], got {soft_label}")
    return soft_label > 0.0


@dataclass(frozen=True)
class StepEstimate:
    """The outcome of num_rollouts rollouts from one step prefix."""

    n_correct: int
    """rollouts whose final answer was right"""
    num_rollouts: int
    """N, rollouts sampled from the prefix"""

    def __post_init__(self) -> None:
        if self.num_rollouts < 1:
            raise ValueError(f"num_rollouts must be >= 1, got {self.num_rollouts}")
        if not 0 <= self.n_correct <= self.num_rollouts:
            raise ValueError(f"n_correct must be in [0, {self.num_rollouts}], got {self.n_correct}")

    @property
    def soft_label(self) -> float:
        return self.n_correct / self.num_rollouts

    @property
    def hard_label(self) -> bool:
        return hard_label(self.soft_label)


def mc_estimates(
    backend: Backend,
    prefixes: Sequence[Sequence[int]],
    verify: Verify,
    num_rollouts: int,
    sampling: SamplingConfig,
    seeds: Sequence[int] | None = None,
) -> tuple[list[StepEstimate], LabelCost]:
    """Roll out every prefix num_rollouts times in ONE batched backend call and count successes.

    `seeds[i]` seeds prefix i's rollouts (the backend's default is sampling.seed + i), so the
    rollouts of a prefix do not depend on which other prefixes share the call.
    """
    if num_rollouts < 1:
        raise ValueError(f"num_rollouts must be >= 1, got {num_rollouts}")
    if seeds is not None and len(seeds) != len(prefixes):
        raise ValueError(f"got {len(seeds)} seeds for {len(prefixes)} prefixes")
    if len(prefixes) == 0:
        return [], LabelCost()

    before = _counters(backend)
    completions = backend.generate_ids(prefixes, num_rollouts, sampling, seeds=seeds)
    after = _counters(backend)
    if len(completions) != len(prefixes) or any(len(row) != num_rollouts for row in completions):
        raise ValueError(
            f"backend returned {[len(r) for r in completions]} completions, "
            f"expected {num_rollouts} for each of {len(prefixes)} prefixes"
        )

    estimates = []
    generated = 0
    for i, rollouts in enumerate(completions):
        estimates.append(StepEstimate(sum(bool(verify(i, c.text)) for c in rollouts), num_rollouts))
        generated += sum(len(c.token_ids) + (c.finish_reason == "stop") for c in rollouts)
    cost = LabelCost(
        rollouts=len(prefixes) * num_rollouts,
        generated_tokens=generated,
        forward_passes=after[0] - before[0],
        prefill_tokens=after[1] - before[1],
    )
    return estimates, cost


def _counters(backend: object) -> tuple[int, int]:
    """(forward_passes, prompt_tokens_encoded) if the backend counts them, else zeros."""
    passes = getattr(backend, "forward_passes", None)
    prefill = getattr(backend, "prompt_tokens_encoded", None)
    return (passes or 0, prefill or 0)


# --------------------------------------------------------------------------- answer checking

_INTEGER = re.compile(r"-?[0-9]+")
_SPACES = re.compile(r"\s+")


def normalize_answer(answer: str) -> str:
    r"""Light normalization for comparing non-integer answers as strings.

    In order: strip surrounding whitespace, remove `$`, remove all whitespace, remove commas
    (thousands separators), remove trailing periods. Nothing else: `0.5` and `\frac{1}{2}`
    stay different (a math-verify based checker can come later).

    >>> normalize_answer(" $1,000.5$. ")
    '1000.5'
    >>> normalize_answer(r"\frac{1}{2}") == normalize_answer(r"$\frac {1}{2}$")
    True
    """
    s = answer.strip().replace("$", "")
    s = _SPACES.sub("", s).replace(",", "")
    return s.rstrip(".")


def final_answer_text(text: str) -> str | None:
    r"""The raw final answer of a solution text, for non-integer answers.

    The rest of the line after the LAST "The answer is " (the content of a `\boxed{}` on it,
    if any); without that prefix, the content of the last `\boxed{...}`; else None.

    >>> final_answer_text("so x = 1/2\nThe answer is $\\frac{1}{2}$.")
    '$\\frac{1}{2}$.'
    >>> final_answer_text("The answer is $\\boxed{3/4}$")
    '3/4'
    >>> final_answer_text("hence \\boxed{0.25} is it")
    '0.25'
    """
    i = text.rfind(ANSWER_PREFIX)
    if i < 0:
        return last_boxed(text)
    tail = text[i + len(ANSWER_PREFIX) :].splitlines()
    line = tail[0] if tail else ""
    boxed = last_boxed(line)
    return boxed if boxed is not None else line


def math_equal(gold: str, pred: str) -> bool:
    r"""Are two final answers the same value? Equal after `normalize_answer`, or equivalent
    under HF's math-verify (LaTeX/sympy: \frac{1}{2} = 0.5 = \frac{2}{4}; x^2+1 = 1+x^2).

    math-verify bounds its own run time with signals, which only work on the main thread; in
    worker threads (Prefect task runners) its timeouts are off.

    >>> math_equal(r"\frac{1}{2}", "0.5"), math_equal("3", "3.0"), math_equal(r"\sqrt{2}", "1.41")
    (True, True, False)
    """
    if normalize_answer(gold) == normalize_answer(pred):
        return True
    import threading

    from math_verify import parse, verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    g = parse(f"${gold.strip().strip('$')}$", parsing_timeout=timeout)
    p = parse(f"${pred.strip().strip('$')}$", parsing_timeout=timeout)
    return bool(g and p and verify(g, p, timeout_seconds=timeout))


def answer_verifier(answer: str, prefix_texts: Sequence[str], real: bool = False) -> Verify:
    r"""verify(i, rollout_text): is the final answer of prefix_texts[i] + rollout_text right?

    `real=True` (real problem rows, `prmflow.answers.is_real(row)`): the robust extraction and
    verdict of `prmflow.answers.verify_answer` (\boxed{}, "####", "The answer is $260$.",
    "260 sheep", math-verify), the same one `prmflow.policy.evaluate.grade` uses.

    `real=False` (the default, the synthetic world), unchanged:
    Integer answers (after `normalize_answer`, e.g. "1,000" -> 1000) are compared numerically
    with `extract_answer` (the integer after the last "The answer is "), which is exactly
    `check_solution`'s `final_correct`. Other answers compare `final_answer_text` with the
    answer by `math_equal` (normalized strings, then math-verify). No answer in the text means wrong.
    Pass the completion text of the prefix (without the prompt).

    >>> verify = answer_verifier("37", ["23 + 14 = 37\n", "23 + 14 = 37\nThe answer is 3"])
    >>> verify(0, "The answer is 037."), verify(1, "7"), verify(1, ""), verify(0, "so 37")
    (True, True, False, False)
    >>> answer_verifier(r"\frac{1}{2}", [""])(0, r"The answer is $\frac{1}{2}$.")
    True
    >>> text = "The answer is 5 apples"   # not an answer in the synthetic world; real text: 5
    >>> answer_verifier("5", [""])(0, text), answer_verifier("5", [""], real=True)(0, text)
    (False, True)
    """
    target = normalize_answer(answer)
    if not target:
        raise ValueError(f"answer is empty after normalization: {answer!r}")
    texts = list(prefix_texts)

    if real:

        def verify(i: int, rollout_text: str) -> bool:
            return verify_answer(answer, texts[i] + rollout_text)

        return verify

    if _INTEGER.fullmatch(target):
        value = int(target)

        def verify(i: int, rollout_text: str) -> bool:
            found = extract_answer(texts[i] + rollout_text)
            return found is not None and int(found) == value
    else:

        def verify(i: int, rollout_text: str) -> bool:
            found = final_answer_text(texts[i] + rollout_text)
            return found is not None and math_equal(answer, found)

    return verify
