r"""An exact checker for any solution text of an integer arithmetic word problem.

It gives every step a verdict and finds `first_error`, the index of the earliest wrong step
(-1 when every step is right, as ProcessBench's `label`). This is the ground truth against
which Monte-Carlo soft labels and PRM scores are measured.

A step is a line of `split_steps(solution)`. It is either an arithmetic line `a op b = c`
(integers of at most 30 digits, op in + - * /, any spaces or tabs) or the answer line
`The answer is n` (optional trailing period). Anything else is `unparseable`. The values a
step may use ("known" values) are the integers written in the problem (regex `[0-9]+`, ASCII
digits, at most 30 of them) and the `c` claimed by any EARLIER arithmetic line, right or wrong,
so that each step is judged given what was written before it.

Each arithmetic line is checked in this order, and the first failure is its verdict:
    unparseable      neither form above                           error_char: line start
    unknown_operand  a or b is not a known value                  error_char: that operand
    arithmetic       a op b != c; "/" is right only if b != 0     error_char: first char of c that
                     and a == b * c                               differs from the true result
    off_path         (only with `reference`) c is not one of the  error_char: line start
                     reference solution's intermediate results
The answer line is judged by its value alone: `wrong_answer` (error_char: start of its number)
when the number differs from `answer`, else ok. Without `answer`, it is ok iff its number is a
known value, else `unknown_operand`.

The true result of an inexact division is the decimal a / b (7 / 2 = 3.5), so a claimed "3"
first differs where "3" ends. Division by zero has no true result: error_char is the start of c.

A solution without any answer line never concluded: if all its steps are ok, then
`first_error = len(steps)` and `first_error_char = len(solution)` (the missing conclusion is
the first error). An empty solution therefore has `first_error = 0`, `first_error_char = 0`.

`final_answer` is the number of the last answer line (None if there is none) and
`final_correct` is whether it equals `answer`; it is False whenever `answer` is None. With an
`answer`: `first_error == -1` implies `final_correct`, and not `final_correct` implies
`first_error != -1`.

    >>> problem = ("Mia has 23 marbles. She finds 14 more marbles. She gives 9 marbles to Leo."
    ...            " How many marbles does Mia have now?")
    >>> r = check_solution(problem, "23 + 14 = 37\n37 - 9 = 28\nThe answer is 28", answer="28")
    >>> r.first_error, r.first_error_char, r.final_correct
    (-1, -1, True)
    >>> r = check_solution(problem, "23 + 14 = 38\n38 - 9 = 29\nThe answer is 29", answer="28")
    >>> [v.kind for v in r.verdicts]
    ['arithmetic', 'ok', 'wrong_answer']
    >>> r.first_error, r.first_error_char  # "38" vs true "37": the "8" at offset 10 + 1
    (0, 11)
    >>> r = check_solution(problem, "23 + 14 = 37\n37 + 9 = 46\nThe answer is 46", reference=[37, 28])
    >>> [v.kind for v in r.verdicts], r.first_error_char  # "+ 9" where Mia gives 9 away
    (['ok', 'off_path', 'ok'], 13)

Never raises on any `problem` or `solution` string. Raises ValueError only for an `answer` that
is not an integer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from prmflow.synth.format import ANSWER_PREFIX, extract_answer, step_spans

MAX_DIGITS = 30  # a longer number makes its line unparseable (and keeps int() cheap and safe)

_NUM = rf"-?[0-9]{{1,{MAX_DIGITS}}}"
_ARITH = re.compile(rf"({_NUM})[ \t]*([-+*/])[ \t]*({_NUM})[ \t]*=[ \t]*({_NUM})")
_ANSWER = re.compile(rf"{re.escape(ANSWER_PREFIX)}[ \t]*({_NUM})\.?")
_PROBLEM_NUMBER = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"-?[0-9]+")

OK = "ok"
KINDS = (OK, "unparseable", "unknown_operand", "arithmetic", "off_path", "wrong_answer")


@dataclass(frozen=True)
class StepVerdict:
    """The verdict on one step."""

    ok: bool
    kind: str
    """one of KINDS"""
    detail: str
    """what is wrong, for humans ('' when ok)"""
    error_char: int
    """offset in the solution where the error begins, -1 when ok"""


@dataclass(frozen=True)
class CheckResult:
    """Every step of a solution with its span and verdict, and the solution-level summary."""

    steps: list[str]
    spans: list[tuple[int, int]]
    """(start, end) of each step in the original solution string"""
    verdicts: list[StepVerdict]
    first_error: int
    """index of the first wrong step; -1 if none; len(steps) if all ok but no answer line"""
    first_error_char: int
    """error_char of that step; -1 if none; len(solution) if the answer line is missing"""
    final_answer: str | None
    final_correct: bool


def check_solution(
    problem: str,
    solution: str,
    answer: str | int | None = None,
    reference: Sequence[int] | None = None,
) -> CheckResult:
    """Check every step of `solution` (see the module docstring for the rules)."""
    target = _parse_answer(answer)
    known = {int(s) for s in _PROBLEM_NUMBER.findall(problem) if len(s) <= MAX_DIGITS}
    on_path = None if reference is None else set(reference)
    spans = step_spans(solution)
    steps = [solution[start:end] for start, end in spans]
    verdicts: list[StepVerdict] = []
    final_answer = None
    for step, (start, _) in zip(steps, spans):
        if m := _ARITH.fullmatch(step):
            verdicts.append(_check_arithmetic(m, start, known, on_path))
            known.add(int(m.group(4)))  # claimed, right or wrong, after this step is judged
        elif m := _ANSWER.fullmatch(step):
            verdicts.append(_check_answer(m, start, known, target))
            final_answer = extract_answer(step)
        else:
            verdicts.append(StepVerdict(False, "unparseable", f"not 'a op b = c' nor '{ANSWER_PREFIX}n'", start))
    first_error = next((i for i, v in enumerate(verdicts) if not v.ok), -1)
    if first_error >= 0:
        first_error_char = verdicts[first_error].error_char
    elif final_answer is None:  # every step is fine but the solution never concludes
        first_error, first_error_char = len(steps), len(solution)
    else:
        first_error_char = -1
    final_correct = target is not None and final_answer is not None and int(final_answer) == target
    return CheckResult(steps, spans, verdicts, first_error, first_error_char, final_answer, final_correct)


def _parse_answer(answer: str | int | None) -> int | None:
    if answer is None:
        return None
    if isinstance(answer, int) and not isinstance(answer, bool):
        return answer
    if isinstance(answer, str) and _INTEGER.fullmatch(answer.strip()):
        return int(answer.strip())
    raise ValueError(f"answer must be an integer or a string of one, got {answer!r}")


def _check_arithmetic(m: re.Match[str], start: int, known: set[int], on_path: set[int] | None) -> StepVerdict:
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    for group in (1, 3):
        if int(m.group(group)) not in known:
            detail = f"{m.group(group)} is neither in the problem nor an earlier result"
            return StepVerdict(False, "unknown_operand", detail, start + m.start(group))
    true = _true_result(a, op, b)
    if true is None or true.endswith(".") or int(true) != c:
        claimed = m.group(4)
        if true is None:
            i, detail = 0, f"{a} / 0 is undefined"
        else:  # the first differing character, or where the shorter string ends
            i = next((k for k, (x, y) in enumerate(zip(claimed, true)) if x != y), min(len(claimed), len(true)))
            inexact = true.endswith(".")
            detail = f"{a} / {b} is not a whole number" if inexact else f"{a} {op} {b} = {true}, not {claimed}"
        return StepVerdict(False, "arithmetic", detail, start + m.start(4) + i)
    if on_path is not None and c not in on_path:
        return StepVerdict(False, "off_path", f"{c} is not an intermediate result of the reference solution", start)
    return StepVerdict(True, OK, "", -1)


def _true_result(a: int, op: str, b: int) -> str | None:
    """The true result's leading characters: exact for + - * and exact division; for an inexact
    division the integer part and '.' (e.g. '3.' for 7 / 2), which is all a claimed integer can
    be compared against; None for division by zero."""
    if op == "+":
        return str(a + b)
    if op == "-":
        return str(a - b)
    if op == "*":
        return str(a * b)
    if b == 0:
        return None
    q, rem = divmod(abs(a), abs(b))
    sign = "-" if (a < 0) != (b < 0) and (q or rem) else ""
    return f"{sign}{q}" + ("." if rem else "")


def _check_answer(m: re.Match[str], start: int, known: set[int], target: int | None) -> StepVerdict:
    n, at = int(m.group(1)), start + m.start(1)
    if target is None:
        if n in known:
            return StepVerdict(True, OK, "", -1)
        return StepVerdict(False, "unknown_operand", f"answer {n} is neither in the problem nor an earlier result", at)
    if n != target:
        return StepVerdict(False, "wrong_answer", f"answer {n}, expected {target}", at)
    return StepVerdict(True, OK, "", -1)


def reference_values(solution: str) -> list[int]:
    """The claimed results `c` of every arithmetic line of a (canonical) solution, in order.

    Pass them as `reference=` to `check_solution` to detect off-path steps.

    >>> reference_values("9 * 8 = 72\\n4 + 72 = 76\\nThe answer is 76")
    [72, 76]
    """
    out = []
    for start, end in step_spans(solution):
        if m := _ARITH.fullmatch(solution[start:end]):
            out.append(int(m.group(4)))
    return out
