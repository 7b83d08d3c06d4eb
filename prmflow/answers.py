r"""Final answers of real solution texts (GSM8K, MATH): one extraction, one verdict.

The synthetic world has an exact step checker (`prmflow.synth.check_solution`); real text has
none. For a real problem row (`row["source"]` in `REAL_SOURCES`, set by the GSM8K and MATH
loaders) only the FINAL answer is checked, and every consumer (grading, the Monte-Carlo
verifier, Best-of-N) uses the functions here, so they agree on what a solution answered.

Extraction (`extract_final_answer`) takes the first rule that finds something:

    1. the content of the last \boxed{...} (or \fbox{...})      MATH, "put it in \boxed{}"
    2. the rest of the line after the last "####"                 GSM8K's own gold format
    3. the rest of the line after the last "answer is", "final answer" or    prmflow's prompt
       line-opening "Answer:" (case-insensitive: "The answer is: 7", "The    convention
       final answer is 7", "Final answer: 7", "**Answer:** 7"; a rest without
       letters or digits takes the next line that has some)
    4. None: the solution never stated an answer (graded wrong)

Delimited forms go first: a \boxed{} or "####" is written on purpose as the final answer,
while "answer is" also occurs in passing ("the answer is not 12 yet"). A line-opening
"Answer:" is also the plain few-shot prompt's section marker (`prmflow.prompts`): text the model
writes after a new "Question:" must be cut by the prompt's stop strings, or its answer counts.
The answer string is then cleaned (`clean_answer`: markdown bold, `$`, \( \), \text{...}, a
trailing period), so "The answer is **260**" is 260; a bold number elsewhere is not an answer.

Verdict (`answers_match(gold, pred)`): a gold answer that is a plain number (GSM8K always,
MATH often) is compared exactly, as a fraction, with the number stated in the prediction
(`parse_number`: after the last "=", the first number; "1,234", "260.00", "-3", "1/2",
units after it ignored), so "260 sheep" and "$260.00" are 260. A prediction with LaTeX
(\frac{520}{2}) or without a plain number, and every non-numeric gold answer (\frac{1}{2},
x^2+1, intervals) go to `prmflow.label.mc.math_equal` (normalized strings, then HF math-verify).

    >>> [verify_answer("260", t) for t in (r"so \boxed{260}", "#### 260", "The answer is $260$.",
    ...     "The answer is 260 sheep.", "The answer is: 260", "The answer is **260**")]
    [True, True, True, True, True, True]
    >>> verify_answer("260", "The answer is 250 sheep."), verify_answer("260", "260 sheep")
    (False, False)
    >>> verify_answer(r"\frac{1}{2}", r"so $x = \boxed{0.5}$")
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from prmflow.synth.sources import last_boxed

REAL_SOURCES = ("gsm8k", "math")
"""`row["source"]` values of real problem rows (no step-level truth)"""
SYNTHETIC_SOURCE = "synthetic"
"""an explicit synthetic source; synthetic rows normally carry no `source` key at all"""

_ANSWER_IS = re.compile(
    r"final answer(?:\s+is\b)?|answer is\b|^[^\S\n]*[*_]*answer[*_]*:", re.IGNORECASE | re.MULTILINE
)
_FBOX = "\\fbox{"
_NUMBER = re.compile(r"[-−]?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)(?:/[0-9]+)?")
_PLAIN_GOLD = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:/[0-9]+)?")
_LATEX_CMD = re.compile(r"\\[a-zA-Z]+")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")


def is_real(row: Mapping[str, Any]) -> bool:
    """Is this problem row real text (GSM8K, MATH), to be graded by its final answer only?

    Rows without a `source` key are the synthetic world's (their bytes predate the key).

    >>> is_real({"problem": "p", "answer": "3"}), is_real({"source": "gsm8k"}), is_real({"source": "synthetic"})
    (False, True, False)
    """
    source = row.get("source")
    if source is None or source == SYNTHETIC_SOURCE:
        return False
    if source not in REAL_SOURCES:
        raise ValueError(
            f"row {row.get('id', '?')!r}: field 'source' must be one of "
            f"{(SYNTHETIC_SOURCE, *REAL_SOURCES)}, got {source!r}"
        )
    return True


# --------------------------------------------------------------------------- extraction


def extract_final_answer(text: str) -> str | None:
    r"""The final answer stated in `text` by the rules of the module docstring, cleaned; else None.

    >>> extract_final_answer("3 + 4 = 7\n#### 7\nThe answer is 8")   # "####" before "answer is"
    '7'
    >>> extract_final_answer(r"The final answer is $\boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    >>> extract_final_answer("Final Answer:\n  **$1,234**") , extract_final_answer("no answer here")
    ('1,234', None)
    """
    boxed = _last_box(text)
    if boxed is not None:
        return clean_answer(boxed)
    i = text.rfind("####")
    if i >= 0:
        return clean_answer(_rest_of_line(text, i + 4))
    hits = list(_ANSWER_IS.finditer(text))
    if hits:
        return clean_answer(_rest_of_line(text, hits[-1].end(), next_if_blank=True))
    return None


def _last_box(text: str) -> str | None:
    """Content of the later of the last \\boxed{} and the last \\fbox{} that close."""
    boxed, fbox = text.rfind("\\boxed{"), text.rfind(_FBOX)
    if fbox > boxed:
        return last_boxed(text[fbox:].replace(_FBOX, "\\boxed{", 1))
    return last_boxed(text) if boxed >= 0 else None


def _rest_of_line(text: str, start: int, next_if_blank: bool = False) -> str:
    lines = text[start:].splitlines()
    if not lines:
        return ""
    if next_if_blank and not _has_text(lines[0]):  # "Final answer:\n 7"
        return next((ln for ln in lines[1:] if _has_text(ln)), "")
    return lines[0]


def _has_text(line: str) -> bool:
    return any(ch.isalnum() for ch in line)


def clean_answer(answer: str) -> str:
    r"""Strip the markup around an answer: whitespace, leading ':', markdown `**`/`__`, `$`, `\$`,
    \( \) \[ \], \text{...} (kept: its content), \! \, \; spacing, a trailing period.

    >>> clean_answer(r" : **\$1,234.** "), clean_answer(r"\(\frac{1}{2}\)."), clean_answer(r"5\text{ apples}")
    ('1,234', '\\frac{1}{2}', '5 apples')
    """
    s = answer.strip().lstrip(":").strip()
    for mark in ("**", "__", "\\$", "$", "\\(", "\\)", "\\[", "\\]", "\\!", "\\,", "\\;"):
        s = s.replace(mark, " " if mark in ("\\,", "\\;") else "")
    s = _TEXT_CMD.sub(r"\1", s)
    s = s.strip()
    while s.endswith(".") or s.endswith("*"):
        s = s[:-1].rstrip()
    return s


def parse_number(answer: str) -> Fraction | None:
    r"""The number an answer states, exactly: after the last "=", the first number (thousands
    commas, decimals, a/b, a minus sign), anything after it (units) ignored. None when there is
    no plain number, or when the answer holds LaTeX commands (leave those to math-verify).

    >>> parse_number("260 sheep"), parse_number("-1,234.50"), parse_number("x = 3/4"), parse_number("20%")
    (Fraction(260, 1), Fraction(-2469, 2), Fraction(3, 4), Fraction(20, 1))
    >>> parse_number(r"\frac{1}{2}") is None, parse_number("none") is None
    (True, True)
    """
    s = clean_answer(answer)
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    if _LATEX_CMD.search(s):
        return None
    m = _NUMBER.search(s)
    if m:
        tok = m.group().replace("−", "-").replace(",", "")
        num, _, den = tok.partition("/")
        if den and int(den) == 0:
            return None
        return Fraction(num) / Fraction(den) if den else Fraction(num)
    return None


# --------------------------------------------------------------------------- verdict


def answers_match(gold: str, pred: str) -> bool:
    r"""Is the extracted answer `pred` the gold answer? (See the module docstring.)

    >>> answers_match("260", "260.00"), answers_match("260", r"\frac{520}{2}"), answers_match("0.5", "1/2")
    (True, True, True)
    >>> answers_match("260", "26"), answers_match(r"\frac{1}{2}", "0.5"), answers_match("-3", "3")
    (False, True, False)
    """
    gold = gold.strip()
    if _PLAIN_GOLD.fullmatch(gold.replace(",", "")):
        value = parse_number(pred)
        if value is not None:
            num, _, den = gold.replace(",", "").partition("/")
            return value == (Fraction(num) / Fraction(den) if den else Fraction(num))
    if not pred.strip():
        return False
    from prmflow.label.mc import math_equal  # mc imports this module

    return math_equal(gold, pred)


def answer_key(pred: str) -> str:
    r"""A canonical string of an extracted answer, for majority votes (Best-of-N): answers that
    state one plain number share the number's key ("260", "260.00 sheep", "$260" -> "260");
    anything else (LaTeX, several numbers, tuples) is keyed by `normalize_answer`.

    >>> answer_key("260.00 sheep"), answer_key("1,234"), answer_key("0.5")
    ('260', '1234', '1/2')
    >>> answer_key(r"\frac{1}{2}"), answer_key("(1, 2)")
    ('\\frac{1}{2}', '(12)')
    """
    from prmflow.label.mc import normalize_answer

    s = clean_answer(pred)
    value = parse_number(s)
    m = _NUMBER.search(s)
    if value is not None and m and "=" not in s and not any(ch.isdigit() for ch in s[m.end() :] + s[: m.start()]):
        return str(value)
    return normalize_answer(s)


def verify_answer(gold: str, text: str) -> bool:
    """Does solution `text` state the gold answer? False when it states none.

    >>> verify_answer("72", "48 + 24 = 72 clips.\\n#### 72"), verify_answer("72", "48 + 24 = 72")
    (True, False)
    """
    pred = extract_final_answer(text)
    return pred is not None and answers_match(str(gold), pred)
