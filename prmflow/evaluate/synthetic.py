"""Synthetic ProcessBench: held-out policy solutions, labeled by the exact checker.

Each row follows the ProcessBench format (QwenLM/ProcessBench, arXiv 2412.06559):
`{"id", "generator", "problem", "steps", "final_answer_correct", "label"}`, where `steps` are
the solution's lines and `label` is the checker's first wrong line (-1 if all are right).
Solutions that never state an answer (the checker's `first_error == len(steps)`) have no wrong
line to point at and are left out and counted.

Balance: ProcessBench mixes correct and erroneous solutions; `correct_fraction` sets the share
of correct rows (the rest are erroneous), subsampled deterministically with `seed`.

    >>> rows = [dict(id="a", problem="p", steps=["1 + 1 = 2", "The answer is 2"], label=-1, final_answer_correct=True),
    ...         dict(id="b", problem="p", steps=["1 + 1 = 3", "The answer is 3"], label=0, final_answer_correct=False),
    ...         dict(id="c", problem="p", steps=["1 + 1 = 2", "The answer is 5"], label=1, final_answer_correct=False)]
    >>> [r["label"] == -1 for r in balance(rows, correct_fraction=0.5, seed=0)]  # 1 correct -> 1 erroneous
    [True, False]
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prmflow.policy.evaluate import grade
from prmflow.synth import split_steps


def processbench_rows(
    problems: Sequence[Mapping[str, Any]], completions: Sequence[Sequence[str]], generator: str
) -> tuple[list[dict[str, Any]], int]:
    """ProcessBench rows for every (problem, completion); returns (rows, number left out)."""
    rows, left_out = [], 0
    for p, texts in zip(problems, completions, strict=True):
        for j, text in enumerate(texts):
            steps = split_steps(text)
            g = grade(p, text)
            if g.first_error is None:
                raise ValueError(
                    f"problem {p['id']!r} is real text (source {p.get('source')!r}): no step-level "
                    "truth to build a synthetic ProcessBench row from"
                )
            if not steps or g.first_error >= len(steps):
                left_out += 1
                continue
            rows.append(
                {
                    "id": f"{p['id']}/{j}",
                    "generator": generator,
                    "problem": p["problem"],
                    "steps": steps,
                    "final_answer_correct": g.final_correct,
                    "label": g.first_error,
                }
            )
    return rows, left_out


def balance(rows: Iterable[Mapping[str, Any]], correct_fraction: float, seed: int) -> list[dict[str, Any]]:
    """The largest subsample with the given share of correct rows (label -1), in input order."""
    if not 0 < correct_fraction < 1:
        raise ValueError(f"correct_fraction must be in (0, 1), got {correct_fraction}")
    table = [dict(r) for r in rows]
    correct = [i for i, r in enumerate(table) if r["label"] == -1]
    wrong = [i for i, r in enumerate(table) if r["label"] != -1]
    # n_c / (n_c + n_w) = f  ->  n_c = f/(1-f) n_w, limited by what exists
    n_c = min(len(correct), int(round(correct_fraction / (1 - correct_fraction) * len(wrong))))
    n_w = min(len(wrong), int(round((1 - correct_fraction) / correct_fraction * n_c)))
    rng = random.Random(seed)
    keep = set(rng.sample(correct, n_c)) | set(rng.sample(wrong, n_w))
    return [r for i, r in enumerate(table) if i in keep]


def split_subsets(rows: Sequence[Mapping[str, Any]], calib_fraction: float, seed: int) -> list[dict[str, Any]]:
    """Tag each row's `subset` as `calib` or `test` (stratified by correct/erroneous)."""
    rng = random.Random(seed)
    out = [dict(r) for r in rows]
    for is_correct in (True, False):
        idx = [i for i, r in enumerate(out) if (r["label"] == -1) == is_correct]
        rng.shuffle(idx)
        n_cal = int(round(calib_fraction * len(idx)))
        for k, i in enumerate(idx):
            out[i]["subset"] = "calib" if k < n_cal else "test"
    return out
