r"""The text format of the synthetic arithmetic world, shared by the generator, checker and policy.

A prompt is `format_prompt(problem)` and the policy's completion follows it. A canonical
solution has one step `"{a} {op} {b} = {c}"` per line (op in `+ - * /`, single spaces), then
the answer line `"The answer is {n}"`, joined by "\n" with no trailing newline:

    >>> problem = "Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?"
    >>> print(format_prompt(problem), end="")
    Question: Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?
    Answer:
    >>> solution = format_solution(["23 + 14 = 37"], 37)
    >>> solution
    '23 + 14 = 37\nThe answer is 37'
    >>> split_steps(solution)
    ['23 + 14 = 37', 'The answer is 37']
    >>> step_spans(solution)
    [(0, 12), (13, 29)]
    >>> extract_answer(solution)
    '37'

Line breaks are "\n", "\r\n" and a lone "\r", so text written on Windows or by a model that
emits "\r" splits the same way. Other Unicode separators (U+2028, "\x0b", "\x0c", ...) are not
line breaks. Every step is the line stripped of surrounding whitespace (`str.strip`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ANSWER_PREFIX = "The answer is "

# A line is a maximal run of characters that are not "\r" or "\n" (so "\r\n" is one break).
_LINE = re.compile(r"[^\r\n]+")
# What may follow the last ANSWER_PREFIX: a (possibly negative) integer, an optional period and
# horizontal whitespace up to the end of that line. "5.5" or "5 apples" do not count.
_ANSWER_TAIL = re.compile(r"[^\S\r\n]*(-?[0-9]+)\.?[^\S\r\n]*(?=[\r\n]|\Z)")


def format_prompt(problem: str) -> str:
    r"""The prompt the policy completes.

    >>> format_prompt("Ben has 2 cards.")
    'Question: Ben has 2 cards.\nAnswer:\n'
    """
    return f"Question: {problem}\nAnswer:\n"


def format_solution(steps: Sequence[str], answer: int | str) -> str:
    r"""Canonical solution text: the step lines, then the answer line, no trailing newline.

    >>> format_solution(["3 * 6 = 18", "37 + 18 = 55"], 55)
    '3 * 6 = 18\n37 + 18 = 55\nThe answer is 55'
    """
    return "\n".join([*steps, f"{ANSWER_PREFIX}{answer}"])


def step_spans(solution: str) -> list[tuple[int, int]]:
    r"""`(start, end)` of each step in `solution`: its non-blank lines without surrounding whitespace.

    >>> step_spans("  1 + 2 = 3 \r\n\r\nThe answer is 3")
    [(2, 11), (16, 31)]
    """
    spans = []
    for m in _LINE.finditer(solution):
        line = m.group()
        stripped = line.strip()
        if stripped:
            start = m.start() + len(line) - len(line.lstrip())
            spans.append((start, start + len(stripped)))
    return spans


def split_steps(solution: str) -> list[str]:
    r"""The steps of `solution`: non-empty lines, stripped (see the module docstring for breaks).

    >>> split_steps("1 + 2 = 3\r\n\n  The answer is 3  ")
    ['1 + 2 = 3', 'The answer is 3']
    """
    return [solution[start:end] for start, end in step_spans(solution)]


def extract_answer(text: str) -> str | None:
    r"""The integer after the LAST "The answer is " in `text`, as written, else None.

    The number may be negative and may be followed by a period and whitespace, but nothing
    else on its line.

    >>> extract_answer("The answer is 3\nThe answer is -12.")
    '-12'
    >>> extract_answer("The answer is 12 apples") is None
    True
    >>> extract_answer("The answer is 5.5") is None
    True
    """
    i = text.rfind(ANSWER_PREFIX)
    if i < 0:
        return None
    m = _ANSWER_TAIL.match(text, i + len(ANSWER_PREFIX))
    return m.group(1) if m else None
