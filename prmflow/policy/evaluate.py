"""How good is a policy? Solve rate and where its first errors fall, by the exact checker.

The embedded policy must be imperfect on purpose and measurably so: its held-out solve rate
(default target 30-80%) and first-error histogram are what the rest of the pipeline studies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prmflow.label.mc import final_answer_text, math_equal
from prmflow.synth import check_solution, reference_values, split_steps


@dataclass(frozen=True)
class Graded:
    """One completion graded against its problem."""

    first_error: int
    """index of the first wrong step (-1 if none; len(steps) if the answer line is missing)"""
    final_correct: bool
    """the final answer matches the problem's answer"""
    n_steps: int
    """lines in the completion"""
    first_error_char: int = -1
    """character offset in the completion where the first error begins (-1 if none); a step
    prefix ending at or before it is truly correct (prmflow.label.quality.gold_step_labels)"""


def grade(row: Mapping[str, Any], text: str) -> Graded:
    """Check one completion `text` for problem `row` ({"problem", "answer", "solution"?}).

    Integer answers (the synthetic world, most of GSM8K) get the exact step checker. Other
    answers (MATH, decimal GSM8K) get final-answer matching only (`math_equal`: normalized
    strings, then math-verify), with first_error = -1 when
    right and len(steps) when wrong (no step-level truth for them).
    """
    try:
        ref = reference_values(row.get("solution") or "") or None
        res = check_solution(row["problem"], text, answer=row["answer"], reference=ref)
    except ValueError:  # answer is not an integer
        steps = split_steps(text)
        final = final_answer_text(text)
        ok = final is not None and math_equal(str(row["answer"]), final)
        return Graded(-1 if ok else len(steps), ok, len(steps), -1 if ok else len(text))
    return Graded(res.first_error, res.final_correct, len(res.steps), res.first_error_char)


def solve_stats(graded: Sequence[Graded]) -> dict[str, Any]:
    """Aggregate grades into `solve_rate`, `n_eval` and `first_error_hist` ({"-1": k, "0": k, ...}).

    >>> solve_stats([Graded(-1, True, 3), Graded(1, False, 3), Graded(-1, True, 2)])["solve_rate"]
    0.6666666666666666
    """
    if not graded:
        raise ValueError("no graded completions")
    hist = Counter(g.first_error for g in graded)
    n = len(graded)
    wrong_steps = [g.first_error for g in graded if g.first_error >= 0]
    return {
        "n_eval": n,
        "solve_rate": sum(g.final_correct for g in graded) / n,
        "process_correct_rate": hist.get(-1, 0) / n,
        "mean_steps": sum(g.n_steps for g in graded) / n,
        "mean_first_error": (sum(wrong_steps) / len(wrong_steps)) if wrong_steps else -1.0,
        "first_error_hist": {str(k): hist[k] for k in sorted(hist)},
    }
