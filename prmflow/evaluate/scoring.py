"""Scoring ProcessBench-style rows with a PRM: the glue between `prmflow.prm` and the metrics.

ProcessBench steps are paragraphs or lines without their separators, while prmflow PRMs are
trained on steps that carry their own whitespace (a step ends with its "\\n"). `prm_steps`
restores the separator on every step but the last, so the PRM reads the text as it was written.

    >>> prm_steps(["1 + 1 = 2", "The answer is 2"])
    ['1 + 1 = 2\\n', 'The answer is 2']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from prmflow.synth import format_prompt


class StepScorer(Protocol):
    def score_batch(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]], batch_size: int = 16) -> list[Any]:
        ...


def prm_steps(steps: Sequence[str], sep: str = "\n") -> list[str]:
    return [s + sep for s in steps[:-1]] + list(steps[-1:])


def score_rows(prm: StepScorer, rows: Sequence[Mapping[str, Any]], batch_size: int = 16,
               sep: str = "\n") -> tuple[dict[str, list[float]], dict[str, Any]]:
    """PRM scores per row id (one per step), plus truncation counts.

    Steps cut for context (from the end) repeat the last kept score, so every step has a score;
    `truncated_rows` / `truncated_steps` say how often that happened.
    """
    prompts = [format_prompt(r["problem"]) for r in rows]
    out = prm.score_batch(prompts, [prm_steps(r["steps"], sep) for r in rows], batch_size=batch_size)
    scores = {r["id"]: s.head_mean_padded() for r, s in zip(rows, out, strict=True)}
    stds = {r["id"]: list(s.head_std) for r, s in zip(rows, out, strict=True)}
    info = {"truncated_rows": sum(s.n_truncated_steps > 0 for s in out),
            "truncated_steps": sum(s.n_truncated_steps for s in out), "head_std": stds}
    return scores, info


def assess(rows: Sequence[Mapping[str, Any]], scores: Mapping[str, Sequence[float]], *,
           threshold: float | None = None, calibrate_on: str | None = None) -> dict[str, Any]:
    """ProcessBench metrics at a fixed `threshold`, or at the F1-maximising threshold fitted on
    the rows of subset `calibrate_on` and then applied to the OTHER subsets (exactly one of the two).

    Returns `evaluate_subsets`' result plus `threshold_mode` ("fixed" or "calibrated on <subset>")
    and, when calibrated, `calibration_f1`.
    """
    from prmflow.evaluate.processbench import calibrate_threshold, evaluate_subsets

    if (threshold is None) == (calibrate_on is None):
        raise ValueError("give exactly one of threshold and calibrate_on")
    if calibrate_on is None:
        return {**evaluate_subsets(rows, scores, threshold), "threshold_mode": "fixed"}
    calib = [r for r in rows if r["subset"] == calibrate_on]
    rest = [r for r in rows if r["subset"] != calibrate_on]
    if not calib:
        raise ValueError(f"no rows in calibration subset '{calibrate_on}' (subsets: {sorted({r['subset'] for r in rows})})")
    if not rest:
        raise ValueError(f"every row is in the calibration subset '{calibrate_on}': nothing left to evaluate")
    thr, f1 = calibrate_threshold([r["label"] for r in calib], [scores[r["id"]] for r in calib])
    return {**evaluate_subsets(rest, scores, thr), "threshold_mode": f"calibrated on {calibrate_on}",
            "calibration_f1": f1}
