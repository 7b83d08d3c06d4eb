r"""Compare labeling strategies by their F1-vs-labels curves: the numbers behind ActPRM's claim.

ActPRM (arXiv 2504.10559) claims ProcessBench F1 comparable to full labeling with about half
the labels. A run's curve is its evaluations in round order, (labels_spent_i, F1_i). One
evaluation is noisy (a small calib subset fits the threshold), so F1 is read through a trailing
mean over the last `window` evaluations (fewer at the start; evaluations with F1 None skipped):

    F1~_i            = mean(F1_{i-window+1}, ..., F1_i)
    final F1         = F1~ at the last evaluation          (the mean of the last `window` ones)

For one seed s, every strategy starts from the same PRM, whose F1 before any label is f0_s
(the evaluation at 0 labels, 0.0 if there is none). Let full_s be the final F1 of strategy
`full` and N_s the labels it spent (the whole pool). Matched F1 is a fraction q (e.g. 0.95 or
1.0) of the GAIN that full labeling brings, and the labels strategy S needs to get there are

    target_s(q)      = f0_s + q * (full_s - f0_s)
    labels_S,s(q)    = labels_spent at the first evaluation with F1~ >= target_s(q); None if none
    fraction_S,s(q)  = labels_S,s(q) / N_s              (< 1: S needs fewer labels than full spent)

A seed where full ends no better than it started (full_s <= f0_s) has no gain to match and is
left out (`full_gain` says so). `full` gets the same numbers (with q = 1.0 it reaches its own
final F1 at the latest at its last evaluation), so "full already reaches 95% of its gain at 30%
of its labels" shows next to active's fraction. Means and stds go over the seeds that reached
the target (`reached` counts them); std is the sample std (0.0 for one value, None for none).

    >>> curve = [{"labels_spent": 0, "f1": 0.2}, {"labels_spent": 10, "f1": 0.6}, {"labels_spent": 20, "f1": 0.4}]
    >>> smooth(curve, 2)                       # (0.2), (0.2 + 0.6) / 2, (0.6 + 0.4) / 2
    [0.2, 0.4, 0.5]
    >>> labels_to_reach(curve, 0.5), labels_to_reach(curve, 0.5, window=2), labels_to_reach(curve, 0.7)
    (10, 20, None)
    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 1.0)

The early part of every curve is steep and alike: while the ensemble is unsure of everything,
`active` labels almost every solution, so "labels to reach 95% of full's gain" mostly measures
how fast any labels lift F1. Whether the *selection* pays shows at the end of the curves, at
the budget active spent. `paired_at_budget` compares, per seed s (all strategies of a seed
share the initial PRM and the pool order; `random` spends active's per-round counts):

    active_minus_random_s = final F1 active_s - final F1 random_s     (> 0: the selection pays)
    active_minus_full_s   = final F1 active_s - final F1 full_s       (comparable F1 if ~ 0)
    label_fraction_s      = labels active_s / labels full_s           (1 - saving)

each with its mean and Student-t interval over seeds (`prmflow.stats.mean_ci`).

The final F1 reads one model, late in a stream whose F1 has long plateaued, so most of its
spread across seeds is the jitter of the last updates. `paired_plateau` reads the whole plateau
instead: with R the last round a seed's curves share and E_s the evaluation rounds t > start * R
that both strategies evaluated,

    plateau a_minus_b_s  = mean over t in E_s of (F1_a,s(t) - F1_b,s(t))

(raw F1, no trailing mean). Active and random are evaluated at the same rounds and, random
spending active's per-round counts, with the same labels spent, so each term is a comparison at a
matched budget; against full, the same round is the same stream position with fewer labels.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from prmflow.stats import mean_ci


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std; (None, None) for no values, std 0.0 for one."""
    vals = [float(v) for v in values]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def smooth(curve: Sequence[Mapping[str, Any]], window: int = 1) -> list[float]:
    """F1~ at each evaluation with an F1 (trailing mean over `window` of them)."""
    f1s = [float(p["f1"]) for p in curve if p.get("f1") is not None]
    return [statistics.fmean(f1s[max(0, i - window + 1) : i + 1]) for i in range(len(f1s))]


def labels_to_reach(curve: Sequence[Mapping[str, Any]], target: float, window: int = 1) -> int | None:
    """labels_spent at the first evaluation whose F1~ >= target (None if never)."""
    points = [p for p in curve if p.get("f1") is not None]
    return next((int(p["labels_spent"]) for p, f in zip(points, smooth(points, window)) if f >= target), None)


def final_f1(curve: Sequence[Mapping[str, Any]], window: int = 1) -> float | None:
    """F1~ at the last evaluation (None if no evaluation has an F1)."""
    s = smooth(curve, window)
    return s[-1] if s else None


def summarize(
    runs: Mapping[str, Mapping[Any, Mapping[str, Any]]], match_fractions: Sequence[float] = (0.95, 1.0), window: int = 1
) -> dict[str, Any]:
    """Per strategy: final F1 and labels spent (mean/std over seeds) and, when `full` was run,
    the labels needed to reach each target of the module docstring, per seed and mean/std.

    `runs[strategy][seed]` holds `curve` (evaluations with `labels_spent`, `f1`) and `labels_spent`.

    >>> runs = {"full": {0: {"curve": [{"labels_spent": 0, "f1": 0.2}, {"labels_spent": 8, "f1": 0.6}],
    ...                      "labels_spent": 8}},
    ...         "active": {0: {"curve": [{"labels_spent": 0, "f1": 0.2}, {"labels_spent": 4, "f1": 0.6}],
    ...                        "labels_spent": 4}}}
    >>> s = summarize(runs, [1.0])["active"]
    >>> s["final_f1"], s["labels_spent"], s["match"]["1.0"]["fraction_of_full"]   # 0.6 after 4 of 8 labels
    ({'mean': 0.6, 'std': 0.0}, {'mean': 4.0, 'std': 0.0}, {'mean': 0.5, 'std': 0.0, 'reached': 1, 'seeds': 1})
    """
    finals = {s: {seed: final_f1(r["curve"], window) for seed, r in by_seed.items()} for s, by_seed in runs.items()}
    full = runs.get("full", {})
    out: dict[str, Any] = {}
    for strategy, by_seed in runs.items():
        m, s = mean_std([f for f in finals[strategy].values() if f is not None])
        lm, ls = mean_std([r["labels_spent"] for r in by_seed.values()])
        entry: dict[str, Any] = {"final_f1": {"mean": m, "std": s}, "labels_spent": {"mean": lm, "std": ls}}
        if full:
            entry["match"] = {}
            for q in match_fractions:
                per_seed: dict[str, Any] = {}
                for seed, r in by_seed.items():
                    ref, ref_f1 = full.get(seed), finals["full"].get(seed)
                    if ref is None or ref_f1 is None or not ref["labels_spent"]:
                        continue
                    f0 = initial_f1(ref["curve"])
                    if ref_f1 <= f0:
                        per_seed[str(seed)] = {
                            "initial_f1": f0,
                            "full_gain": ref_f1 - f0,
                            "target_f1": None,
                            "labels": None,
                            "fraction_of_full": None,
                        }
                        continue
                    target = f0 + q * (ref_f1 - f0)
                    need = labels_to_reach(r["curve"], target, window)
                    per_seed[str(seed)] = {
                        "initial_f1": f0,
                        "full_gain": ref_f1 - f0,
                        "target_f1": target,
                        "labels": need,
                        "full_labels": ref["labels_spent"],
                        "fraction_of_full": None if need is None else need / ref["labels_spent"],
                    }
                fm, fs = mean_std(
                    [v["fraction_of_full"] for v in per_seed.values() if v["fraction_of_full"] is not None]
                )
                entry["match"][str(q)] = {
                    "per_seed": per_seed,
                    "fraction_of_full": {
                        "mean": fm,
                        "std": fs,
                        "reached": sum(v["labels"] is not None for v in per_seed.values()),
                        "seeds": sum(v["target_f1"] is not None for v in per_seed.values()),
                    },
                }
        out[strategy] = entry
    return out


def initial_f1(curve: Sequence[Mapping[str, Any]]) -> float:
    """F1 of the evaluation at 0 labels (before training), 0.0 if the curve has none."""
    return next((float(p["f1"]) for p in curve if p["labels_spent"] == 0 and p.get("f1") is not None), 0.0)


def mean_curve(curves: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, float]]:
    """Align seeds' curves by evaluation round; per round: mean labels_spent, mean/min/max F1 (raw).

    Rounds missing from some seed, or with any f1 None, are left out.

    >>> mean_curve([[{"round": 0, "labels_spent": 0, "f1": 0.25}, {"round": 2, "labels_spent": 6, "f1": 0.5}],
    ...             [{"round": 0, "labels_spent": 0, "f1": 0.75}, {"round": 2, "labels_spent": 10, "f1": 0.5}]])
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'round': 0, 'labels_spent': 0.0, 'f1_mean': 0.5, 'f1_min': 0.25, 'f1_max': 0.75},
     {'round': 2, 'labels_spent': 8.0, 'f1_mean': 0.5, 'f1_min': 0.5, 'f1_max': 0.5}]
    """
    by_round: list[dict[int, Mapping[str, Any]]] = [{int(p["round"]): p for p in c} for c in curves]
    common = sorted(set.intersection(*(set(d) for d in by_round))) if by_round else []
    out = []
    for t in common:
        pts = [d[t] for d in by_round]
        if any(p.get("f1") is None for p in pts):
            continue
        f1s = [float(p["f1"]) for p in pts]
        out.append(
            {
                "round": t,
                "labels_spent": statistics.fmean(float(p["labels_spent"]) for p in pts),
                "f1_mean": statistics.fmean(f1s),
                "f1_min": min(f1s),
                "f1_max": max(f1s),
            }
        )
    return out


def paired_at_budget(
    runs: Mapping[str, Mapping[Any, Mapping[str, Any]]], window: int = 1, level: float = 0.95
) -> dict[str, Any]:
    """The per-seed differences of the module docstring, for the seeds where both strategies have
    a final F1; {name: {"per_seed": {seed: value}, **mean_ci}} (None for a pair not run).

    >>> runs = {"full": {0: {"curve": [{"labels_spent": 0, "f1": 0.2}, {"labels_spent": 8, "f1": 0.7}], "labels_spent": 8}},
    ...         "active": {0: {"curve": [{"labels_spent": 0, "f1": 0.2}, {"labels_spent": 6, "f1": 0.7}], "labels_spent": 6}},
    ...         "random": {0: {"curve": [{"labels_spent": 0, "f1": 0.2}, {"labels_spent": 6, "f1": 0.6}], "labels_spent": 6}}}
    >>> p = paired_at_budget(runs)
    >>> round(p["active_minus_random"]["mean"], 6), p["active_minus_full"]["mean"], p["label_fraction"]["mean"]
    (0.1, 0.0, 0.75)
    """
    finals = {s: {seed: final_f1(r["curve"], window) for seed, r in by.items()} for s, by in runs.items()}

    def diff(a: str, b: str) -> dict[str, Any] | None:
        if a not in finals or b not in finals:
            return None
        return _per_seed_ci(
            {seed: None if f is None or (g := finals[b].get(seed)) is None else f - g for seed, f in finals[a].items()},
            level,
        )

    fraction = None
    if "active" in runs and "full" in runs:
        fraction = _per_seed_ci(
            {
                seed: r["labels_spent"] / runs["full"][seed]["labels_spent"]
                for seed, r in runs["active"].items()
                if seed in runs["full"] and runs["full"][seed]["labels_spent"]
            },
            level,
        )
    return {
        "window": window,
        "level": level,
        "active_minus_random": diff("active", "random"),
        "active_minus_full": diff("active", "full"),
        "label_fraction": fraction,
    }


def plateau_difference(
    a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], start: float = 0.5
) -> float | None:
    """Mean of F1_a(t) - F1_b(t) over the rounds t > start * R both curves evaluated (module docstring);
    None when there are none.

    >>> a = [{"round": 0, "f1": 0.2}, {"round": 2, "f1": 0.6}, {"round": 4, "f1": 0.7}, {"round": 6, "f1": 0.9}]
    >>> b = [{"round": 0, "f1": 0.2}, {"round": 2, "f1": 0.5}, {"round": 4, "f1": 0.6}, {"round": 6, "f1": 0.6}]
    >>> round(plateau_difference(a, b), 6), round(plateau_difference(a, b, start=0.0), 6)   # rounds 4, 6 / 2, 4, 6
    (0.2, 0.166667)
    """
    if not 0 <= start < 1:
        raise ValueError(f"start must be in [0, 1), got {start}")
    fa = {int(p["round"]): float(p["f1"]) for p in a if p.get("f1") is not None}
    fb = {int(p["round"]): float(p["f1"]) for p in b if p.get("f1") is not None}
    common = sorted(set(fa) & set(fb))
    if not common:
        return None
    rounds = [t for t in common if t > start * common[-1]]
    return statistics.fmean(fa[t] - fb[t] for t in rounds) if rounds else None


def paired_plateau(
    runs: Mapping[str, Mapping[Any, Mapping[str, Any]]], start: float = 0.5, level: float = 0.95
) -> dict[str, Any]:
    """Per seed, `plateau_difference` of active against random and against full, with mean and
    Student-t interval over seeds: {"start", "level", "active_minus_random", "active_minus_full"}
    (None for a pair not run)."""

    def diff(a: str, b: str) -> dict[str, Any] | None:
        if a not in runs or b not in runs:
            return None
        return _per_seed_ci(
            {
                seed: plateau_difference(r["curve"], runs[b][seed]["curve"], start)
                for seed, r in runs[a].items()
                if seed in runs[b]
            },
            level,
        )

    return {
        "start": start,
        "level": level,
        "active_minus_random": diff("active", "random"),
        "active_minus_full": diff("active", "full"),
    }


def _per_seed_ci(values: Mapping[Any, float | None], level: float) -> dict[str, Any] | None:
    """{"per_seed": {str(seed): value}, **mean_ci} over the seeds with a value; None if none has one."""
    vals = {str(k): float(v) for k, v in values.items() if v is not None}
    return {"per_seed": vals, **mean_ci(list(vals.values()), level)} if vals else None
