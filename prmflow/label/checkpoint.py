"""Persist MC estimates as they are paid for, so a killed labeling run resumes without redoing them.

An append-only JSONL file, one line per labeled prefix, fsynced after every chunk:
    {"key": <prefix sha1>, "n_correct": 3, "num_rollouts": 8, "cost": {"rollouts": 8, ...}}
A kill can only tear the last line; `load` ignores a torn final line but rejects damage anywhere
else, since that means the file is not ours (prmflow.resume.read_log). `write` saves a finished set of
entries (a labeling shard) atomically, in the same format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prmflow.io import write_jsonl
from prmflow.label.mc import LabelCost, StepEstimate
from prmflow.resume import append_rows, read_log

Entry = tuple[StepEstimate, LabelCost]


def load(path: str | os.PathLike[str]) -> dict[str, Entry]:
    """Estimates saved so far (empty if the file does not exist)."""
    return dict(read_log(path, _decode))


def _decode(row: dict[str, Any]) -> tuple[str, Entry]:
    return row["key"], (StepEstimate(row["n_correct"], row["num_rollouts"]), LabelCost(**row["cost"]))


def _line(key: str, est: StepEstimate, cost: LabelCost) -> dict:
    return {"key": key, "n_correct": est.n_correct, "num_rollouts": est.num_rollouts, "cost": cost.to_dict()}


def write(path: str | os.PathLike[str], entries: dict[str, Entry]) -> None:
    """Write entries (in their order) to `path` atomically: the file is complete or absent."""
    write_jsonl(path, (_line(k, est, cost) for k, (est, cost) in entries.items()))


def append(path: str | os.PathLike[str], entries: dict[str, Entry]) -> None:
    """Append entries and fsync, so they survive a kill right after this returns."""
    append_rows(Path(path), (_line(key, est, cost) for key, (est, cost) in entries.items()))
