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
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.config import EvaluateConfig, load_section
from prmflow.evaluate.baselines import all_ones
from prmflow.evaluate.bon import bon_accuracy
from prmflow.evaluate.processbench import f1_curve
from prmflow.evaluate.scoring import assess
from prmflow.evaluate.synthetic import balance, processbench_rows, split_subsets
from tasks.evaluate import bon_candidates, entropy_scores, likelihood_scores, pedu_compare, prm_scores, sample


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


def headline(result: dict) -> dict:
    """The reported numbers of one scorer on the test subset (`err_acc` = ProcessBench's error acc)."""
    m = result["subsets"].get("test") or {"error_acc": None, "correct_acc": None, "f1": None, "n_err": 0, "n_correct": 0}
    return {"err_acc": m["error_acc"], "correct_acc": m["correct_acc"], "f1": m["f1"], "n_err": m["n_err"],
            "n_correct": m["n_correct"], "threshold": result["threshold"], "threshold_mode": result["threshold_mode"]}


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: str | list[str] = "params.yaml", problems_path: str = "data/problems/eval.jsonl",
                  data_dir: str = "data/eval", reports_dir: str = "reports") -> dict:
    cfg = load_section(params, "evaluate", EvaluateConfig)
    out = Path(reports_dir) / "eval"
    with tracking.stage_run("evaluate", cfg) as run:
        problems = io.read_jsonl(problems_path)
        pb_problems = problems[: cfg.n_problems]
        bon_problems = problems[cfg.n_problems : cfg.n_problems + cfg.bon_problems]

        # ---- synthetic ProcessBench
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

        # ---- Best-of-N
        ns = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= cfg.bon_max_n]
        bon = {}
        if bon_problems:
            cands = bon_candidates(cfg, bon_problems, sample(cfg, bon_problems, cfg.bon_max_n, "bon"))
            bon = bon_accuracy(cands, ns=ns)
            bon["mean_tokens_per_solution"] = sum(c["tokens"] for p in cands for c in p["candidates"]) / sum(
                len(p["candidates"]) for p in cands)
            io.write_json(out / "bon.json", bon)
            plots.bon_curves(bon, out / "bon.png")

        # ---- EDU-guided sampling (P-EDU) vs standard sampling at equal N
        pedu_problems = problems[cfg.n_problems + cfg.bon_problems : cfg.n_problems + cfg.bon_problems + cfg.pedu_problems]
        if pedu_problems and cfg.pedu_problems:
            pedu = pedu_compare(cfg, pedu_problems)
            io.write_json(out / "edu_sampling.json", pedu)
            plots.accuracy_vs_tokens(pedu, out / "edu_sampling.png")
            run.metrics({"eval/pedu/acc_prm_delta": pedu["acc_prm_delta"]["mean"],
                         "eval/pedu/acc_majority_delta": pedu["acc_majority_delta"]["mean"],
                         "eval/pedu/token_change": pedu["token_change"]["mean"]})
            print(f"  P-EDU vs standard (N={cfg.pedu_n}, {cfg.pedu_seeds} seeds): accuracy (PRM pick) "
                  f"{pedu['acc_prm_delta']['mean']:+.3f} +- {pedu['acc_prm_delta']['std']:.3f}, tokens "
                  f"{pedu['token_change']['mean']:+.1%} +- {pedu['token_change']['std']:.1%}")

        for name in ("prm", "prm_fixed", "all_ones", "entropy", "likelihood"):
            run.metrics({f"eval/{name}/{k}": v for k, v in summary[name].items() if isinstance(v, (int, float)) and v is not None})
        for method, accs in bon.get("accuracy", {}).items():
            for n, acc in zip(ns, accs, strict=True):
                run.metrics({f"eval/bon/{method}": acc}, step=n)
        run.artifact(out, "eval")
        print("evaluate: synthetic ProcessBench (test subset)")
        for name in ("prm", "prm_fixed", "all_ones", "entropy", "likelihood"):
            s = summary[name]
            print(f"  {name:>10}: err_acc {s['err_acc']}  correct_acc {s['correct_acc']}  f1 {s['f1']}  "
                  f"(threshold {s['threshold']:.3f}, {s['threshold_mode']})")
    return summary


if __name__ == "__main__":
    from flows._cli import main

    main(evaluate_flow, __doc__)
