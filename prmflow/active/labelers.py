r"""Who labels the solutions ActPRM selects: one interface, several labelers with their cost.

ActPRM (arXiv 2504.10559) sends each uncertain solution to a labeler that returns the index of
its first wrong step; every labeler here answers

    labeler.label(row, steps) -> LabelResult(first_error, labels)

for a problem `row` ({"id", "problem", "answer", "solution"}) and a solution given as `steps`
(strings that concatenate to the completion text). `first_error` is the index of the first
wrong step (-1 if none) and `labels` the per-step labels (True = the prefix up to this step has
no error). `LabelResult(None, None)` means *unlabeled*: the labeler could not decide and nothing
is guessed; such solutions are paid for but never trained on. What each labeler consumed adds
up in `labeler.cost` (a `LabelerCost`).

- `OracleLabeler`: the exact checker of the synthetic world (free and perfect). The steps are
  joined into the completion, `check_solution` finds the character where the first error
  begins, and each step gets the prefix-rule label (`prmflow.label.quality.gold_step_labels`):

      labels_k = e_k <= first_error_char,   e_k = len(steps_0) + ... + len(steps_k)

- `MCLabeler`: Math-Shepherd Monte-Carlo rollouts (`prmflow.label.runner.mc_label_solutions`);
  labels are the hard labels (any rollout from the prefix reaches the answer), first_error the
  first False one.
- `ConsensusLabeler`: two labelers, keeping a solution only when both give the same first error
  (consensus filtering, Qwen "The Lessons of Developing Process Reward Models", arXiv
  2501.07301); otherwise unlabeled. Cost is the sum of both.
- `prmflow.active.judge.JudgeLabeler`: an LLM critic over an OpenAI-compatible endpoint.

Where a labeler only gives a first error, labels follow the prefix rule (`prefix_labels`): every
step before it is right, it and every step after it are wrong.

    >>> prefix_labels(1, 3), prefix_labels(-1, 2)
    ([True, False, False], [True, True])
    >>> row = {"id": "p", "answer": "37", "solution": "23 + 14 = 37\nThe answer is 37",
    ...        "problem": "Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?"}
    >>> OracleLabeler().label(row, ["23 + 14 = 3", "8\nThe answer is 38"])   # error at the "8"
    LabelResult(first_error=1, labels=[True, False])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from prmflow.answers import extract_final_answer, is_real
from prmflow.label.mc import answer_verifier, final_answer_text, hard_label
from prmflow.label.quality import first_error_of, gold_step_labels
from prmflow.label.runner import Solution, mc_label_solutions
from prmflow.policy.base import Backend, SamplingConfig
from prmflow.synth import check_solution, format_prompt, reference_values


@dataclass(frozen=True)
class LabelResult:
    """One labeler's answer for one solution; both None = unlabeled."""

    first_error: int | None
    """index of the first wrong step, -1 if every step is right, None if unlabeled"""
    labels: list[bool] | None
    """per-step labels (True = no error up to and including this step), None if unlabeled"""


UNLABELED = LabelResult(None, None)


@dataclass
class LabelerCost:
    """What a labeler consumed; fields that do not apply stay 0.

    >>> (LabelerCost(calls=2, rollouts=8) + LabelerCost(calls=1, requests=3) - LabelerCost(calls=1)).to_dict()["calls"]
    2
    """

    calls: int = 0
    """label() calls (solutions sent)"""
    rollouts: int = 0
    """MC continuations sampled"""
    generated_tokens: int = 0
    """tokens sampled by MC rollouts"""
    forward_passes: int = 0
    """policy forward calls for MC rollouts"""
    prefill_tokens: int = 0
    """prompt tokens encoded for MC rollouts"""
    requests: int = 0
    """HTTP requests to a judge (retries included)"""
    retries: int = 0
    """judge requests that were repeats (after an error or an unparseable reply)"""
    unparseable: int = 0
    """judge replies with no valid conclusion"""
    prompt_tokens: int = 0
    """judge prompt tokens, as reported by the endpoint's `usage`"""
    completion_tokens: int = 0
    """judge completion tokens, as reported by the endpoint's `usage`"""

    def __add__(self, other: LabelerCost) -> LabelerCost:
        return LabelerCost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: LabelerCost) -> LabelerCost:
        return LabelerCost(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Labeler(Protocol):
    name: str

    @property
    def cost(self) -> LabelerCost: ...

    def label(self, row: Mapping[str, Any], steps: Sequence[str]) -> LabelResult: ...


def prefix_labels(first_error: int, n_steps: int) -> list[bool]:
    """Labels from a first error by the prefix rule: step k is right iff first_error == -1 or k < first_error."""
    if not -1 <= first_error < n_steps:
        raise ValueError(f"first_error {first_error} out of range for {n_steps} steps")
    return [first_error == -1 or k < first_error for k in range(n_steps)]


def step_char_spans(steps: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) of each step in "".join(steps), from cumulative lengths."""
    spans, pos = [], 0
    for s in steps:
        spans.append((pos, pos + len(s)))
        pos += len(s)
    return spans


# --------------------------------------------------------------------------- oracle


class OracleLabeler:
    """Exact labels from `check_solution` (synthetic world, integer answers). Free and perfect.

    A non-integer answer, or a real problem row (`prmflow.answers.is_real`), has no exact checker: unlabeled.
    """

    name = "oracle"

    def __init__(self) -> None:
        self.cost = LabelerCost()

    def label(self, row: Mapping[str, Any], steps: Sequence[str]) -> LabelResult:
        self.cost.calls += 1
        if is_real(row):  # real text: the synthetic checker does not apply
            return UNLABELED
        text = "".join(steps)
        reference = reference_values(row.get("solution") or "") or None
        try:
            res = check_solution(row["problem"], text, answer=row["answer"], reference=reference)
        except ValueError:  # the answer is not an integer
            return UNLABELED
        labels = gold_step_labels(step_char_spans(steps), res.first_error_char)
        return LabelResult(first_error_of(labels), labels)


# --------------------------------------------------------------------------- Monte-Carlo


class MCLabeler:
    """Hard MC labels: each step prefix is rolled out `num_rollouts` times by `backend`.

    The prompt is `format_prompt(problem)` encoded by `backend.encode`; each step is encoded on its
    own by `encode_text` (default: the backend's tokenizer without special tokens) so that step
    ends fall on token boundaries. A solution that states a final answer is "finished" and its
    last step is labeled exactly by that answer, with no rollouts (`exact_last`).
    """

    name = "mc"

    def __init__(
        self,
        backend: Backend,
        num_rollouts: int,
        sampling: SamplingConfig,
        *,
        encode_text: Callable[[str], list[int]] | None = None,
        chunk_size: int = 64,
        exact_last: bool = True,
    ):
        self.backend, self.num_rollouts, self.sampling = backend, num_rollouts, sampling
        self.encode_text = encode_text or (lambda s: list(backend.tokenizer(s, add_special_tokens=False)["input_ids"]))
        self.chunk_size, self.exact_last = chunk_size, exact_last
        self.cost = LabelerCost()

    def label(self, row: Mapping[str, Any], steps: Sequence[str]) -> LabelResult:
        self.cost.calls += 1
        if not steps:
            return UNLABELED
        text = "".join(steps)
        token_ids: list[int] = []
        ends = []
        for s in steps:
            token_ids += self.encode_text(s)
            ends.append(len(token_ids))
        real = is_real(row)
        sol = Solution(
            id=str(row["id"]),
            prompt_ids=list(self.backend.encode(format_prompt(row["problem"]))),
            token_ids=token_ids,
            ends=ends,
            prefix_texts=[text[:e] for _, e in step_char_spans(steps)],
            answer=str(row["answer"]),
            final_correct=answer_verifier(str(row["answer"]), [text], real=real)(0, ""),
            finished=(extract_final_answer(text) if real else final_answer_text(text)) is not None,
        )
        out = mc_label_solutions(
            self.backend,
            [sol],
            self.num_rollouts,
            self.sampling,
            chunk_size=self.chunk_size,
            exact_last=self.exact_last,
        )[0]
        for k in ("rollouts", "generated_tokens", "forward_passes", "prefill_tokens"):
            setattr(self.cost, k, getattr(self.cost, k) + getattr(out.cost, k))
        labels = [hard_label(x) for x in out.soft_labels]
        return LabelResult(first_error_of(labels), labels)


# --------------------------------------------------------------------------- consensus


class ConsensusLabeler:
    """Keep a solution only where both labelers give the same first error (arXiv 2501.07301).

    The second labeler is not asked when the first returns unlabeled. Labels of a kept solution
    follow the prefix rule from the agreed first error.
    """

    def __init__(self, first: Labeler, second: Labeler):
        self.first, self.second = first, second
        self.name = f"consensus({first.name},{second.name})"

    @property
    def cost(self) -> LabelerCost:
        return self.first.cost + self.second.cost

    def close(self) -> None:
        for labeler in (self.first, self.second):
            if hasattr(labeler, "close"):
                labeler.close()

    def label(self, row: Mapping[str, Any], steps: Sequence[str]) -> LabelResult:
        a = self.first.label(row, steps)
        if a.first_error is None:
            return UNLABELED
        b = self.second.label(row, steps)
        if b.first_error is None or b.first_error != a.first_error:
            return UNLABELED
        return LabelResult(a.first_error, prefix_labels(a.first_error, len(steps)))
