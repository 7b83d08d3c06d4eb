"""Stage `evaluate`: first-error detection (synthetic ProcessBench) and PRM-guided Best-of-N.

    python -m flows.evaluate [--params params.yaml]

1. Synthetic ProcessBench: the policy solves held-out problems; the exact checker labels each
   solution's first wrong line; rows are balanced between correct and erroneous and split into
   `calib` (threshold fitting) and `test` (reported) subsets.
2. Step scorers on the same rows: the trained PRM, a PRM that scores every step 1, the policy's
   own token entropy (exp(-max H) per line) and its likelihood (exp(min log p) per line).
   Prediction = first step scoring below the threshold (QwenLM/ProcessBench protocol); error_acc, correct_acc and their harmonic mean F1.
3. Best-of-N: N solutions per held-out problem, picked by PRM (min/last/prod), PRM-weighted vote,
   majority vote; accuracy for N = 1, 2, 4, ...
4. EDU-guided sampling (P-EDU, prmflow.edu_sampling): N candidates from entropy-branching trees
   with PRM pruning vs N standard samples: accuracy and generated tokens over seeds.

Outputs reports/eval/synthetic_processbench.json (keys `prm`, `all_ones`, `entropy`, each with
`err_acc`, `correct_acc`, `f1`), reports/eval/{processbench,bon}.json, per-row predictions,
data/eval/synthetic_processbench.jsonl (ProcessBench format) and PNG plots.

Named ProcessBench files (`evaluate.processbench_files`, e.g. the official gsm8k / math /
olympiadbench / omnimath subsets) are scored by the PRM beside all of that:
reports/eval/processbench_files.json (per subset `error_acc`, `correct_acc`, `f1`, `mean_f1`, for
`prm` at the `processbench_calibrate` threshold, `prm_fixed` at `threshold`, `all_ones`, plus row
counts: `rows`, `scored`, `skipped_too_long`, `truncated`) and processbench_files_predictions.jsonl.

Real problems (rows with a `source` other than "synthetic", prmflow.evaluate.verdict) have no
step checker, so the synthetic ProcessBench and its entropy / likelihood baselines are skipped
(reasons in reports/eval/skipped.json); first-error detection comes from the named files, and
Best-of-N (problems[:bon_problems]) verifies answers with `answer_correct` (math-verify) and
votes over verified-equivalence classes (bon.json, bon.png, data/eval/bon_candidates.jsonl).
P-EDU runs on problems[bon_problems : bon_problems + pedu_problems] with the same verdict.
The stage fails when it would report 0 evaluation rows, or when a real Best-of-N has no
correct candidate at all (oracle 0; `allow_zero_oracle` accepts it).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.config import EvaluateConfig, load_section
from prmflow.prompts import PromptConfig, read_examples
from prmflow.evaluate.baselines import all_ones
from prmflow.evaluate.bon import bon_accuracy
from prmflow.evaluate.processbench import calibrate_threshold, evaluate_subsets, f1_curve
from prmflow.evaluate.scoring import assess, usable_counts
from prmflow.evaluate.synthetic import balance, processbench_rows, split_subsets
from prmflow.evaluate.verdict import problem_kind
from prmflow.io import DataError
from tasks.evaluate import (
    bon_candidates,
    bon_candidates_verified,
    entropy_scores,
    likelihood_scores,
    load_named_processbench,
    pedu_compare,
    prm_scores,
    prm_scores_by_length,
    sample,
)

REAL_SKIPS = {
    "synthetic_processbench": "the eval problems are real: the synthetic ProcessBench labels each solution's first "
                              "wrong line with the synthetic world's exact step checker, which cannot judge real text "
                              "(name labeled files in evaluate.processbench_files for first-error detection)",
    "entropy": "scores the policy's solutions of the synthetic ProcessBench, which real problems do not have",
    "likelihood": "scores the policy's solutions of the synthetic ProcessBench, which real problems do not have",
}


def assess_or_fixed(rows: list, scores: dict, how: dict, fixed: float) -> dict:
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


def calibrate_on_split(cfg: EvaluateConfig, rows: list, scores: dict) -> dict:
    """Fit the threshold on a stratified `calib_fraction` split of every subset (pooled), report
    each subset on its other rows; the fixed threshold on every row if calibration is impossible."""
    calib, test = [], []
    for name in dict.fromkeys(r["subset"] for r in rows):
        for r in split_subsets([r for r in rows if r["subset"] == name], cfg.calib_fraction, cfg.seed):
            (calib if r["subset"] == "calib" else test).append({**r, "subset": name})
    try:
        thr, f1 = calibrate_threshold([r["label"] for r in calib], [scores[r["id"]] for r in calib])
    except ValueError as e:
        return {**evaluate_subsets(rows, scores, cfg.threshold), "calib_rows": 0,
                "threshold_mode": f"fixed {cfg.threshold} (calibration impossible: {e})"}
    return {**evaluate_subsets(test, scores, thr), "calibration_f1": f1, "calib_rows": len(calib),
            "threshold_mode": f"calibrated on a {cfg.calib_fraction} split of every subset"}


def named_processbench(cfg: EvaluateConfig, out: Path) -> dict:
    """Score the named ProcessBench files; write processbench_files.json and its predictions.

    `prm` uses the `processbench_calibrate` threshold, `prm_fixed` and `all_ones` the fixed one
    on every scored row. A file left with no scored row (every first step over max_len) fails.
    """
    rows = load_named_processbench(cfg)
    scores, info = prm_scores_by_length(cfg, rows)
    counts = usable_counts(rows, info)
    for s in info["skipped"]:
        print(f"  skipped {s['id']} ({s['subset']}): {s['reason']}")
    for name, path in cfg.processbench_files.items():
        if counts[name]["scored"] == 0:
            raise DataError(path, None, "steps", f"0 usable rows: all {counts[name]['rows']} have a first step over "
                            f"max_len={info['max_len']} tokens (raise evaluate.processbench_max_len)")
    scored = [r for r in rows if r["id"] in scores]
    mode = cfg.processbench_calibrate
    if mode == "split":
        prm = calibrate_on_split(cfg, scored, scores)
    elif mode == "fixed":
        prm = assess(scored, scores, threshold=cfg.threshold)
    else:
        prm = assess(scored, scores, calibrate_on=mode)
    results = {"prm": prm, "prm_fixed": assess(scored, scores, threshold=cfg.threshold),
               "all_ones": assess(scored, {r["id"]: all_ones(len(r["steps"])) for r in scored}, threshold=cfg.threshold)}
    report = {name: {k: v for k, v in r.items() if k != "predictions"} for name, r in results.items()}
    report["data"] = {"files": dict(cfg.processbench_files), "counts": counts, "max_len": info["max_len"],
                      "step_sep": cfg.processbench_step_sep, "skipped": info["skipped"],
                      "truncated_ids": info["truncated_ids"], "truncated_steps": info["truncated_steps"],
                      "truncation": "a truncated row is scored on the steps the PRM saw (lost steps repeat the "
                                    "last kept score, so its prediction is the first seen step below the threshold, "
                                    "else -1); a row whose first step exceeds max_len is skipped"}
    io.write_json(out / "processbench_files.json", report)
    io.write_jsonl(out / "processbench_files_predictions.jsonl", [
        {"id": p["id"], "subset": p["subset"], "pred": p["pred"], "label": p["label"], "scores": p["scores"]}
        for p in results["prm"]["predictions"]])
    print(f"evaluate: named ProcessBench files (prm threshold {prm['threshold']:.3f}, {prm['threshold_mode']})")
    for name, m in prm["subsets"].items():
        c = counts.get(name, {})
        print(f"  {name:>14}: err_acc {m['error_acc']}  correct_acc {m['correct_acc']}  f1 {m['f1']}  "
              f"({c.get('scored')} scored, {c.get('skipped_too_long')} skipped as too long, {c.get('truncated')} truncated)")
    return report


def headline(result: dict) -> dict:
    """The reported numbers of one scorer on the test subset (`err_acc` = ProcessBench's error acc)."""
    m = result["subsets"].get("test") or {"error_acc": None, "correct_acc": None, "f1": None, "n_err": 0, "n_correct": 0}
    return {"err_acc": m["error_acc"], "correct_acc": m["correct_acc"], "f1": m["f1"], "n_err": m["n_err"],
            "n_correct": m["n_correct"], "threshold": result["threshold"], "threshold_mode": result["threshold_mode"]}


def synthetic_processbench(cfg: EvaluateConfig, pb_problems: list, data_dir: str, out: Path) -> dict:
    """The synthetic ProcessBench and its scorers (module docstring, 1-2); returns the summary."""
    comps = sample(cfg, pb_problems, cfg.samples_per_problem, "processbench")
    all_rows, left_out = processbench_rows(pb_problems, [[c.text for c in cs] for cs in comps], "prmflow-policy")
    by_id = {f"{p['id']}/{j}": c for p, cs in zip(pb_problems, comps, strict=True) for j, c in enumerate(cs)}
    rows = split_subsets(balance(all_rows, cfg.correct_fraction, cfg.seed), cfg.calib_fraction, cfg.seed)
    io.write_jsonl(Path(data_dir) / "synthetic_processbench.jsonl", rows)

    scores_prm, info = prm_scores(cfg, rows)
    scorers = {
        "prm": (scores_prm, {"calibrate_on": "calib"}),
        "prm_fixed": (scores_prm, {"threshold": cfg.threshold}),
        "all_ones": ({r["id"]: all_ones(len(r["steps"])) for r in rows}, {"threshold": cfg.threshold}),
        "entropy": (entropy_scores(rows, by_id), {"calibrate_on": "calib"}),
        "likelihood": (likelihood_scores(cfg, rows, by_id), {"calibrate_on": "calib"}),
    }
    results = {name: assess_or_fixed(rows, scores, how, cfg.threshold) for name, (scores, how) in scorers.items()}
    summary = {name: headline(r) for name, r in results.items()}
    summary["data"] = {"rows": len(rows), "candidates_before_balance": len(all_rows), "left_out_no_answer": left_out,
                       "test_rows": sum(r["subset"] == "test" for r in rows),
                       "prm_truncated_rows": info["truncated_rows"], "prm_truncated_steps": info["truncated_steps"]}
    io.write_json(out / "synthetic_processbench.json", summary)
    io.write_jsonl(out / "predictions.jsonl", [
        {"id": p["id"], "subset": p["subset"], "pred": p["pred"], "label": p["label"], "scores": p["scores"]}
        for p in results["prm"]["predictions"]])
    test = [r for r in rows if r["subset"] == "test"]
    thresholds = [i / 50 for i in range(51)]
    curves = {} if not test else {name: f1_curve([r["label"] for r in test], [scorers[name][0][r["id"]] for r in test], thresholds)
              for name in ("prm", "entropy", "likelihood")}
    if test:
        plots.f1_vs_threshold(curves, {n: summary[n]["threshold"] for n in curves}, out / "f1_threshold.png")
    else:
        print(f"WARNING: the synthetic ProcessBench has no test rows ({len(rows)} rows from {len(all_rows)} solutions "
              "after balancing correct and erroneous ones): its metrics are None")
    return summary


def zero_oracle(bon: dict) -> str | None:
    """Why a Best-of-N table means nothing (no correct candidate at any N), else None."""
    if max(bon["accuracy"]["oracle"]) > 0:
        return None
    return (f"Best-of-N oracle (pass@{bon['ns'][-1]}) is 0 on {bon['n_problems']} problems: no sampled solution has a "
            "verified correct answer, so every picker reads 0 and the table means nothing (check the policy, its "
            "prompt and answer extraction; evaluate.allow_zero_oracle: true accepts it)")


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: str | list[str] = "params.yaml", problems_path: str = "data/problems/eval.jsonl",
                  data_dir: str = "data/eval", reports_dir: str = "reports",
                  fewshot_path: str = "data/problems/train.jsonl") -> dict:
    cfg = load_section(params, "evaluate", EvaluateConfig)
    prompt_cfg = load_section(params, "prompt", PromptConfig)
    out = Path(reports_dir) / "eval"
    with tracking.stage_run("evaluate", cfg) as run:
        problems = io.read_jsonl(problems_path)
        examples = read_examples(fewshot_path, prompt_cfg)
        run.params(prompt_cfg, "prompt.")
        real = problem_kind(problems, problems_path) == "real"
        skipped: dict[str, str] = {}

        # ---- synthetic ProcessBench (synthetic problems only: its labels come from the exact checker)
        if not real:
            summary = synthetic_processbench(cfg, problems[: cfg.n_problems], data_dir, out)
            offset = cfg.n_problems
        else:
            skipped.update(REAL_SKIPS)
            summary = {}
            offset = 0
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            for part, reason in REAL_SKIPS.items():
                print(f"evaluate: skipping {part}: {reason}")
        bon_problems = problems[offset : offset + cfg.bon_problems]
        pedu_problems = problems[offset + cfg.bon_problems : offset + cfg.bon_problems + cfg.pedu_problems]

        # ---- named ProcessBench files (official format), on any kind of problems
        named = named_processbench(cfg, out) if cfg.processbench_files else None
        n_rows = {"synthetic_processbench": summary.get("data", {}).get("rows", 0),
                  "processbench_files": named["data"]["counts"]["all"]["scored"] if named else 0,
                  "bon_problems": len(bon_problems)}
        if sum(n_rows.values()) == 0:
            raise DataError(problems_path, None, None, f"the evaluate stage has 0 evaluation rows ({n_rows}; "
                            f"{len(problems)} eval problems, real={real}): name ProcessBench files in "
                            "evaluate.processbench_files or give Best-of-N problems (evaluate.bon_problems)")

        # ---- Best-of-N
        ns = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= cfg.bon_max_n]
        bon = {}
        if bon_problems and not real:
            cands = bon_candidates(cfg, bon_problems, sample(cfg, bon_problems, cfg.bon_max_n, "bon", prompt_cfg, examples))
            bon = bon_accuracy(cands, ns=ns)
            bon["mean_tokens_per_solution"] = sum(c["tokens"] for p in cands for c in p["candidates"]) / sum(
                len(p["candidates"]) for p in cands)
            io.write_json(out / "bon.json", bon)
            plots.bon_curves(bon, out / "bon.png")
        elif bon_problems:  # real: verified answers, votes over verified-equivalence classes
            cands = bon_candidates_verified(cfg, bon_problems, sample(cfg, bon_problems, cfg.bon_max_n, "bon", prompt_cfg, examples))
            io.write_jsonl(Path(data_dir) / "bon_candidates.jsonl", cands)
            bon = bon_accuracy(cands, ns=ns)
            flat = [c for p in cands for c in p["candidates"]]
            bon.update(mean_tokens_per_solution=sum(c["tokens"] for c in flat) / len(flat),
                       verdict="answer_correct: final answer verified with math-verify (prmflow.evaluate.verdict)",
                       steps="non-empty lines of each solution (prmflow.synth.split_steps)",
                       candidate_solve_rate=sum(c["correct"] for c in flat) / len(flat),
                       no_answer_fraction=sum(c["answer"] is None for c in flat) / len(flat),
                       unscored_candidates=sum(not c["scored"] for c in flat))
            meaningless = zero_oracle(bon)
            if meaningless and cfg.allow_zero_oracle:
                print(f"WARNING: {meaningless}")
                bon["warnings"] = [meaningless]
            io.write_json(out / "bon.json", bon)
            plots.bon_curves(bon, out / "bon.png")
            if meaningless and not cfg.allow_zero_oracle:  # after writing, so the candidates can be looked at
                run.flag_degenerate("evaluate", [f"{meaningless}; see {out / 'bon.json'} and "
                                                 f"{Path(data_dir) / 'bon_candidates.jsonl'}"])
        if bon:
            width = max(len(m) for m in bon["accuracy"])
            print(f"evaluate: Best-of-N accuracy on {bon['n_problems']} problems, N = {bon['ns']}")
            for method, accs in bon["accuracy"].items():
                print(f"  {method:>{width}}: " + "  ".join(f"{a:.3f}" for a in accs))

        # ---- EDU-guided sampling (P-EDU) vs standard sampling at equal N
        if pedu_problems and cfg.pedu_problems:
            pedu = pedu_compare(cfg, pedu_problems, prompt_cfg, examples)
            io.write_json(out / "edu_sampling.json", pedu)
            plots.accuracy_vs_tokens(pedu, out / "edu_sampling.png")
            run.metrics({"eval/pedu/acc_prm_delta": pedu["acc_prm_delta"]["mean"],
                         "eval/pedu/acc_majority_delta": pedu["acc_majority_delta"]["mean"],
                         "eval/pedu/token_change": pedu["token_change"]["mean"]})
            print(f"  P-EDU vs standard (N={cfg.pedu_n}, {cfg.pedu_seeds} seeds): accuracy (PRM pick) "
                  f"{pedu['acc_prm_delta']['mean']:+.3f} +- {pedu['acc_prm_delta']['std']:.3f}, tokens "
                  f"{pedu['token_change']['mean']:+.1%} +- {pedu['token_change']['std']:.1%}")

        if skipped:
            io.write_json(out / "skipped.json", {"skipped": skipped})
            run.tags({f"eval/skipped/{part}": "skipped" for part in skipped})
        for name in ("prm", "prm_fixed", "all_ones", "entropy", "likelihood"):
            if name in summary:
                run.metrics({f"eval/{name}/{k}": v for k, v in summary[name].items() if isinstance(v, (int, float)) and v is not None})
        for scorer, res in (named or {}).items():
            if scorer != "data":
                for subset, m in res["subsets"].items():
                    run.metrics({f"eval/files/{scorer}/{subset}/{k}": m[k] for k in ("error_acc", "correct_acc", "f1")
                                 if m[k] is not None})
        for method, accs in bon.get("accuracy", {}).items():
            for n, acc in zip(ns, accs, strict=True):
                run.metrics({f"eval/bon/{method}": acc}, step=n)
        run.artifact(out, "eval")
        if summary:
            print("evaluate: synthetic ProcessBench (test subset)")
        for name in ("prm", "prm_fixed", "all_ones", "entropy", "likelihood"):
            if name not in summary:
                continue
            s = summary[name]
            print(f"  {name:>10}: err_acc {s['err_acc']}  correct_acc {s['correct_acc']}  f1 {s['f1']}  "
                  f"(threshold {s['threshold']:.3f}, {s['threshold_mode']})")
    if real or named is not None:
        return {**summary, "skipped": skipped, "processbench_files": named, "bon": bon}
    return summary


if __name__ == "__main__":
    from flows._cli import main

    main(evaluate_flow, __doc__)
