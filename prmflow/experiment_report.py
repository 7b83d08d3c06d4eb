"""The experiment suite's numbers -> sections of reports/REPORT.md, each with a table, plots and
a verdict on the paper's claim that is computed from the intervals, never written by hand.

Inputs are per-seed results (plain dicts, as the `experiments` flow collects them); every
reported number is `prmflow.stats.mean_ci` over seeds. A section is

    {"title", "claim", "columns", "rows", "plots", "verdict", "supported": bool | None, "numbers"}

`supported` is None when the data cannot decide (e.g. one seed, or the arm never got there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prmflow.stats import fmt, mean_ci

NON_INFERIORITY_F1 = 0.05
"""experiment 2: EDU data at 1.5% counts as "near-equal" when the CI of its F1 minus static MC's
F1 (paired by seed) lies above -0.05"""

ACTIVE_COMPARABLE_F1 = 0.02
"""experiment 4: ActPRM's final F1 is "comparable" to full labeling's when the CI of active minus
full (paired by seed) lies above -0.02"""

ACTIVE_HALF_LABELS = 0.6
"""experiment 4: "about 50% of the labels" accepts up to 60% of full labeling's"""


def noninferior(d: Mapping[str, Any], margin: float = NON_INFERIORITY_F1) -> bool | None:
    """True if the difference's interval lies above -margin, False if it lies below it, None if it
    straddles it (or there is no interval: one seed).

    >>> noninferior({"lo": -0.01, "hi": 0.05}), noninferior({"lo": -0.3, "hi": -0.1}), noninferior({"lo": -0.1, "hi": 0.1})
    (True, False, None)
    """
    if d.get("lo") is None:
        return None
    if d["lo"] > -margin:
        return True
    if d["hi"] < -margin:
        return False
    return None


def _word(supported: bool | None, yes: str, no: str) -> str:
    if supported is None:
        return "The interval is too wide to decide: **inconclusive** at this number of seeds."
    return yes if supported else no


def _ci_of(per_seed: Mapping[Any, Mapping[str, Any]], key: str, level: float) -> dict[str, Any]:
    return mean_ci([r[key] for r in per_seed.values()], level)


def _paired(a: Mapping[Any, float], b: Mapping[Any, float], level: float) -> dict[str, Any]:
    seeds = sorted(set(a) & set(b), key=str)
    return mean_ci([a[s] - b[s] for s in seeds], level)


def label_efficiency(per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]], level: float) -> dict[str, Any]:
    """per_seed[seed][scheme] = compare_schemes' record (step_acc, first_error_acc, tokens_per_solution, mean_steps)."""
    schemes = list(next(iter(per_seed.values())))
    numbers = {
        s: {
            k: mean_ci([per_seed[seed][s][k] for seed in per_seed], level)
            for k in ("step_acc", "first_error_acc", "tokens_per_solution", "mean_steps")
        }
        for s in schemes
    }
    rows = [
        [s, fmt(n["tokens_per_solution"], 0), fmt(n["mean_steps"], 2), fmt(n["step_acc"]), fmt(n["first_error_acc"])]
        for s, n in numbers.items()
    ]
    edu = next((s for s in schemes if s.startswith("edu_mc")), None)
    newline = next(
        (s for s in schemes if s.startswith("newline_mc") and edu and s[len("newline_mc") :] == edu[len("edu_mc") :]),
        None,
    )
    verdict, supported = "No EDU / newline pair at the same N to compare.", None
    if edu and newline:
        e, n = numbers[edu], numbers[newline]
        ratio = e["tokens_per_solution"]["mean"] / max(1e-9, n["tokens_per_solution"]["mean"])
        d = _paired(
            {s: per_seed[s][edu]["first_error_acc"] for s in per_seed},
            {s: per_seed[s][newline]["first_error_acc"] for s in per_seed},
            level,
        )
        supported = noninferior(d)
        verdict = (
            f"{edu} spends {ratio:.0%} of the rollout tokens of {newline} "
            f"({fmt(e['tokens_per_solution'], 0)} vs {fmt(n['tokens_per_solution'], 0)} per solution), "
            f"with first-error accuracy {fmt(e['first_error_acc'])} vs {fmt(n['first_error_acc'])} "
            f"(paired difference {fmt(d)}). Step accuracies are each scheme's own steps against gold: "
            f"EDU has {e['mean_steps']['mean']:.2f} steps per solution, newline {n['mean_steps']['mean']:.2f}, "
            "so first-error accuracy is the comparable number. "
            + _word(
                supported,
                "Cheaper labels of matching first-error quality: **supported**.",
                "Cheaper, but first-error quality falls short by more than the 0.05 margin: **not supported**.",
            )
        )
    return {
        "title": "1. Label efficiency",
        "claim": "EDU steps give labels as good as static newline MC at a fraction of the rollouts (EDU-PRM).",
        "columns": ["scheme", "rollout tokens / solution", "steps / solution", "step-label acc", "first-error acc"],
        "rows": rows,
        "plots": ["experiments/label_efficiency.png"],
        "verdict": verdict,
        "supported": supported,
        "numbers": numbers,
    }


def data_efficiency(
    edu: Mapping[float, Mapping[int, Mapping[str, Any]]], static: Mapping[int, Mapping[str, Any]], level: float
) -> dict[str, Any]:
    """edu[fraction][seed] and static[seed] = train_and_score records (f1, err_acc, correct_acc, label_tokens)."""
    numbers = {
        f"edu@{f:g}": {k: _ci_of(edu[f], k, level) for k in ("f1", "label_tokens", "train_rows")} for f in sorted(edu)
    }
    numbers["static@1"] = {k: _ci_of(static, k, level) for k in ("f1", "label_tokens", "train_rows")}
    rows = [[arm, fmt(n["label_tokens"], 0), fmt(n["train_rows"], 0), fmt(n["f1"])] for arm, n in numbers.items()]
    smallest = min(edu)
    d = _paired({s: r["f1"] for s, r in edu[smallest].items()}, {s: r["f1"] for s, r in static.items()}, level)
    supported = noninferior(d)
    verdict = (
        f"PRM F1 on EDU labels at {smallest:.1%} of the budget minus static MC at 100%: {fmt(d)} "
        f"(paired by seed; near-equal means the interval lies above -{NON_INFERIORITY_F1}). "
        + _word(
            supported,
            "Near-equal quality at the smallest budget: **supported**.",
            "Clearly worse at the smallest budget: **not supported**.",
        )
    )
    return {
        "title": "2. Data efficiency",
        "claim": "A PRM on EDU data at 1.5% of the query budget is near-equal to one on static MC data at 100% (EDU-PRM).",
        "columns": ["arm", "label tokens", "training rows", "synthetic ProcessBench F1"],
        "rows": rows,
        "plots": ["experiments/data_efficiency.png"],
        "verdict": verdict,
        "supported": supported,
        "numbers": {**numbers, "edu_smallest_minus_static": d},
    }


def threshold_ablation(per_arm: Mapping[str, Mapping[int, Mapping[str, Any]]], level: float) -> dict[str, Any]:
    """per_arm[arm][seed] = label_with stats + train_and_score record; arms "fixed@1.0", ..., "calibrated"."""
    keys = ("threshold", "steps_per_solution", "tokens_per_solution", "label_step_acc", "f1")
    numbers = {arm: {k: _ci_of(runs, k, level) for k in keys} for arm, runs in per_arm.items()}
    rows = [
        [
            arm,
            fmt(n["threshold"], 4),
            fmt(n["steps_per_solution"], 2),
            fmt(n["tokens_per_solution"], 0),
            fmt(n["label_step_acc"]),
            fmt(n["f1"]),
        ]
        for arm, n in numbers.items()
    ]
    fixed = {a: n for a, n in numbers.items() if a.startswith("fixed")}
    verdict, supported = "No fixed arm to compare with.", None
    if fixed and "calibrated" in numbers:
        best = max(fixed, key=lambda a: fixed[a]["f1"]["mean"])
        worst = min(fixed, key=lambda a: fixed[a]["f1"]["mean"])
        d = _paired(
            {s: r["f1"] for s, r in per_arm["calibrated"].items()},
            {s: r["f1"] for s, r in per_arm[best].items()},
            level,
        )
        spread = fixed[best]["f1"]["mean"] - fixed[worst]["f1"]["mean"]
        supported = noninferior(d)
        verdict = (
            f"Fixed thresholds span F1 {fixed[worst]['f1']['mean']:.3f} ({worst}) to {fixed[best]['f1']['mean']:.3f} "
            f"({best}), a spread of {spread:.3f}; steps per solution range "
            f"{min(n['steps_per_solution']['mean'] for n in fixed.values()):.2f}-"
            f"{max(n['steps_per_solution']['mean'] for n in fixed.values()):.2f}. The calibrated strategy "
            f"(threshold {numbers['calibrated']['threshold']['mean']:.4f}) minus the best fixed one: {fmt(d)}. "
            + _word(
                supported,
                "Calibrating the threshold is as good as the best fixed value found by search.",
                "Calibration falls short of the best fixed threshold.",
            )
        )
    return {
        "title": "3. Entropy-threshold ablation",
        "claim": "The reviewers' point: a fixed 1.0-nat threshold is not adaptive; the threshold needs an ablation.",
        "columns": [
            "arm",
            "threshold (nats)",
            "steps / solution",
            "label tokens / solution",
            "step-label acc",
            "PRM F1",
        ],
        "rows": rows,
        "plots": ["experiments/threshold_f1.png", "experiments/threshold_cost.png"],
        "verdict": verdict,
        "supported": supported,
        "numbers": numbers,
    }


def active_learning(summary: Mapping[str, Any], level: float) -> dict[str, Any]:
    """The `active` stage's summary.json: final F1 and labels per strategy, and its `paired` block
    (`prmflow.active.paired_at_budget`: per seed, active minus random and minus full, label fraction).

    The claim has three parts, each read from an interval over seeds:
      selection pays   active's final F1 minus random's at the same per-round budget: CI above 0
      comparable F1    active's minus full's: CI above -ACTIVE_COMPARABLE_F1 (`noninferior`)
      about half       active's labels / full's: CI at most ACTIVE_HALF_LABELS
    Supported when all three hold, not supported when one fails. The labels each strategy needs
    to reach q of full's F1 gain are reported too, but they read the steep early curve, where
    active still labels almost everything, so they do not decide whether the selection pays.
    """
    numbers: dict[str, Any] = {}
    rows = []
    strategies = [s for s in ("active", "random", "full") if s in summary]
    full_labels = summary.get("full", {}).get("labels_spent", {}).get("mean")
    for strat in strategies:
        s = summary[strat]
        # a seed has no F1 when the active stage ran without eval rows
        f1s = [v for v in s.get("final_f1_last_eval", {}).values() if v is not None]
        numbers[strat] = {"final_f1": mean_ci(f1s, level) if f1s else None}
        for q, m in sorted(s.get("match", {}).items()):
            fr = [r["fraction_of_full"] for r in m["per_seed"].values() if r.get("fraction_of_full") is not None]
            numbers[strat][f"fraction_of_full@{q}"] = {
                **(mean_ci(fr, level) if fr else {"mean": None}),
                "reached": len(fr),
                "seeds": len(m["per_seed"]),
            }
    qs = sorted({q for strat in strategies for q in summary[strat].get("match", {})})
    for strat in strategies:
        n, lab = numbers[strat], summary[strat].get("labels_spent", {}).get("mean")
        cells = [
            fmt(n["final_f1"]) if n["final_f1"] else "-",
            "-" if lab is None else f"{lab:.0f}" + (f" ({lab / full_labels:.0%})" if full_labels else ""),
        ]
        for q in qs:
            c = n.get(f"fraction_of_full@{q}")
            cells.append("-" if not c or c["mean"] is None else f"{fmt(c, 2)} ({c['reached']}/{c['seeds']} seeds)")
        rows.append([strat, *cells])

    paired = summary.get("paired") or {}
    ci = {
        k: mean_ci(list(paired[k]["per_seed"].values()), level) if paired.get(k) else None
        for k in ("active_minus_random", "active_minus_full", "label_fraction")
    }
    numbers.update({k: v for k, v in ci.items() if v is not None})
    supported: bool | None = None
    if "active" not in summary:
        verdict = "The active stage did not run the active strategy."
    elif ci["active_minus_full"] is None or ci["label_fraction"] is None:
        verdict = (
            "ActPRM has no paired comparison with full labeling: the active stage reported no eval F1, "
            "did not run `full`, or predates its `paired` block (re-run it)."
        )
    else:
        d_rand, d_full, frac = ci["active_minus_random"], ci["active_minus_full"], ci["label_fraction"]
        pays = None if d_rand is None else noninferior(d_rand, margin=0.0)  # CI above 0
        comparable = noninferior(d_full, ACTIVE_COMPARABLE_F1)
        half = (
            None
            if frac["hi"] is None
            else (True if frac["hi"] <= ACTIVE_HALF_LABELS else False if frac["lo"] > ACTIVE_HALF_LABELS else None)
        )
        parts = [pays, comparable, half]
        supported = False if False in parts else True if all(parts) else None
        word = {True: "holds", False: "fails", None: "undecided"}
        verdict = (
            f"At the budget ActPRM spent, {fmt(frac, 2)} of full labeling's labels (a saving of "
            f"{1 - frac['mean']:.0%}), paired by seed: "
            + (
                "no random arm, so the selection itself is untested; "
                if d_rand is None
                else f"ActPRM's final F1 minus random selection's at the same per-round budget {fmt(d_rand)} "
                f"(selection pays: {word[pays]}); "
            )
            + f"minus full labeling's {fmt(d_full)} (comparable within {ACTIVE_COMPARABLE_F1}: "
            f"{word[comparable]}); about half the labels (at most {ACTIVE_HALF_LABELS:.0%}): {word[half]}. "
        )
        c = numbers["active"].get(f"fraction_of_full@{qs[0]}") if qs else None
        r = numbers.get("random", {}).get(f"fraction_of_full@{qs[0]}") if qs else None
        if c and c["mean"] is not None:
            verdict += (
                f"To reach {float(qs[0]):.0%} of full labeling's F1 gain ActPRM needed {fmt(c, 2)} of full's "
                f"labels"
                + (f" and random {fmt(r, 2)}" if r and r["mean"] is not None else "")
                + ": the early curve, where the ensemble is unsure of nearly everything. "
            )
        verdict += (
            "The paper claims comparable F1 with about 50% of the labels, by selection that beats random. "
            + _word(supported, "**Supported**.", "**Not supported** as stated.")
        )
    return {
        "title": "4. Active learning",
        "claim": "ActPRM's uncertainty selection reaches comparable F1 with about 50% "
        "of the labels, and beats random selection at the same budget "
        "(arXiv 2504.10559).",
        "columns": [
            "strategy",
            "final F1",
            "labels spent (of full's)",
            *[f"labels / full's at {float(q):.0%} of its gain" for q in qs],
        ],
        "rows": rows,
        "plots": ["active/curve.png"],
        "verdict": verdict,
        "supported": supported,
        "numbers": numbers,
    }


def edu_sampling(pedu: Mapping[str, Any], level: float) -> dict[str, Any]:
    """The `evaluate` stage's edu_sampling.json: per-seed accuracies and tokens of both arms."""
    numbers: dict[str, Any] = {
        arm: {k: mean_ci(pedu[arm][k]["per_seed"], level) for k in ("acc_prm", "acc_majority", "tokens")}
        for arm in ("standard", "p_edu")
    }
    for k in ("acc_prm_delta", "acc_majority_delta", "token_change"):
        numbers[k] = mean_ci(pedu[k]["per_seed"], level)
    rows = [
        [arm, fmt(numbers[arm]["acc_prm"]), fmt(numbers[arm]["acc_majority"]), fmt(numbers[arm]["tokens"], 0)]
        for arm in ("standard", "p_edu")
    ]
    dt, da = numbers["token_change"], numbers["acc_prm_delta"]
    if dt["hi"] is None:
        supported = None
    elif dt["lo"] > 0 or da["hi"] < -0.02:
        supported = False  # clearly more tokens, or clearly less accurate
    elif dt["hi"] < 0 and da["lo"] > -0.02:
        supported = True
    else:
        supported = None
    verdict = (
        f"P-EDU (N={pedu['n']}, prune below {pedu['prune_below']}) vs standard sampling at equal N: accuracy change "
        f"with the PRM's pick {fmt(da)}, with majority vote {fmt(numbers['acc_majority_delta'])}, generated tokens "
        f"{dt['mean']:+.1%} [{(dt['lo'] or 0):+.1%}, {(dt['hi'] or 0):+.1%}]. The paper reports +2.6 points and -32% tokens: "
        + _word(supported, "**supported** (fewer tokens, no accuracy loss).", "**not supported**.")
    )
    return {
        "title": "5. EDU-guided sampling",
        "claim": "P-EDU sampling gains accuracy (+2.6 points) with fewer tokens (-32%) at equal N (EDU-PRM).",
        "columns": ["arm", "accuracy (PRM pick)", "accuracy (majority)", "generated tokens"],
        "rows": rows,
        "plots": ["eval/edu_sampling.png"],
        "verdict": verdict,
        "supported": supported,
        "numbers": numbers,
    }


def render(sections: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
    """REPORT.md text: a summary table of verdicts, then one section per experiment."""
    mark = {True: "supported", False: "not supported", None: "undecided"}
    out = [
        "# prmflow experiment report",
        "",
        f"Generated by `{header['command']}` on the embedded synthetic world. Seeds: {header['seeds']}; "
        f"every number is the mean over seeds with its {header['level']:.0%} Student-t interval in brackets. "
        "Verdicts are computed from the intervals by `prmflow/experiment_report.py`; a claim that does "
        "not reproduce is reported as a finding.",
        "",
    ]
    if header.get("seconds"):  # wall time of each experiment, as this run measured it
        secs = header["seconds"]
        out += [
            f"Wall time: {sum(secs.values()) / 60:.1f} min on this machine ("
            + ", ".join(f"{t}: {v / 60:.1f} min" for t, v in secs.items())
            + ").",
            "",
        ]
    out += ["| experiment | claim | verdict |", "|---|---|---|"]
    out += [f"| {s['title']} | {s['claim']} | {mark[s['supported']]} |" for s in sections]
    for s in sections:
        out += [
            "",
            f"## {s['title']}",
            "",
            f"**Claim.** {s['claim']}",
            "",
            "| " + " | ".join(s["columns"]) + " |",
            "|" + "---|" * len(s["columns"]),
        ]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in s["rows"]]
        out += [""] + [f"![{p}]({p})" for p in s["plots"]]
        out += ["", f"**Verdict.** {s['verdict']}"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- inputs and MLflow arms


def by_problem(rows: Sequence[Mapping[str, Any]], problems: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows (generations, labels) of these problems, in their order.

    >>> by_problem([{"problem_id": "a", "x": 1}, {"problem_id": "b"}, {"problem_id": "a", "x": 2}], [{"id": "a"}])
    [{'problem_id': 'a', 'x': 1}, {'problem_id': 'a', 'x': 2}]
    """
    keep = {p["id"] for p in problems}
    return [r for r in rows if r["problem_id"] in keep]


def active_arms(summary: Mapping[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """Experiment 4's MLflow arms from reports/active/summary.json: (strategy, seed, metrics)
    with the last evaluation's `final_f1` and, when the labeler counted calls, `labels`.

    >>> active_arms({"active": {"final_f1_last_eval": {"0": 0.5}, "labeler_cost": {"0": {"calls": 3}}},
    ...              "full": {"final_f1_last_eval": {"0": 0.6}}})
    [('active', 0, {'final_f1': 0.5, 'labels': 3}), ('full', 0, {'final_f1': 0.6})]
    """
    arms = []
    for strat in ("active", "random", "full"):
        for seed, f1 in summary.get(strat, {}).get("final_f1_last_eval", {}).items():
            labels = summary[strat].get("labeler_cost", {}).get(seed, {}).get("calls")
            arms.append((strat, int(seed), {"final_f1": f1, **({"labels": labels} if labels else {})}))
    return arms


def edu_sampling_arms(pedu: Mapping[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """Experiment 5's MLflow arms from reports/eval/edu_sampling.json: (arm, seed index, metrics).

    >>> pedu = {k: {m: {"per_seed": [i, i + 1]} for m in ("acc_prm", "acc_majority", "tokens")}
    ...         for i, k in enumerate(("standard", "p_edu"))}
    >>> edu_sampling_arms(pedu)[3]
    ('p_edu', 1, {'acc_prm': 2, 'acc_majority': 2, 'tokens': 2})
    """
    return [
        (arm, i, {k: pedu[arm][k]["per_seed"][i] for k in ("acc_prm", "acc_majority", "tokens")})
        for arm in ("standard", "p_edu")
        for i, _ in enumerate(pedu[arm]["acc_prm"]["per_seed"])
    ]


def suite_metrics(sections: Sequence[Mapping[str, Any]], seconds: Mapping[str, float]) -> list[dict[str, float]]:
    """The `experiments` run's MLflow metrics: seconds per experiment, then 1.0 / 0.0 per decided verdict.

    >>> suite_metrics([{"title": "A", "supported": True}, {"title": "B", "supported": None}], {"a": 2.0})
    [{'experiments/seconds/a': 2.0}, {'experiments/supported/A': 1.0}]
    """
    return [
        {f"experiments/seconds/{name}": v for name, v in seconds.items()},
        {f"experiments/supported/{s['title']}": float(s["supported"]) for s in sections if s["supported"] is not None},
    ]
