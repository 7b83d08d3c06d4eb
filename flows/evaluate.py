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
4. EDU-guided sampling (P-EDU, prmflow.edu.sampling): N candidates from entropy-branching trees
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
from prmflow.evaluate import report
from prmflow.evaluate.bon import bon_accuracy
from prmflow.evaluate.processbench import f1_curve
from prmflow.evaluate.scoring import usable_counts
from prmflow.evaluate.synthetic import balance, processbench_rows, split_subsets
from prmflow.evaluate.verdict import problem_kind
from prmflow.io import DataError
from prmflow.prompts import PromptConfig, read_examples
from prmflow.summaries import metrics_file
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


def named_processbench(cfg: EvaluateConfig, out: Path) -> dict:
    """Score the named ProcessBench files; write processbench_files.json and its predictions.
    A file left with no scored row (every first step over max_len) fails."""
    rows = load_named_processbench(cfg)
    scores, info = prm_scores_by_length(cfg, rows)
    counts = usable_counts(rows, info)
    for s in info["skipped"]:
        print(f"  skipped {s['id']} ({s['subset']}): {s['reason']}")
    for name, path in cfg.processbench_files.items():
        if counts[name]["scored"] == 0:
            raise DataError(
                path,
                None,
                "steps",
                f"0 usable rows: all {counts[name]['rows']} have a first step over "
                f"max_len={info['max_len']} tokens (raise evaluate.processbench_max_len)",
            )
    scored = [r for r in rows if r["id"] in scores]
    results = report.named_results(
        scored, scores, cfg.processbench_calibrate, cfg.threshold, cfg.calib_fraction, cfg.seed
    )
    named = report.named_report(results, cfg.processbench_files, counts, info, cfg.processbench_step_sep)
    io.write_json(out / "processbench_files.json", named)
    io.write_jsonl(out / "processbench_files_predictions.jsonl", report.prediction_rows(results["prm"]))
    for line in report.named_lines(results["prm"], counts):
        print(line)
    return named


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
        "all_ones": (report.ones_scores(rows), {"threshold": cfg.threshold}),
        "entropy": (entropy_scores(rows, by_id), {"calibrate_on": "calib"}),
        "likelihood": (likelihood_scores(cfg, rows, by_id), {"calibrate_on": "calib"}),
    }
    results = {
        name: report.assess_or_fixed(rows, scores, how, cfg.threshold) for name, (scores, how) in scorers.items()
    }
    summary = report.synthetic_summary(results, rows, len(all_rows), left_out, info)
    io.write_json(out / "synthetic_processbench.json", summary)
    io.write_jsonl(out / "predictions.jsonl", report.prediction_rows(results["prm"]))
    test = [r for r in rows if r["subset"] == "test"]
    if test:
        curves = {
            name: f1_curve(
                [r["label"] for r in test], [scorers[name][0][r["id"]] for r in test], [i / 50 for i in range(51)]
            )
            for name in ("prm", "entropy", "likelihood")
        }
        plots.f1_vs_threshold(curves, {n: summary[n]["threshold"] for n in curves}, out / "f1_threshold.png")
    else:
        print(
            f"WARNING: the synthetic ProcessBench has no test rows ({len(rows)} rows from {len(all_rows)} solutions "
            "after balancing correct and erroneous ones): its metrics are None"
        )
    return summary


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    params: str | list[str] = "params.yaml",
    problems_path: str = "data/problems/eval.jsonl",
    data_dir: str = "data/eval",
    reports_dir: str = "reports",
    fewshot_path: str = "data/problems/train.jsonl",
) -> dict:
    cfg = load_section(params, "evaluate", EvaluateConfig)
    prompt_cfg = load_section(params, "prompt", PromptConfig)
    out = Path(reports_dir) / "eval"
    with tracking.stage_run("evaluate", cfg) as run:
        problems = io.read_jsonl(problems_path)
        examples = read_examples(fewshot_path, prompt_cfg)
        run.params(prompt_cfg, "prompt.")
        real = problem_kind(problems, problems_path) == "real"
        pb_problems, bon_problems, pedu_problems = report.problem_slices(
            problems, real, cfg.n_problems, cfg.bon_problems, cfg.pedu_problems
        )
        skipped = dict(report.REAL_SKIPS) if real else {}

        # ---- synthetic ProcessBench (synthetic problems only: its labels come from the exact checker)
        summary = {} if real else synthetic_processbench(cfg, pb_problems, data_dir, out)
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        for part, reason in skipped.items():
            print(f"evaluate: skipping {part}: {reason}")

        # ---- named ProcessBench files (official format), on any kind of problems
        named = named_processbench(cfg, out) if cfg.processbench_files else None
        n_rows = report.count_rows(summary, named, len(bon_problems))
        if sum(n_rows.values()) == 0:
            raise DataError(
                problems_path,
                None,
                None,
                f"the evaluate stage has 0 evaluation rows ({n_rows}; "
                f"{len(problems)} eval problems, real={real}): name ProcessBench files in "
                "evaluate.processbench_files or give Best-of-N problems (evaluate.bon_problems)",
            )

        # ---- Best-of-N (real problems: verified answers, votes over verified-equivalence classes)
        bon, meaningless = {}, None
        if bon_problems:
            completions = sample(cfg, bon_problems, cfg.bon_max_n, "bon", prompt_cfg, examples)
            cands = (bon_candidates_verified if real else bon_candidates)(cfg, bon_problems, completions)
            if real:
                io.write_jsonl(Path(data_dir) / "bon_candidates.jsonl", cands)
            bon, meaningless = report.bon_report(
                bon_accuracy(cands, ns=report.bon_ns(cfg.bon_max_n)), cands, real, cfg.allow_zero_oracle
            )
            if meaningless and cfg.allow_zero_oracle:
                print(f"WARNING: {meaningless}")
            io.write_json(out / "bon.json", bon)
            plots.bon_curves(bon, out / "bon.png")
        if meaningless and not cfg.allow_zero_oracle:  # after writing, so the candidates can be looked at
            run.flag_degenerate(
                "evaluate", [f"{meaningless}; see {out / 'bon.json'} and {Path(data_dir) / 'bon_candidates.jsonl'}"]
            )
        for line in report.bon_lines(bon):
            print(line)

        # ---- EDU-guided sampling (P-EDU) vs standard sampling at equal N
        pedu = None
        if pedu_problems and cfg.pedu_problems:
            pedu = pedu_compare(cfg, pedu_problems, prompt_cfg, examples)
            io.write_json(out / "edu_sampling.json", pedu)
            plots.accuracy_vs_tokens(pedu, out / "edu_sampling.png")
            run.metrics(report.pedu_metrics(pedu))
            print(report.pedu_line(pedu, cfg.pedu_n, cfg.pedu_seeds))

        # ---- report
        if skipped:
            io.write_json(out / "skipped.json", {"skipped": skipped})
            run.tags({f"eval/skipped/{part}": "skipped" for part in skipped})
        batches = report.eval_metrics(summary, named, bon)
        for metrics, step in batches:
            run.metrics(metrics, step=step)
        if pedu is not None:
            batches.append((report.pedu_metrics(pedu), None))
        io.write_json(Path(reports_dir) / "eval.json", metrics_file(batches, "eval/"))  # DVC metrics
        run.artifact(out, "eval")
        for line in report.summary_lines(summary):
            print(line)
    if real or named is not None:
        return {**summary, "skipped": skipped, "processbench_files": named, "bon": bon}
    return summary


if __name__ == "__main__":
    from flows._cli import main

    main(evaluate_flow, __doc__)
