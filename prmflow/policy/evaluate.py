"""How good is a policy? Solve rate and where its first errors fall, by the exact checker.

The embedded policy must be imperfect on purpose and measurably so: its held-out solve rate
(default target 30-80%) and first-error histogram are what the rest of the pipeline studies.

Which verdict a completion gets depends on where its problem row comes from, never on the
answer's type:

    synthetic rows (no `source` key)   the exact step checker for integer answers, final-answer
                                       matching for others (unchanged)
    real rows (`source` gsm8k / math)  the final answer only (`prmflow.answers.verify_answer`);
                                       there is no step-level truth, so `first_error` and
                                       `first_error_char` are None ("unknown")
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prmflow.answers import is_real, verify_answer
from prmflow.label.mc import final_answer_text, math_equal
from prmflow.synth import check_solution, reference_values, split_steps


@dataclass(frozen=True)
class Graded:
    """One completion graded against its problem."""

    first_error: int | None
    """index of the first wrong step (-1 if none; len(steps) if the answer line is missing);
    None = unknown: a real problem row, whose text has no step-level truth"""
    final_correct: bool
    """the final answer matches the problem's answer"""
    n_steps: int
    """lines in the completion"""
    first_error_char: int | None = -1
    """character offset in the completion where the first error begins (-1 if none); a step
    prefix ending at or before it is truly correct (prmflow.label.quality.gold_step_labels);
    None = unknown (real rows), exactly when first_error is None"""

    @property
    def step_truth(self) -> bool:
        """Is the step-level truth known (first_error is not None)?"""
        return self.first_error is not None


def grade(row: Mapping[str, Any], text: str) -> Graded:
    """Check one completion `text` for problem `row` ({"problem", "answer", "solution"?, "source"?}).

    Real rows (`prmflow.answers.is_real`: source gsm8k / math) get the final answer checked
    only, with first_error = first_error_char = None. Synthetic rows, unchanged: integer
    answers get the exact step checker; other answers final-answer matching only
    (`math_equal`: normalized strings, then math-verify), with first_error = -1 when right and
    len(steps) when wrong.

    >>> g = grade({"problem": "Tom has 3 cats.", "answer": "3", "source": "gsm8k"}, "He has 3 cats.\\n#### 3")
    >>> g.final_correct, g.first_error, g.first_error_char, g.n_steps
    (True, None, None, 2)
    >>> grade({"problem": "Tom has 3 cats.", "answer": "3"}, "He has 3 cats.\\n#### 3").first_error   # synthetic
    0
    """
    if is_real(row):
        return Graded(None, verify_answer(str(row["answer"]), text), len(split_steps(text)), None)
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

    Step-level statistics (process_correct_rate, mean_first_error, first_error_hist) count
    only grades whose first_error is known; when some are unknown (real rows) the dict also
    has `n_unknown_first_error`, and with none known those statistics are None.

    >>> solve_stats([Graded(-1, True, 3), Graded(1, False, 3), Graded(-1, True, 2)])["solve_rate"]
    0.6666666666666666
    >>> s = solve_stats([Graded(None, True, 3, None), Graded(None, False, 3, None)])
    >>> s["solve_rate"], s["process_correct_rate"], s["first_error_hist"], s["n_unknown_first_error"]
    (0.5, None, None, 2)
    """
    if not graded:
        raise ValueError("no graded completions")
    n = len(graded)
    known = [g.first_error for g in graded if g.first_error is not None]
    hist = Counter(known)
    wrong_steps = [e for e in known if e >= 0]
    stats = {
        "n_eval": n,
        "solve_rate": sum(g.final_correct for g in graded) / n,
        "process_correct_rate": hist.get(-1, 0) / len(known) if known else None,
        "mean_steps": sum(g.n_steps for g in graded) / n,
        "mean_first_error": (sum(wrong_steps) / len(wrong_steps)) if wrong_steps else (-1.0 if known else None),
        "first_error_hist": {str(k): hist[k] for k in sorted(hist)} if known else None,
    }
    if len(known) < n:
        stats["n_unknown_first_error"] = n - len(known)
    return stats
