"""What stage `evaluate` reports: threshold choice, summaries, the Best-of-N report, metric names.

Pure functions over scored rows and the dicts the scorers return (no I/O, no model): the flow
(flows/evaluate.py) runs the scorers, writes what these return and logs `eval_metrics`.
ProcessBench's metrics are `error_acc`, `correct_acc` and their harmonic mean `f1`
(prmflow.evaluate.processbench); the synthetic ProcessBench's headline calls `error_acc` `err_acc`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prmflow.evaluate.baselines import all_ones
from prmflow.evaluate.processbench import calibrate_threshold, evaluate_subsets
from prmflow.evaluate.scoring import assess
from prmflow.evaluate.synthetic import split_subsets

Rows = Sequence[Mapping[str, Any]]
Scores = Mapping[str, Sequence[float]]

SCORERS = ("prm", "prm_fixed", "all_ones", "entropy", "likelihood")
"""the synthetic ProcessBench's scorers, in report order"""

BON_NS = (1, 2, 4, 8, 16, 32, 64, 128)
"""Best-of-N sizes, cut at `evaluate.bon_max_n`"""

REAL_SKIPS = {
    "synthetic_processbench": "the eval problems are real: the synthetic ProcessBench labels each solution's first "
    "wrong line with the synthetic world's exact step checker, which cannot judge real text "
    "(name labeled files in evaluate.processbench_files for first-error detection)",
    "entropy": "scores the policy's solutions of the synthetic ProcessBench, which real problems do not have",
    "likelihood": "scores the policy's solutions of the synthetic ProcessBench, which real problems do not have",
}
"""what real problems skip, and why (reports/eval/skipped.json)"""

TRUNCATION = (
    "a truncated row is scored on the steps the PRM saw (lost steps repeat the last kept score, so its "
    "prediction is the first seen step below the threshold, else -1); a row whose first step exceeds "
    "max_len is skipped"
)


def problem_slices(
    problems: Sequence[Any], real: bool, n_problems: int, bon_problems: int, pedu_problems: int
) -> tuple[list[Any], list[Any], list[Any]]:
    """(synthetic ProcessBench, Best-of-N, P-EDU) problems: consecutive slices; real problems
    have no synthetic ProcessBench, so Best-of-N starts at 0.

    >>> problem_slices(list("abcdefg"), False, 2, 3, 1)
    (['a', 'b'], ['c', 'd', 'e'], ['f'])
    >>> problem_slices(list("abcdefg"), True, 2, 3, 1)
    ([], ['a', 'b', 'c'], ['d'])
    """
    offset = 0 if real else n_problems
    pb = [] if real else list(problems[:n_problems])
    return (
        pb,
        list(problems[offset : offset + bon_problems]),
        list(problems[offset + bon_problems : offset + bon_problems + pedu_problems]),
    )


def bon_ns(max_n: int) -> list[int]:
    """The Best-of-N sizes up to `max_n`.

    >>> bon_ns(4)
    [1, 2, 4]
    """
    return [n for n in BON_NS if n <= max_n]


def assess_or_fixed(rows: Rows, scores: Scores, how: Mapping[str, Any], fixed: float) -> dict[str, Any]:
    """`assess`, falling back to the fixed threshold when calibration is impossible (a tiny
    config can leave the calib subset without correct or without erroneous rows); the
    fallback and its reason are recorded in `threshold_mode`."""
    try:
        return assess(rows, scores, **how)
    except ValueError as e:
        if "calibrate_on" not in how:
            raise
        result = assess(rows, scores, threshold=fixed)
        result["threshold_mode"] = f"fixed {fixed} (calibration impossible: {e})"
        return result


def calibrate_on_split(rows: Rows, scores: Scores, calib_fraction: float, seed: int, fixed: float) -> dict[str, Any]:
    """Fit the threshold on a stratified `calib_fraction` split of every subset (pooled), report
    each subset on its other rows; the fixed threshold on every row if calibration is impossible."""
    calib: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for name in dict.fromkeys(r["subset"] for r in rows):
        for r in split_subsets([r for r in rows if r["subset"] == name], calib_fraction, seed):
            (calib if r["subset"] == "calib" else test).append({**r, "subset": name})
    try:
        thr, f1 = calibrate_threshold([r["label"] for r in calib], [scores[r["id"]] for r in calib])
    except ValueError as e:
        return {
            **evaluate_subsets(rows, scores, fixed),
            "calib_rows": 0,
            "threshold_mode": f"fixed {fixed} (calibration impossible: {e})",
        }
    return {
        **evaluate_subsets(test, scores, thr),
        "calibration_f1": f1,
        "calib_rows": len(calib),
        "threshold_mode": f"calibrated on a {calib_fraction} split of every subset",
    }


def ones_scores(rows: Rows) -> dict[str, list[float]]:
    """The all-ones baseline's step scores for every row."""
    return {r["id"]: all_ones(len(r["steps"])) for r in rows}


def named_results(
    scored: Rows, scores: Scores, mode: str, threshold: float, calib_fraction: float, seed: int
) -> dict[str, dict[str, Any]]:
    """The named ProcessBench files' scorers: `prm` at the `mode` threshold (`split`, `fixed` or
    a subset name to calibrate on), `prm_fixed` and `all_ones` at the fixed one on every row."""
    if mode == "split":
        prm = calibrate_on_split(scored, scores, calib_fraction, seed, threshold)
    elif mode == "fixed":
        prm = assess(scored, scores, threshold=threshold)
    else:
        prm = assess(scored, scores, calibrate_on=mode)
    return {
        "prm": prm,
        "prm_fixed": assess(scored, scores, threshold=threshold),
        "all_ones": assess(scored, ones_scores(scored), threshold=threshold),
    }


def named_report(
    results: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, str],
    counts: Mapping[str, Any],
    info: Mapping[str, Any],
    step_sep: str,
) -> dict[str, Any]:
    """reports/eval/processbench_files.json: each scorer without its predictions, plus `data`."""
    report: dict[str, Any] = {name: {k: v for k, v in r.items() if k != "predictions"} for name, r in results.items()}
    report["data"] = {
        "files": dict(files),
        "counts": counts,
        "max_len": info["max_len"],
        "step_sep": step_sep,
        "skipped": info["skipped"],
        "truncated_ids": info["truncated_ids"],
        "truncated_steps": info["truncated_steps"],
        "truncation": TRUNCATION,
    }
    return report


def prediction_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One scorer's per-row predictions as written to the predictions JSONL files."""
    return [
        {"id": p["id"], "subset": p["subset"], "pred": p["pred"], "label": p["label"], "scores": p["scores"]}
        for p in result["predictions"]
    ]


def headline(result: Mapping[str, Any]) -> dict[str, Any]:
    """The reported numbers of one scorer on the test subset (`err_acc` = ProcessBench's error acc).

    >>> headline({"subsets": {}, "threshold": 0.5, "threshold_mode": "fixed"})["f1"] is None
    True
    """
    m = result["subsets"].get("test") or {
        "error_acc": None,
        "correct_acc": None,
        "f1": None,
        "n_err": 0,
        "n_correct": 0,
    }
    return {
        "err_acc": m["error_acc"],
        "correct_acc": m["correct_acc"],
        "f1": m["f1"],
        "n_err": m["n_err"],
        "n_correct": m["n_correct"],
        "threshold": result["threshold"],
        "threshold_mode": result["threshold_mode"],
    }


def synthetic_summary(
    results: Mapping[str, Mapping[str, Any]], rows: Rows, n_candidates: int, left_out: int, info: Mapping[str, Any]
) -> dict[str, Any]:
    """reports/eval/synthetic_processbench.json: each scorer's headline, plus `data` (row counts)."""
    summary: dict[str, Any] = {name: headline(r) for name, r in results.items()}
    summary["data"] = {
        "rows": len(rows),
        "candidates_before_balance": n_candidates,
        "left_out_no_answer": left_out,
        "test_rows": sum(r["subset"] == "test" for r in rows),
        "prm_truncated_rows": info["truncated_rows"],
        "prm_truncated_steps": info["truncated_steps"],
    }
    return summary


def count_rows(summary: Mapping[str, Any], named: Mapping[str, Any] | None, bon_problems: int) -> dict[str, int]:
    """Evaluation rows per part; the stage fails when they add up to 0.

    >>> count_rows({}, None, 0)
    {'synthetic_processbench': 0, 'processbench_files': 0, 'bon_problems': 0}
    """
    return {
        "synthetic_processbench": summary.get("data", {}).get("rows", 0),
        "processbench_files": named["data"]["counts"]["all"]["scored"] if named else 0,
        "bon_problems": bon_problems,
    }


def zero_oracle(bon: Mapping[str, Any]) -> str | None:
    """Why a Best-of-N table means nothing (no correct candidate at any N), else None.

    >>> zero_oracle({"accuracy": {"oracle": [0.0, 0.5]}, "ns": [1, 2], "n_problems": 2}) is None
    True
    """
    if max(bon["accuracy"]["oracle"]) > 0:
        return None
    return (
        f"Best-of-N oracle (pass@{bon['ns'][-1]}) is 0 on {bon['n_problems']} problems: no sampled solution has a "
        "verified correct answer, so every picker reads 0 and the table means nothing (check the policy, its "
        "prompt and answer extraction; evaluate.allow_zero_oracle: true accepts it)"
    )


def bon_report(
    bon: dict[str, Any], cands: Sequence[Mapping[str, Any]], real: bool, allow_zero_oracle: bool
) -> tuple[dict[str, Any], str | None]:
    """reports/eval/bon.json from `bon_accuracy`'s table (updated in place) and the candidates;
    for real problems also the verdict, candidate statistics and the zero-oracle problem
    (returned second; in `warnings` when `allow_zero_oracle` accepts it)."""
    if not real:
        bon["mean_tokens_per_solution"] = sum(c["tokens"] for p in cands for c in p["candidates"]) / sum(
            len(p["candidates"]) for p in cands
        )
        return bon, None
    flat = [c for p in cands for c in p["candidates"]]
    bon.update(
        mean_tokens_per_solution=sum(c["tokens"] for c in flat) / len(flat),
        verdict="answer_correct: final answer verified with math-verify (prmflow.evaluate.verdict)",
        steps="non-empty lines of each solution (prmflow.synth.split_steps)",
        candidate_solve_rate=sum(c["correct"] for c in flat) / len(flat),
        no_answer_fraction=sum(c["answer"] is None for c in flat) / len(flat),
        unscored_candidates=sum(not c["scored"] for c in flat),
    )
    meaningless = zero_oracle(bon)
    if meaningless and allow_zero_oracle:
        bon["warnings"] = [meaningless]
    return bon, meaningless


def eval_metrics(
    summary: Mapping[str, Any], named: Mapping[str, Any] | None, bon: Mapping[str, Any]
) -> list[tuple[dict[str, float], int | None]]:
    """The stage's MLflow metrics as (metrics, step) batches: `eval/<scorer>/<key>` of the
    synthetic ProcessBench, `eval/files/<scorer>/<subset>/<metric>` of the named files and
    `eval/bon/<method>` at step N. None values are left out.

    >>> eval_metrics({"prm": {"f1": 0.5, "err_acc": None, "threshold_mode": "x"}}, None,
    ...              {"ns": [1, 2], "accuracy": {"oracle": [0.25, 0.5]}})
    [({'eval/prm/f1': 0.5}, None), ({'eval/bon/oracle': 0.25}, 1), ({'eval/bon/oracle': 0.5}, 2)]
    """
    out: list[tuple[dict[str, float], int | None]] = []
    for name in SCORERS:
        if name in summary:
            out.append(
                (
                    {
                        f"eval/{name}/{k}": v
                        for k, v in summary[name].items()
                        if isinstance(v, (int, float)) and v is not None
                    },
                    None,
                )
            )
    for scorer, res in (named or {}).items():
        if scorer != "data":
            for subset, m in res["subsets"].items():
                out.append(
                    (
                        {
                            f"eval/files/{scorer}/{subset}/{k}": m[k]
                            for k in ("error_acc", "correct_acc", "f1")
                            if m[k] is not None
                        },
                        None,
                    )
                )
    for method, accs in bon.get("accuracy", {}).items():
        for n, acc in zip(bon["ns"], accs, strict=True):
            out.append(({f"eval/bon/{method}": acc}, n))
    return out


def pedu_metrics(pedu: Mapping[str, Any]) -> dict[str, float]:
    """P-EDU minus standard sampling, mean over seeds: `eval/pedu/...`."""
    return {
        "eval/pedu/acc_prm_delta": pedu["acc_prm_delta"]["mean"],
        "eval/pedu/acc_majority_delta": pedu["acc_majority_delta"]["mean"],
        "eval/pedu/token_change": pedu["token_change"]["mean"],
    }


# --------------------------------------------------------------------------- console lines


def named_lines(prm: Mapping[str, Any], counts: Mapping[str, Any]) -> list[str]:
    lines = [f"evaluate: named ProcessBench files (prm threshold {prm['threshold']:.3f}, {prm['threshold_mode']})"]
    for name, m in prm["subsets"].items():
        c = counts.get(name, {})
        lines.append(
            f"  {name:>14}: err_acc {m['error_acc']}  correct_acc {m['correct_acc']}  f1 {m['f1']}  "
            f"({c.get('scored')} scored, {c.get('skipped_too_long')} skipped as too long, "
            f"{c.get('truncated')} truncated)"
        )
    return lines


def bon_lines(bon: Mapping[str, Any]) -> list[str]:
    if not bon:
        return []
    width = max(len(m) for m in bon["accuracy"])
    return [f"evaluate: Best-of-N accuracy on {bon['n_problems']} problems, N = {bon['ns']}"] + [
        f"  {method:>{width}}: " + "  ".join(f"{a:.3f}" for a in accs) for method, accs in bon["accuracy"].items()
    ]


def pedu_line(pedu: Mapping[str, Any], n: int, seeds: int) -> str:
    return (
        f"  P-EDU vs standard (N={n}, {seeds} seeds): accuracy (PRM pick) "
        f"{pedu['acc_prm_delta']['mean']:+.3f} +- {pedu['acc_prm_delta']['std']:.3f}, tokens "
        f"{pedu['token_change']['mean']:+.1%} +- {pedu['token_change']['std']:.1%}"
    )


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = ["evaluate: synthetic ProcessBench (test subset)"] if summary else []
    for name in SCORERS:
        if name in summary:
            s = summary[name]
            lines.append(
                f"  {name:>10}: err_acc {s['err_acc']}  correct_acc {s['correct_acc']}  f1 {s['f1']}  "
                f"(threshold {s['threshold']:.3f}, {s['threshold_mode']})"
            )
    return lines
