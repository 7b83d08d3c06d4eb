"""What stage `active` reads and reports: the pool and eval rows, the summary, gain targets, metric names.

The flow (flows/active.py) runs one ActPRM loop per (strategy, seed) and hands the results here:
`runs[strategy][seed]` is `run_active_learning`'s dict (`final_f1`, `labels_spent`, `curve`,
`history`, `cost`, `rounds`, ...). Everything but the two readers is pure.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from prmflow import io
from prmflow.active.compare import initial_f1, paired_at_budget, paired_plateau, summarize

Runs = Mapping[str, Mapping[int, Mapping[str, Any]]]
ORDER = ("full", "active", "random")
"""run order: random matches active's per-round label counts, so it runs after active"""


def strategy_order(strategies: Sequence[str]) -> list[str]:
    """The configured strategies, once each, in run order.

    >>> strategy_order(["random", "active", "full", "active"])
    ['full', 'active', 'random']
    """
    return sorted(dict.fromkeys(strategies), key=list(ORDER).index)


def load_pool(path: str, problems: Mapping[str, Any], cap: int) -> list[dict[str, Any]]:
    """Segmented solutions with at least one step whose problem is known; the first `cap` by id (0 = all)."""
    rows: list[dict[str, Any]] = []
    for line in io.iter_jsonl(path):
        rid, pid, steps = line.get("id", str), line.get("problem_id", str), line.get("steps", list)
        line.get("prompt", str)
        if pid not in problems:
            raise line.error("problem_id", f"problem {pid!r} is not in the problems file")
        if steps:
            rows.append(
                {k: line.row[k] for k in ("id", "problem_id", "prompt", "steps", "gold_labels") if k in line.row}
            )
            rows[-1]["id"] = rid
    rows.sort(key=lambda r: r["id"])
    return rows[:cap] if cap else rows


def load_eval(path: str, size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Synthetic ProcessBench rows (with their `subset`); a seeded sample of `size` of them (0 = all)."""
    rows = []
    for line in io.iter_jsonl(path, allow_empty=True):  # a tiny config can leave it empty: no F1 then
        rows.append(
            {
                "id": line.get("id", str),
                "problem": line.get("problem", str),
                "steps": line.get("steps", list),
                "label": line.get("label", int),
                "subset": line.get("subset", str),
            }
        )
    if size and size < len(rows):
        keep = set(random.Random(seed).sample(range(len(rows)), size))
        rows = [r for i, r in enumerate(rows) if i in keep]
    return rows


def run_metrics(res: Mapping[str, Any], seconds: float) -> dict[str, float]:
    """One (strategy, seed) run's final MLflow metrics (`active/final_f1` only when it was scored).

    >>> run_metrics({"final_f1": None, "labels_spent": 4}, 1.5)
    {'active/labels_spent': 4, 'active/seconds': 1.5}
    """
    final = {"active/final_f1": res["final_f1"]} if res["final_f1"] is not None else {}
    return {**final, "active/labels_spent": res["labels_spent"], "active/seconds": seconds}


def stage_summary(
    runs: Runs,
    seconds: Mapping[str, Sequence[float]],
    match_fractions: Sequence[float],
    final_window: int,
    data: Mapping[str, Any],
) -> dict[str, Any]:
    """reports/active/summary.json: `summarize`'s per-strategy numbers plus the last evaluation's
    F1, seconds and labeler cost per run, `paired` (final F1 per seed at the budget active spent;
    random spends the same), `plateau` and `data` (`rounds` is added from the first run)."""
    summary = summarize(runs, match_fractions, final_window)
    for s in seconds:
        summary[s]["final_f1_last_eval"] = {str(seed): r["final_f1"] for seed, r in runs[s].items()}
        summary[s]["seconds_per_run"] = sum(seconds[s]) / len(seconds[s])
        summary[s]["labeler_cost"] = {str(seed): r["cost"] for seed, r in runs[s].items()}
    summary["paired"] = paired_at_budget(runs, final_window)
    summary["plateau"] = paired_plateau(runs)
    summary["data"] = dict(data)
    return summary


def data_summary(
    runs: Runs, pool: Sequence[Any], eval_rows: Sequence[Mapping[str, Any]], labeler: str, backbone_passes: int | None
) -> dict[str, Any]:
    """The summary's `data`: pool and eval sizes, rounds per run, labeler, backbone passes (None without a
    feature cache: solutions featurized by the frozen backbone for all runs together)."""
    return {
        "pool": len(pool),
        "eval_rows": len(eval_rows),
        "eval_test_rows": sum(r["subset"] == "test" for r in eval_rows),
        "rounds": next(iter(next(iter(runs.values())).values()))["rounds"] if pool else 0,
        "labeler": labeler,
        "backbone_passes": backbone_passes,
    }


def curves(runs: Runs) -> dict[str, dict[str, Any]]:
    """reports/active/curves.json: every run's round history, by strategy and seed."""
    return {s: {str(seed): r["history"] for seed, r in by.items()} for s, by in runs.items()}


def gain_targets(summary: Mapping[str, Any], runs: Runs, match_fractions: Sequence[float]) -> dict[str, float]:
    """The F1 levels `initial + q x full's gain` drawn on the curve plot (none without a full F1)."""
    if "full" not in summary or summary["full"]["final_f1"]["mean"] is None:
        return {}
    f0 = sum(initial_f1(r["curve"]) for r in runs["full"].values()) / len(runs["full"])
    gain = summary["full"]["final_f1"]["mean"] - f0
    return {f"initial + {q:g} x full's gain": f0 + q * gain for q in match_fractions}


def stage_metrics(summary: Mapping[str, Any], strategies: Sequence[str]) -> list[dict[str, float]]:
    """The stage run's MLflow metrics, in logging batches: per strategy `active/<s>/final_f1_mean`,
    `labels_spent_mean`, `labels_fraction_at_<q>` (None left out), then `active/paired/...` and
    `active/plateau/...` means."""
    out = []
    for s in strategies:
        metrics = {
            f"active/{s}/final_f1_mean": summary[s]["final_f1"]["mean"],
            f"active/{s}/labels_spent_mean": summary[s]["labels_spent"]["mean"],
        }
        for q, m in summary[s].get("match", {}).items():
            metrics[f"active/{s}/labels_fraction_at_{q}"] = m["fraction_of_full"]["mean"]
        out.append({k: v for k, v in metrics.items() if v is not None})
    for name in ("paired", "plateau"):
        out.append({f"active/{name}/{k}": v["mean"] for k, v in summary[name].items() if isinstance(v, dict)})
    return out


def summary_lines(summary: Mapping[str, Any], strategies: Sequence[str]) -> list[str]:
    lines = []
    for s in strategies:
        m = summary[s]
        match = {q: v["fraction_of_full"]["mean"] for q, v in m.get("match", {}).items()}
        lines.append(
            f"  {s:>6}: final F1 {m['final_f1']['mean']} +- {m['final_f1']['std']}, labels "
            f"{m['labels_spent']['mean']} +- {m['labels_spent']['std']}, labels/full to reach q of full's gain: {match}"
        )
    for name in ("paired", "plateau"):
        for k, v in summary[name].items():
            if isinstance(v, dict):
                lines.append(f"  {name} {k}: {v['mean']:.4f} [{v['lo']}, {v['hi']}] over {v['n']} seeds")
    return lines
