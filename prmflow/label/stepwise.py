r"""Labeled solutions as TRL stepwise-supervision rows, and a validating loader.

TRL's PRMTrainer reads `prompt`, `completions` (the steps) and `labels` (one per step); we add
the MC evidence and what it cost:

    {"id": "synth-000000-s0", "prompt": "Question: ...\nAnswer:\n",
     "completions": ["9 * 8 = 72", "4 + 72 = 77", "The answer is 77"],
     "labels": [true, false, false],          # hard labels (TRL also accepts numbers in [0, 1])
     "soft_labels": [1.0, 0.0, 0.0],          # fraction of rollouts reaching the answer, or null
     "cost": {"rollouts": 8, ...},            # prmflow.label.mc.LabelCost.to_dict()
     "source": "omega", ...extra}

Rows written with `prmflow.io.write_jsonl` load with `datasets.load_dataset("json", ...)`:
`stepwise_row` always writes `labels` as booleans and `soft_labels` as floats, so Arrow infers
one column type across rows (a `[1, 0]` row next to a `[0.5]` row would not unify).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from prmflow.io import Line, check_unique_ids, iter_jsonl


def select_solutions(rows: Sequence[Mapping[str, Any]], max_solutions: int, how: str = "first") -> list[Any]:
    """At most `max_solutions` rows (0 = all), in their order. `first` keeps the first ones;
    `balanced` keeps up to half right (`final_correct`) and fills the rest with wrong ones (or the
    other way round when one kind runs short), so both classes reach the labeler.

    >>> rows = [{"id": i, "final_correct": i in (3, 5)} for i in range(8)]
    >>> [r["id"] for r in select_solutions(rows, 4)], [r["id"] for r in select_solutions(rows, 4, "balanced")]
    ([0, 1, 2, 3], [0, 1, 3, 5])
    """
    if not max_solutions or max_solutions >= len(rows):
        return list(rows)
    if how == "first":
        return list(rows[:max_solutions])
    if how != "balanced":
        raise ValueError(f"select must be 'first' or 'balanced', got {how!r}")
    right = [i for i, r in enumerate(rows) if r["final_correct"]]
    wrong = [i for i, r in enumerate(rows) if not r["final_correct"]]
    n_right = min(len(right), max(max_solutions - len(wrong), max_solutions // 2))
    keep = set(right[:n_right]) | set(wrong[: max_solutions - n_right])
    return [r for i, r in enumerate(rows) if i in keep]


def stepwise_row(
    id: str,
    prompt: str,
    completions: list[str],
    labels: list[bool],
    soft_labels: list[float] | None,
    cost: dict[str, Any],
    source: str,
    **extra: Any,
) -> dict[str, Any]:
    """One TRL stepwise row plus our fields, then any `extra` columns.

    >>> stepwise_row("p0", "Q: 1+1?\\n", ["1 + 1 = 2", "The answer is 2"], [True, True], [1, 0.5],
    ...              {"rollouts": 8}, "mc", split="train")  # doctest: +NORMALIZE_WHITESPACE
    {'id': 'p0', 'prompt': 'Q: 1+1?\\n', 'completions': ['1 + 1 = 2', 'The answer is 2'],
     'labels': [True, True], 'soft_labels': [1.0, 0.5], 'cost': {'rollouts': 8}, 'source': 'mc',
     'split': 'train'}
    """
    if not completions:
        raise ValueError(f"row {id!r}: completions is empty")
    if len(labels) != len(completions):
        raise ValueError(f"row {id!r}: {len(labels)} labels != {len(completions)} completions")
    if soft_labels is not None and len(soft_labels) != len(completions):
        raise ValueError(f"row {id!r}: {len(soft_labels)} soft_labels != {len(completions)} completions")
    return {
        "id": id,
        "prompt": prompt,
        "completions": list(completions),
        "labels": [bool(x) for x in labels],
        "soft_labels": None if soft_labels is None else [float(x) for x in soft_labels],
        "cost": dict(cost),
        "source": source,
        **extra,
    }


def load_stepwise(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate stepwise rows; any problem raises DataError("file:line: field 'x': ...").

    Checked: `prompt` is a string; `completions` a non-empty list of strings; `labels` a list of
    booleans or numbers in [0, 1] (TRL soft labels), one per completion; `soft_labels`, if
    present and not null, numbers in [0, 1], one per completion; `id`, if present, a string
    seen on no earlier line; `cost`, if present, an object; `source`, if present, a string.
    """
    lines = list(iter_jsonl(path))
    for line in lines:
        line.get("prompt", str)
        completions = line.get("completions", list)
        if not completions:
            raise line.error("completions", "empty list")
        for k, step in enumerate(completions):
            if not isinstance(step, str):
                raise line.error("completions", f"item {k} is {type(step).__name__}, expected str")
        _check_labels(line, "labels", len(completions), allow_bool=True)
        if line.get("soft_labels", list, required=False) is not None:
            _check_labels(line, "soft_labels", len(completions), allow_bool=False)
        line.get("id", str, required=False)
        line.get("cost", dict, required=False)
        line.get("source", str, required=False)
    check_unique_ids(line for line in lines if line.row.get("id") is not None)
    return [line.row for line in lines]


def _check_labels(line: Line, field: str, n_steps: int, *, allow_bool: bool) -> None:
    """A list with one label per step: booleans (if allowed) or finite numbers in [0, 1]."""
    labels = line.get(field, list)
    if len(labels) != n_steps:
        raise line.error(field, f"length {len(labels)} != {n_steps} completions")
    for k, x in enumerate(labels):
        if isinstance(x, bool):
            if allow_bool:
                continue
            raise line.error(field, f"item {k} is bool, expected a number in [0, 1]")
        if not isinstance(x, int | float):
            expected = "bool or number in [0, 1]" if allow_bool else "number in [0, 1]"
            raise line.error(field, f"item {k} is {type(x).__name__}, expected {expected}")
        if not (math.isfinite(x) and 0 <= x <= 1):
            raise line.error(field, f"item {k} is {x}, outside [0, 1]")
