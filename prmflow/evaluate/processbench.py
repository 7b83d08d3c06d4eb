"""ProcessBench: find the first wrong step (Zheng et al., arXiv 2412.06559, QwenLM/ProcessBench).

A row is a `problem`, its `steps` and `label`, the index of the first wrong step (-1 when
every step is right). A PRM scores each step; with a threshold tau its prediction is

    pred = min{ i : s_i < tau }, or -1 when no step scores below tau          (first error)

and, splitting rows into erroneous E = {label != -1} and correct C = {label == -1},

    error_acc   = |{x in E : pred(x) = label(x)}| / |E|
    correct_acc = |{x in C : pred(x) = -1}|       / |C|
    f1          = 2 * error_acc * correct_acc / (error_acc + correct_acc)     (harmonic mean)

ProcessBench reports these per subset (gsm8k, math, olympiadbench, omnimath) and their mean
F1. Differences from the reference scripts: values are fractions in [0, 1], not percentages;
an empty class gives None instead of NaN (JSON-safe); f1 is 0.0, not NaN, when both accs are 0.

The threshold can be calibrated on one subset (`calibrate_threshold`) and applied to others.
For one row, pred(tau) = label(x) exactly when tau lies in an interval, which makes a whole
F1-vs-threshold curve a pair of sorted searches (`f1_curve`):

    correct row:              tau <= min_i s_i
    erroneous row, label k:   s_k < tau <= min_{i<k} s_i    (the min over no steps is +inf)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prmflow.io import Line, check_unique_ids, iter_jsonl

# --------------------------------------------------------------------------- loading


def load_processbench(path: str | os.PathLike[str], subset: str | None = None) -> list[dict[str, Any]]:
    """Read and validate a ProcessBench JSONL file; every row is returned or a DataError raised.

    Row format: {"id": str, "generator": str, "problem": str, "steps": [str, ...],
    "final_answer_correct": bool, "label": int}. `generator` may be missing or null (-> "").
    Checks: types (bool is not an int), `steps` a non-empty list of str, -1 <= label <
    len(steps), label == -1 only with final_answer_correct (all steps right => right answer),
    unique ids, at least one row. Each returned row holds exactly those six fields plus
    `subset` (default: the file stem, e.g. "gsm8k.jsonl" -> "gsm8k"); other fields are dropped.
    """
    subset = Path(path).stem if subset is None else subset
    if not subset:
        raise ValueError(f"{path}: empty subset name")
    lines = list(iter_jsonl(path))  # DataError on a missing/empty file, invalid JSON, non-UTF-8
    rows = [_parse_row(line, subset) for line in lines]
    check_unique_ids(lines)
    return rows


def _parse_row(line: Line, subset: str) -> dict[str, Any]:
    rid = line.get("id", str)
    generator = line.get("generator", str, required=False, default="")
    problem = line.get("problem", str)
    steps = line.get("steps", list)
    if not steps:
        raise line.error("steps", "empty list (a solution has at least one step)")
    for i, step in enumerate(steps):
        if not isinstance(step, str):
            raise line.error(f"steps[{i}]", f"expected str, got {type(step).__name__}")
    label = line.get("label", int)
    if not -1 <= label < len(steps):
        raise line.error("label", f"{label} is out of range: need -1 <= label < len(steps) = {len(steps)}")
    final_answer_correct = line.get("final_answer_correct", bool)
    if label == -1 and not final_answer_correct:
        raise line.error("label", "-1 (every step right) but final_answer_correct is false")
    return {
        "id": rid,
        "generator": generator,
        "problem": problem,
        "steps": steps,
        "final_answer_correct": final_answer_correct,
        "label": label,
        "subset": subset,
    }


# --------------------------------------------------------------------------- metrics


def predict_first_error(scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scoring below `threshold`, or -1 (no steps -> -1).

    Every score is checked, also those after the first error: a NaN anywhere is an error.

    >>> predict_first_error([0.9, 0.7, 0.3, 0.8], 0.5), predict_first_error([0.9, 0.5], 0.5)
    (2, -1)
    """
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    s = [float(x) for x in scores]
    for i, x in enumerate(s):
        if not math.isfinite(x):
            raise ValueError(f"non-finite score {x} at step index {i}")
    return next((i for i, x in enumerate(s) if x < threshold), -1)


def _from_counts(error_hits: int, n_err: int, correct_hits: int, n_correct: int) -> dict[str, Any]:
    """The three ProcessBench numbers from match counts; None where a class is empty."""
    e = error_hits / n_err if n_err else None
    c = correct_hits / n_correct if n_correct else None
    f1 = None if e is None or c is None else (2 * e * c / (e + c) if e + c > 0 else 0.0)
    return {"error_acc": e, "correct_acc": c, "f1": f1, "n_err": n_err, "n_correct": n_correct}


def processbench_metrics(labels: Sequence[int], preds: Sequence[int]) -> dict[str, Any]:
    """error_acc, correct_acc, f1 (see the module docstring), n_err and n_correct.

    With no erroneous rows error_acc is None, with no correct rows correct_acc is None, and f1
    is None if either is. Never NaN.

    >>> m = processbench_metrics([2, 0, -1, -1], [2, 1, -1, 0])  # 1/2 errors, 1/2 correct
    >>> m["error_acc"], m["correct_acc"], m["f1"]
    (0.5, 0.5, 0.5)
    """
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    error_hits = n_err = correct_hits = n_correct = 0
    for i, (label, pred) in enumerate(zip(labels, preds)):
        if label < -1 or pred < -1:
            raise ValueError(f"row {i}: label {label} / pred {pred} below -1")
        if label == -1:
            n_correct += 1
            correct_hits += pred == -1
        else:
            n_err += 1
            error_hits += pred == label
    return _from_counts(error_hits, n_err, correct_hits, n_correct)


def evaluate_subsets(
    rows: Sequence[Mapping[str, Any]], scores_by_id: Mapping[str, Sequence[float]], threshold: float
) -> dict[str, Any]:
    """Score loaded rows at one threshold: per-subset metrics, their mean F1, per-row predictions.

    Every row needs scores (one per step) under its id; extra ids in `scores_by_id` are ignored,
    so one score table can serve several subsets. `mean_f1` averages the subsets whose f1 is
    not None (None if there are none). Subsets keep their order of first appearance.
    Returns {"threshold", "subsets": {name: metrics}, "mean_f1", "predictions": [{"id",
    "subset", "pred", "label", "scores"}, ...]}.
    """
    predictions: list[dict[str, Any]] = []
    by_subset: dict[str, tuple[list[int], list[int]]] = {}
    for row in rows:
        rid = row["id"]
        if rid not in scores_by_id:
            raise ValueError(f"no scores for id {rid!r}")
        scores = [float(s) for s in scores_by_id[rid]]
        if len(scores) != len(row["steps"]):
            raise ValueError(f"id {rid!r}: {len(scores)} scores for {len(row['steps'])} steps")
        try:
            pred = predict_first_error(scores, threshold)
        except ValueError as e:
            raise ValueError(f"id {rid!r}: {e}") from None
        labels, preds = by_subset.setdefault(row["subset"], ([], []))
        labels.append(row["label"])
        preds.append(pred)
        predictions.append({"id": rid, "subset": row["subset"], "pred": pred, "label": row["label"], "scores": scores})
    subsets = {name: processbench_metrics(lab, pred) for name, (lab, pred) in by_subset.items()}
    f1s = [m["f1"] for m in subsets.values() if m["f1"] is not None]
    return {
        "threshold": threshold,
        "subsets": subsets,
        "mean_f1": sum(f1s) / len(f1s) if f1s else None,
        "predictions": predictions,
    }


# --------------------------------------------------------------------------- threshold


def _match_intervals(labels: Sequence[int], scores_list: Sequence[Sequence[float]]):
    """Per-row threshold intervals on which pred == label (module docstring), sorted for search."""
    if len(labels) != len(scores_list):
        raise ValueError(f"{len(labels)} labels but {len(scores_list)} score lists")
    lo, hi, cmin = [], [], []  # erroneous rows: lo < tau <= hi; correct rows: tau <= cmin
    n_err = 0
    for r, (label, scores) in enumerate(zip(labels, scores_list)):
        s = np.asarray(scores, dtype=np.float64)
        if not -1 <= label < len(s):
            raise ValueError(f"row {r}: label {label} out of range for {len(s)} scores")
        bad = np.flatnonzero(~np.isfinite(s))
        if bad.size:
            raise ValueError(f"row {r}: non-finite score {s[bad[0]]} at step index {bad[0]}")
        if label == -1:
            cmin.append(s.min() if s.size else math.inf)
            continue
        n_err += 1
        before = s[:label].min() if label > 0 else math.inf
        if s[label] < before:  # otherwise an earlier step always fires first: never a match
            lo.append(s[label])
            hi.append(before)
    return np.sort(lo), np.sort(hi), np.sort(cmin), n_err


def f1_curve(
    labels: Sequence[int], scores_list: Sequence[Sequence[float]], thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """Metrics at each threshold, in the given order: [{"threshold", "error_acc", ...}, ...].

    Same numbers as `predict_first_error` + `processbench_metrics` row by row, in
    O((rows + thresholds) log rows).
    """
    lo, hi, cmin, n_err = _match_intervals(labels, scores_list)
    t = np.asarray(thresholds, dtype=np.float64)
    if np.isnan(t).any():
        raise ValueError("NaN threshold")
    # (eq. in the module docstring) #(lo < t <= hi) = #(lo < t) - #(hi < t), since lo < hi
    error_hits = np.searchsorted(lo, t, side="left") - np.searchsorted(hi, t, side="left")
    correct_hits = len(cmin) - np.searchsorted(cmin, t, side="left")  # #(t <= cmin)
    return [
        {"threshold": float(tk), **_from_counts(int(e), n_err, int(c), len(cmin))}
        for tk, e, c in zip(t, error_hits, correct_hits)
    ]


def default_candidates(scores_list: Sequence[Sequence[float]]) -> list[float]:
    """0, 1 and the midpoints between consecutive distinct step scores, sorted.

    Between two neighbouring scores every threshold gives the same predictions, so for scores
    in [0, 1] these cover every distinct outcome. For other score ranges pass candidates.
    """
    flat = [float(s) for scores in scores_list for s in scores]
    u = np.unique(np.asarray(flat, dtype=np.float64))
    mids = (u[:-1] + u[1:]) / 2
    mids = np.where(mids > u[:-1], mids, u[1:])  # adjacent floats: the midpoint rounds down
    return sorted({0.0, 1.0, *map(float, mids)})


def calibrate_threshold(
    labels: Sequence[int], scores_list: Sequence[Sequence[float]], candidates: Sequence[float] | None = None
) -> tuple[float, float]:
    """The candidate threshold with the highest F1 on these rows, and that F1.

    Ties: the candidate closest to 0.5 wins (the usual uncalibrated threshold), then the
    smaller one. Needs both erroneous and correct rows (else F1 is undefined: ValueError).
    Candidates default to `default_candidates(scores_list)`.

    >>> calibrate_threshold([-1, 1], [[0.9, 0.9], [0.9, 0.2]])  # any tau in (0.2, 0.9] works
    (0.55, 1.0)
    """
    cands = default_candidates(scores_list) if candidates is None else list(candidates)
    if not cands:
        raise ValueError("no candidate thresholds")
    curve = f1_curve(labels, scores_list, cands)
    if curve[0]["f1"] is None:
        raise ValueError(
            f"calibration needs erroneous and correct rows (got {curve[0]['n_err']} and {curve[0]['n_correct']})"
        )
    best = min(curve, key=lambda p: (-p["f1"], abs(p["threshold"] - 0.5), p["threshold"]))
    return best["threshold"], best["f1"]
