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

from prmflow import io, tracking
from prmflow.config import EvaluateConfig, load_section
from prmflow.evaluate import report
from prmflow.evaluate.verdict import problem_kind
from prmflow.io import DataError
from prmflow.prompts import PromptConfig, read_examples
from prmflow.summaries import metrics_file
from tasks.evaluate import best_of_n, edu_sampling, named_processbench, synthetic_processbench


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
            bon, meaningless = best_of_n(cfg, bon_problems, real, prompt_cfg, examples, data_dir, out)
        if meaningless and not cfg.allow_zero_oracle:  # after writing, so the candidates can be looked at
            run.flag_degenerate(
                "evaluate", [f"{meaningless}; see {out / 'bon.json'} and {data_dir}/bon_candidates.jsonl"]
            )

        # ---- EDU-guided sampling (P-EDU) vs standard sampling at equal N
        pedu = (
            edu_sampling(cfg, pedu_problems, prompt_cfg, examples, out) if pedu_problems and cfg.pedu_problems else None
        )

        # ---- report: MLflow metrics, and the same numbers as the DVC metrics file
        if skipped:
            io.write_json(out / "skipped.json", {"skipped": skipped})
            run.tags({f"eval/skipped/{part}": "skipped" for part in skipped})
        batches = report.eval_metrics(summary, named, bon) + ([(report.pedu_metrics(pedu), None)] if pedu else [])
        for metrics, step in batches:
            run.metrics(metrics, step=step)
        io.write_json(Path(reports_dir) / "eval.json", metrics_file(batches, "eval/"))
        run.artifact(out, "eval")
        for line in report.summary_lines(summary):
            print(line)
    if real or named is not None:
        return {**summary, "skipped": skipped, "processbench_files": named, "bon": bon}
    return summary


if __name__ == "__main__":
    from flows._cli import main

    main(evaluate_flow, __doc__)
