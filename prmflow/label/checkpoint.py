"""Persist MC estimates as they are paid for, so a killed labeling run resumes without redoing them.

An append-only JSONL file, one line per labeled prefix, fsynced after every chunk:
    {"key": <prefix sha1>, "n_correct": 3, "num_rollouts": 8, "cost": {"rollouts": 8, ...}}
A kill can only tear the last line; `load` ignores a torn final line (and says so) but rejects
damage anywhere else, since that means the file is not ours. `write` saves a finished set of
entries (a labeling shard) atomically, in the same format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prmflow.io import DataError, dumps_line, write_jsonl
from prmflow.label.mc import LabelCost, StepEstimate

Entry = tuple[StepEstimate, LabelCost]


def load(path: str | os.PathLike[str]) -> dict[str, Entry]:
    """Estimates saved so far (empty if the file does not exist)."""
    p = Path(path)
    if not p.exists():
        return {}
    lines = p.read_bytes().split(b"\n")
    out: dict[str, Entry] = {}
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            out[row["key"]] = (StepEstimate(row["n_correct"], row["num_rollouts"]), LabelCost(**row["cost"]))
        except (ValueError, KeyError, TypeError) as e:
            if i == len(lines) - 1:  # torn by a kill mid-append: drop it, it will be redone
                break
            raise DataError(p, i + 1, None, f"corrupt label checkpoint line ({e})") from None
    return out


def _line(key: str, est: StepEstimate, cost: LabelCost) -> dict:
    return {"key": key, "n_correct": est.n_correct, "num_rollouts": est.num_rollouts, "cost": cost.to_dict()}


def write(path: str | os.PathLike[str], entries: dict[str, Entry]) -> None:
    """Write entries (in their order) to `path` atomically: the file is complete or absent."""
    write_jsonl(path, (_line(k, est, cost) for k, (est, cost) in entries.items()))


def append(path: str | os.PathLike[str], entries: dict[str, Entry]) -> None:
    """Append entries and fsync, so they survive a kill right after this returns."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        for key, (est, cost) in entries.items():
            f.write(dumps_line(_line(key, est, cost)) + "\n")
        f.flush()
        os.fsync(f.fileno())
