r"""Problem rows from real datasets, in the same shape as the synthetic world's rows.

Every loader returns rows `{"id": str, "problem": str, "answer": str, "solution": str}` (the
real loaders add `"source": "gsm8k"` or `"math"`, which tells `prmflow.answers.is_real` that the
row has no step-level truth; own rows keep a valid `source` if they have one) and raises
`DataError("file:line: field 'x': ...")` for invalid JSON, a missing or wrong-typed field, an
empty file or a duplicate id.

    GSM8K  {"question": "...", "answer": "Natalia sold 48/2 = <<48/2=24>>24 ...\n#### 72"}
           -> problem = question, solution = text before '####' (calculator annotations
              '<<48/2=24>>' kept), answer = text after it without commas ('1,000' -> '1000')
    MATH   {"problem": "...", "solution": "... \boxed{\frac{1}{2}}", "answer": optional}
           -> answer = the `answer` field, else the content of the last \boxed{...}
    own    {"id", "problem", "answer", "solution" (optional, default ""), "source" (optional)}

Rows come in file order. `shuffle_seed` (GSM8K and MATH) returns them in a seeded random order
instead (`random.Random(seed).shuffle`, after validation, so errors still name file lines), so
that taking the first n rows samples problems instead of reading the file's head.
"""

from __future__ import annotations

import os
import random
import re

from prmflow.io import Line, check_unique_ids, iter_jsonl

SOURCES = ("synthetic", "gsm8k", "math")
"""values of a row's optional `source` field (see prmflow.answers.is_real)"""
_GSM8K_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_BOXED = "\\boxed{"


def load_gsm8k(path: str | os.PathLike[str], *, shuffle_seed: int | None = None) -> list[dict[str, str]]:
    """GSM8K JSONL rows (`source` "gsm8k"); id = the row's `id` if present, else 'gsm8k-{lineno}'."""
    rows, where = [], []
    for line in iter_jsonl(path):
        problem = _text(line, "question")
        full = line.get("answer", str)
        if "####" not in full:
            raise line.error("answer", "no '####' before the final answer")
        solution, final = full.rsplit("####", 1)
        answer = final.strip().replace(",", "")
        if not _GSM8K_NUMBER.fullmatch(answer):
            raise line.error("answer", f"final answer after '####' is not a number: {final.strip()!r}")
        rows.append(_row(_id(line, ("id",), "gsm8k"), problem, answer, solution.strip(), source="gsm8k"))
        where.append(line)
    _check_ids(rows, where)
    return _shuffled(rows, shuffle_seed)


def load_math(path: str | os.PathLike[str], *, shuffle_seed: int | None = None) -> list[dict[str, str]]:
    """MATH JSONL rows (`source` "math"); id = `id` or `unique_id` if present, else 'math-{lineno}'."""
    rows, where = [], []
    for line in iter_jsonl(path):
        problem = _text(line, "problem")
        solution = line.get("solution", str, required=False, default="")
        answer = line.get("answer", (str, int), required=False)
        if answer is None:
            if not solution:
                raise line.error("answer", "missing, and there is no 'solution' to take \\boxed{...} from")
            answer = last_boxed(solution)
            if answer is None:
                raise line.error("answer", "missing, and 'solution' has no complete \\boxed{...}")
        answer = str(answer).strip()
        if not answer:
            raise line.error("answer", "empty")
        rows.append(_row(_id(line, ("id", "unique_id"), "math"), problem, answer, solution, source="math"))
        where.append(line)
    _check_ids(rows, where)
    return _shuffled(rows, shuffle_seed)


def load_problems(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """prmflow's own problem rows (what `Problem.to_row()` writes), validated."""
    rows, where = [], []
    for line in iter_jsonl(path):
        row_id = _text(line, "id")
        problem, answer = _text(line, "problem"), _text(line, "answer")
        solution = line.get("solution", str, required=False, default="")
        source = line.get("source", str, required=False)
        if source is not None and source not in SOURCES:
            raise line.error("source", f"must be one of {SOURCES}, got {source!r}")
        rows.append(_row(row_id, problem, answer, solution, source=source))
        where.append(line)
    _check_ids(rows, where)
    return rows


def last_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{...}` in `text`, nested braces kept; None if none closes.

    Escaped braces `\{` and `\}` do not count as nesting.

    >>> last_boxed(r"so $x = \boxed{2}$, or rather $\boxed{\frac{1}{2}}$")
    '\\frac{1}{2}'
    >>> last_boxed(r"\boxed{\{1, 2\}}")
    '\\{1, 2\\}'
    >>> last_boxed(r"\boxed{1") is None
    True
    """
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    i = start + len(_BOXED)
    depth = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text[i + 1 : i + 2] in ("{", "}"):
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + len(_BOXED) : i]
        i += 1
    return None


def _text(line: Line, field: str) -> str:
    """A required string field that is not blank."""
    value = line.get(field, str)
    if not value.strip():
        raise line.error(field, "empty")
    return value


def _id(line: Line, fields: tuple[str, ...], prefix: str) -> str:
    """The first present id field as a string, else '{prefix}-{lineno}'."""
    for field in fields:
        value = line.get(field, (str, int), required=False)
        if value is not None:
            if not str(value).strip():
                raise line.error(field, "empty")
            return str(value)
    return f"{prefix}-{line.lineno}"


def _row(row_id: str, problem: str, answer: str, solution: str, source: str | None = None) -> dict[str, str]:
    row = {"id": row_id, "problem": problem, "answer": answer, "solution": solution}
    if source is not None:
        row["source"] = source
    return row


def _shuffled(rows: list[dict[str, str]], seed: int | None) -> list[dict[str, str]]:
    """rows in file order (seed None) or in the seeded order of random.Random(seed).shuffle."""
    if seed is None:
        return rows
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def _check_ids(rows: list[dict[str, str]], where: list[Line]) -> None:
    """Duplicate ids, including generated ones, are reported at their second line."""
    check_unique_ids(Line(line.path, line.lineno, {"id": row["id"]}) for row, line in zip(rows, where))
