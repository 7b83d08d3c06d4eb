"""Summaries of stage outputs, and the checks that a real-data run is not degenerate.

Pure functions over the rows a stage writes (no I/O): the flows call them and log the result.

Real problems (GSM8K, MATH) have no step-level truth: their generation rows carry
`first_error_char = None`, their segments `gold_labels = None`, and every gold-label statistic is
reported as `None` ("n/a") instead of a number. A real run is *degenerate* when its numbers cannot
mean anything: a solve rate of 0 or 1 (MC labels are then all one class), step labels that are
all one class (a PRM trained on them learns a constant), or an evaluation with no rows. The
stages print these loudly, tag them in MLflow, and fail (`DegenerateRun`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prmflow import answers
from prmflow.label.quality import label_quality


class DegenerateRun(RuntimeError):
    """A stage's real-data output cannot carry a meaningful number (see the module docstring)."""


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / max(1, len(xs))


def has_gold(rows: Sequence[Mapping[str, Any]], key: str) -> bool:
    """Whether rows carry exact step-level truth under `key` (all of them or none of them).

    >>> has_gold([{"g": [True]}, {"g": [False]}], "g"), has_gold([{"g": None}], "g"), has_gold([], "g")
    (True, False, False)
    """
    known = [r.get(key) is not None for r in rows]
    if any(known) and not all(known):
        raise ValueError(f"some rows have '{key}' and some do not: synthetic and real rows are mixed")
    return bool(known) and all(known)


def step_lengths(seg: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int]]:
    """Steps per solution and tokens per step (stage `segment`'s two histograms).

    >>> step_lengths([{"starts": [0, 3], "ends": [3, 5], "steps": ["a", "b"]}])
    ([2], [3, 2])
    """
    n_steps = [len(r["steps"]) for r in seg]
    lengths = [e - s for r in seg for s, e in zip(r["starts"], r["ends"], strict=True)]
    return n_steps, lengths


def segment_stats(
    seg: Sequence[Mapping[str, Any]], skipped_empty: int, threshold: float, calibration: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What stage `segment` reports: step counts and lengths, and gold step correctness
    (`frac_gold_correct_steps` is None for real problems); the threshold calibration last,
    when there was one."""
    n_steps, lengths = step_lengths(seg)
    gold = [g for r in seg for g in r["gold_labels"]] if has_gold(seg, "gold_labels") else None
    stats = {
        "n_solutions": len(seg),
        "skipped_empty": skipped_empty,
        "threshold": threshold,
        "mean_steps": sum(n_steps) / max(1, len(seg)),
        "max_steps": max(n_steps, default=0),
        "mean_step_tokens": sum(lengths) / max(1, len(lengths)),
        "frac_gold_correct_steps": (sum(gold) / max(1, len(gold))) if gold is not None else None,
        "frac_one_step": sum(n == 1 for n in n_steps) / max(1, len(seg)),
    }
    if calibration is not None:
        stats["calibration"] = calibration
    return stats


def calibration_warning(cal: Mapping[str, Any] | None) -> str | None:
    """Why a calibrated entropy threshold misses its target (not met, or most cuts forced by
    max_len), else None.

    >>> calibration_warning({"met": True, "forced_fraction": 0.1}) is None
    True
    >>> calibration_warning({"met": False, "forced_fraction": 0.6, "tau": 0.5, "mean_steps": 9.0,
    ...                      "target_mean_steps": 4, "note": ""})
    'calibrated threshold 0.5 gives 9.00 steps per solution (60% forced by max_len) for a target of 4: mostly forced cuts'
    """
    if cal is None or not (not cal["met"] or cal["forced_fraction"] > 0.5):
        return None
    return (
        f"calibrated threshold {cal['tau']:.4g} gives {cal['mean_steps']:.2f} steps per solution "
        f"({cal['forced_fraction']:.0%} forced by max_len) for a target of {cal['target_mean_steps']}: "
        f"{cal['note'] or 'mostly forced cuts'}"
    )


def token_entropies(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """Every token's entropy over all rows, in order (the entropy histograms).

    >>> token_entropies([{"entropy": [0.5, 1.0]}, {"entropy": [2.0]}])
    [0.5, 1.0, 2.0]
    """
    return [h for r in rows for h in r["entropy"]]


def numeric(stats: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The int and float values of a stats dict as `<prefix><key>` MLflow metrics (None, str,
    dict and list values are left out; bools count as ints, as before).

    >>> numeric({"a": 1, "b": None, "c": "x", "d": 0.5, "e": {"f": 1}}, "segment/")
    {'segment/a': 1, 'segment/d': 0.5}
    """
    return {f"{prefix}{k}": v for k, v in stats.items() if isinstance(v, (int, float))}


def metrics_file(batches: Iterable[tuple[Mapping[str, float], int | None]], prefix: str) -> dict[str, float]:
    """A stage's DVC metrics file from the batches it logs to MLflow: each metric `<prefix><key>`
    as `<key>`, with the value at its last step (what the MLflow UI shows as the metric's value),
    so `dvc metrics show` and MLflow name the same number alike (`reports/eval.json: prm/f1` is
    MLflow's `eval/prm/f1`).

    >>> metrics_file([({"eval/prm/f1": 0.5}, None), ({"eval/bon/oracle": 0.25}, 1),
    ...               ({"eval/bon/oracle": 0.75}, 4)], "eval/")
    {'bon/oracle': 0.75, 'prm/f1': 0.5}
    """
    last: dict[str, tuple[int, float]] = {}
    for metrics, step in batches:
        for name, value in metrics.items():
            if not name.startswith(prefix):
                raise ValueError(f"metric {name!r} is not under {prefix!r}")
            if name not in last or (step or 0) >= last[name][0]:
                last[name] = (step or 0, value)
    return {name[len(prefix) :]: last[name][1] for name in sorted(last)}


def label_balance(labeled: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per step position: how many steps were labeled there, and the fraction labeled right (hard
    labels), the picture of a label set's class balance.

    >>> label_balance([{"labels": [True, False]}, {"labels": [True, True, False]}])
    {'steps': [2, 2, 1], 'frac_true': [1.0, 0.5, 0.0]}
    """
    width = max((len(r["labels"]) for r in labeled), default=0)
    steps: list[float] = [sum(1 for r in labeled if len(r["labels"]) > i) for i in range(width)]
    true = [sum(1 for r in labeled if len(r["labels"]) > i and r["labels"][i]) for i in range(width)]
    return {"steps": steps, "frac_true": [t / n for t, n in zip(true, steps)]}


def label_stats(labeled: Sequence[Mapping[str, Any]], cost: Mapping[str, int]) -> dict[str, Any]:
    """What stage `label` reports: agreement with gold labels (`quality_*`, None for real
    problems), query cost, and the class balance of the hard labels (`frac_labels_true`)."""
    steps = sum(len(r["labels"]) for r in labeled)
    if has_gold(labeled, "gold_labels"):
        quality = label_quality([r["labels"] for r in labeled], [r["gold_labels"] for r in labeled])
        soft_right = [s for r in labeled for s, g in zip(r["soft_labels"], r["gold_labels"]) if g]
        soft_wrong = [s for r in labeled for s, g in zip(r["soft_labels"], r["gold_labels"]) if not g]
        soft_gold: dict[str, float | None] = {
            "mean_soft_gold_correct": _mean(soft_right),
            "mean_soft_gold_wrong": _mean(soft_wrong),
        }
    else:
        quality = {
            "step_acc": None,
            "first_error_acc": None,
            "wrong_precision": None,
            "wrong_recall": None,
            "n_solutions": len(labeled),
            "n_steps": steps,
        }
        soft_gold = {"mean_soft_gold_correct": None, "mean_soft_gold_wrong": None}
    return {
        **{f"quality_{k}": v for k, v in quality.items()},
        **{f"cost_{k}": v for k, v in cost.items()},
        "rollouts_per_step": cost["rollouts"] / max(1, steps),
        "tokens_per_step": cost["generated_tokens"] / max(1, steps),
        **soft_gold,
        "frac_labels_true": sum(x for r in labeled for x in r["labels"]) / max(1, steps),
    }


# --------------------------------------------------------------------------- degenerate runs


def solve_rate_problem(solve_rate: float, n: int) -> str | None:
    """Why a solve rate makes MC labels meaningless, or None.

    >>> solve_rate_problem(0.0, 64)
    'solve rate 0.000 over 64 completions: no completion reaches the right answer, so every MC label is 0'
    >>> solve_rate_problem(0.25, 64) is None
    True
    """
    if n == 0:
        return "no completions"
    if solve_rate <= 0.0:
        return f"solve rate 0.000 over {n} completions: no completion reaches the right answer, so every MC label is 0"
    if solve_rate >= 1.0:
        return f"solve rate 1.000 over {n} completions: every completion is right, so every MC label is 1"
    return None


def label_balance_problem(labels: Sequence[Sequence[bool]]) -> str | None:
    """Why a set of step labels cannot train a PRM (none, or all one class), or None.

    >>> label_balance_problem([[True, True], [True]])
    'all 3 step labels are True: a PRM trained on one class learns a constant'
    >>> label_balance_problem([[True, False]]) is None
    True
    """
    flat = [bool(x) for row in labels for x in row]
    if not flat:
        return "no step labels"
    if all(flat) or not any(flat):
        return f"all {len(flat)} step labels are {flat[0]}: a PRM trained on one class learns a constant"
    return None


def is_real(problems: Sequence[Mapping[str, Any]]) -> bool:
    """Whether problem rows come from a real source (GSM8K, MATH: their rows name a `source`).

    >>> is_real([{"id": "synth-1"}]), is_real([{"id": "gsm8k-3", "source": "gsm8k"}])
    (False, True)
    """
    return any(answers.is_real(p) for p in problems)


def degenerate_message(stage: str, problems: Sequence[str | None]) -> str | None:
    """One message naming the stage and every problem found (Nones are fine), or None.

    >>> degenerate_message("label", [None, "no step labels"])
    'label: degenerate real-data run: no step labels'
    """
    found = [p for p in problems if p]
    return f"{stage}: degenerate real-data run: " + "; ".join(found) if found else None


def generate_stats(
    rows: Sequence[Mapping[str, Any]], tree_rows: Sequence[Mapping[str, Any]], n_problems: int
) -> dict[str, Any]:
    """What stage `generate` reports: tokens, entropy, solve rate and the truncated share
    (`finish_reason == "length"`: the budget ran out before the answer)."""
    ents = [h for r in rows for h in r["entropy"]]
    n_tok = len(ents)
    truncated = sum(r["finish_reason"] == "length" for r in rows)
    return {
        "n_problems": n_problems,
        "n_completions": len(rows),
        "generated_tokens": n_tok,
        "mean_tokens": n_tok / max(1, len(rows)),
        "mean_entropy": sum(ents) / max(1, n_tok),
        "frac_tokens_entropy_gt_1": sum(h > 1.0 for h in ents) / max(1, n_tok),
        "solve_rate": sum(r["final_correct"] for r in rows) / max(1, len(rows)),
        "truncated": truncated,
        "truncated_fraction": truncated / max(1, len(rows)),
        "tree_branches": len(tree_rows),
        "tree_generated_tokens": sum(r["suffix_tokens"] for r in tree_rows),
        "tree_flattened_tokens": sum(len(r["token_ids"]) for r in tree_rows),
        "tree_solve_rate": sum(r["final_correct"] for r in tree_rows) / max(1, len(tree_rows)),
    }


def real_summary(reports: Mapping[str, Mapping[str, Any]], run_info: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The real profile's headline numbers from its stage reports (`generate`, `segment`,
    `label`, `train`, `bon`: the JSON each stage wrote) and every stage's `--run-info`
    (`wall_s`, `peak_rss_mib`).

    `wall_s` adds the stages' wall times (the pipeline runs them one after another) and
    `peak_rss_mib` is the largest stage's peak. `degenerate` lists what makes the run's
    numbers meaningless (empty when none).
    """
    gen, lab, bon = reports["generate"], reports["label"], reports.get("bon") or {}
    n_steps = lab["quality_n_steps"]
    positive = lab["frac_labels_true"]
    table = {
        picker: dict(zip((str(n) for n in bon.get("ns", [])), accs, strict=True))
        for picker, accs in (bon.get("accuracy") or {}).items()
    }
    problems = [
        solve_rate_problem(gen["solve_rate"], gen["n_completions"]),
        None if 0 < positive < 1 else f"all {n_steps} step labels are {positive == 1}",
        None if table else "no Best-of-N table",
    ]
    return {
        "solve_rate": gen["solve_rate"],
        "n_completions": gen["n_completions"],
        "truncated_fraction": gen["truncated_fraction"],
        "mean_tokens": gen["mean_tokens"],
        "segment": {k: reports["segment"][k] for k in ("threshold", "mean_steps", "mean_step_tokens", "frac_one_step")},
        "labels": {
            "n_solutions": lab["quality_n_solutions"],
            "n_steps": n_steps,
            "frac_true": positive,
            "frac_false": 1 - positive if n_steps else None,
            "rollouts": lab["cost_rollouts"],
            "rollout_tokens": lab["cost_generated_tokens"],
        },
        "train": {k: v for k, v in reports.get("train", {}).items() if isinstance(v, (int, float, str)) or v is None},
        "best_of_n": {"n_problems": bon.get("n_problems"), "accuracy": table},
        "wall_s": round(sum(r["wall_s"] for r in run_info.values()), 1),
        "wall_s_by_stage": {s: r["wall_s"] for s, r in run_info.items()},
        "peak_rss_mib": max((r["peak_rss_mib"] for r in run_info.values()), default=None),
        "peak_rss_mib_by_stage": {s: r["peak_rss_mib"] for s, r in run_info.items()},
        "degenerate": [p for p in problems if p],
    }
