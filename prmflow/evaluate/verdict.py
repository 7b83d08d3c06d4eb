r"""Which evaluation applies to which problems, and the one real-text verdict the evaluate stage uses.

Problem rows without a `source` key, or with `source == "synthetic"`, come from prmflow's own
world: their solutions can be checked step by step (`prmflow.synth.check_solution`), which is
what the synthetic ProcessBench and the answer matching of the synthetic Best-of-N rely on.
Any other source (`"gsm8k"`, `"math"`) is real text: only the final answer can be verified, so
first-error detection needs labeled ProcessBench files and Best-of-N needs a verifier.

    >>> problem_kind([{"id": "a"}, {"id": "b", "source": "synthetic"}]), problem_kind([{"source": "gsm8k"}])
    ('synthetic', 'real')

The real-text verdict sits behind three small functions, so that one place decides it:

- `final_answer(problem, text)`: the final answer a solution states: the text after its last
  `####`, else the last `\boxed{...}`, else the rest of the line after its last
  "The answer is "; for a numeric reference answer (GSM8K), the last number in that text
  ("$1,000$ sheep." -> "1000").
- `answers_equal(a, b)`: verified equivalence of two extracted answers (normalized strings, then
  math-verify), used to group Best-of-N votes.
- `answer_correct(problem, text)`: is the final answer right? Synthetic rows: the exact checker's
  `final_correct` (`prmflow.policy.evaluate.grade`). Real rows: `answers_equal(reference,
  final_answer(problem, text))`.

    >>> row = {"id": "g", "source": "gsm8k", "problem": "?", "answer": "260"}
    >>> [answer_correct(row, t) for t in ("\\boxed{260}", "#### 260", "The answer is $260$.",
    ...                                   "The answer is 260 sheep.", "The answer is 26")]
    [True, True, True, True, False]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prmflow import answers
from prmflow.io import DataError
from prmflow.policy.evaluate import grade

SYNTHETIC = "synthetic"


def is_synthetic(problem: Mapping[str, Any]) -> bool:
    """True for rows of prmflow's synthetic world (no `source`, or `source == "synthetic"`)."""
    return not answers.is_real(problem)


def problem_kind(problems: Sequence[Mapping[str, Any]], where: str = "<problems>") -> str:
    """`synthetic` or `real` for a list of problem rows (empty -> `synthetic`, today's default).

    A list that mixes both is an error: the stage's two evaluations do not apply to one set.
    """
    kinds = {is_synthetic(p) for p in problems}
    if len(kinds) > 1:
        first_real = next(i for i, p in enumerate(problems) if not is_synthetic(p))
        raise DataError(
            where,
            first_real + 1,
            "source",
            "eval problems mix synthetic and real rows "
            f"(first real row: source {problems[first_real].get('source')!r}); use one kind per stage",
        )
    return "real" if kinds == {False} else SYNTHETIC


def final_answer(problem: Mapping[str, Any], text: str) -> str | None:
    r"""The final answer `text` states (`prmflow.answers.extract_final_answer`, cleaned), or None.

    >>> row = {"answer": "1000"}
    >>> final_answer(row, "so 5 * 200 = 1,000\n#### 1,000"), final_answer(row, "The answer is $1,000$ sheep.")
    ('1,000', '1,000 sheep')
    >>> final_answer({"answer": "\\frac{1}{2}"}, "so \\boxed{\\frac{2}{4}}"), final_answer(row, "no idea") is None
    ('\\frac{2}{4}', True)
    """
    found = answers.extract_final_answer(text)
    return answers.clean_answer(found) if found is not None and found.strip() else None


def answers_equal(a: str, b: str) -> bool:
    r"""Are two extracted answers the same value? (`prmflow.answers.answers_match`: numbers
    exactly, as fractions; LaTeX and the rest by math-verify.)

    >>> answers_equal("18", "18.0"), answers_equal("\\frac{1}{2}", "0.5"), answers_equal("18", "20")
    (True, True, False)
    """
    return answers.answers_match(a, b)


def answer_correct(problem: Mapping[str, Any], text: str) -> bool:
    """Is the final answer of solution `text` right for `problem`? `prmflow.policy.evaluate.grade`
    decides for both kinds: the exact checker for synthetic rows, `prmflow.answers` for real ones."""
    return grade(problem, text).final_correct


def verified_candidates(
    problem: Mapping[str, Any], texts: Sequence[str], step_scores: Sequence[Sequence[float]]
) -> list[dict[str, Any]]:
    r"""Best-of-N candidates of one real problem in `bon_accuracy`'s verified mode: each text's
    `answer` (`final_answer`), `correct` (`answer_correct`), `answer_class` (`answer_classes`
    over `answers_equal`) and its `step_scores`.

    >>> row = {"id": "g", "source": "gsm8k", "problem": "?", "answer": "18"}
    >>> c = verified_candidates(row, ["#### 20", "The answer is $18$.", "\\boxed{18.0}"], [[0.9], [0.2], [0.4]])
    >>> [(x["answer"], x["correct"], x["answer_class"]) for x in c]
    [('20', False, 0), ('18', True, 1), ('18.0', True, 1)]
    """
    from prmflow.evaluate.bon import answer_classes

    if len(texts) != len(step_scores):
        raise ValueError(f"{len(texts)} texts but {len(step_scores)} step score lists")
    answers = [final_answer(problem, t) for t in texts]
    classes = answer_classes(answers, answers_equal)
    return [
        {"text": t, "answer": a, "correct": answer_correct(problem, t), "answer_class": k, "step_scores": list(s)}
        for t, a, k, s in zip(texts, answers, classes, step_scores, strict=True)
    ]
