"""Stage `label_quality`: how right are MC step labels, and what do they cost? Measured, not assumed.

    python -m flows.label_quality [--params params.yaml]

The same solutions (all samples of the first `n_problems` pool problems, plus their EDU-tree
branches for the tree scheme) are labeled by every scheme: newline steps + MC with several N,
fixed chunks + MC, EDU entropy steps + MC, EDU tree + MC (shared prefixes labeled once), and
OmegaPRM binary search. The synthetic checker's gold labels score them: step accuracy,
first-error accuracy, and precision/recall of "wrong" labels, against generated rollout tokens.
Outputs reports/labeling/quality.json and reports/labeling/{pareto,step_lengths}.png.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.config import LabelQualityConfig, load_section
from tasks.label_quality import compare_schemes


@flow(name="label_quality", log_prints=True)
def label_quality_flow(
    params: str | list[str] = "params.yaml",
    generations_dir: str = "data/generations",
    problems_path: str = "data/problems/pool.jsonl",
    reports_dir: str = "reports",
) -> dict:
    cfg = load_section(params, "label_quality", LabelQualityConfig)
    out_dir = Path(reports_dir) / "labeling"
    with tracking.stage_run("label_quality", cfg) as run:
        problems = io.read_jsonl(problems_path)[: cfg.n_problems]
        keep = {p["id"] for p in problems}
        answers = {p["id"]: p["answer"] for p in problems}
        samples = [r for r in io.read_jsonl(Path(generations_dir) / "generations.jsonl") if r["problem_id"] in keep]
        tree = [
            r for r in io.read_jsonl(Path(generations_dir) / "tree.jsonl", allow_empty=True) if r["problem_id"] in keep
        ]
        results = compare_schemes(cfg, samples, tree, answers)

        step_tokens = {name: r.pop("step_tokens") for name, r in results.items()}
        io.write_json(out_dir / "quality.json", results)
        plots.pareto(results, out_dir / "pareto.png")
        plots.step_lengths(step_tokens, out_dir / "step_lengths.png")
        for name, r in results.items():
            run.metrics(
                {
                    f"label_quality/{name}/{k}": v
                    for k, v in r.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
            )
        run.artifact(out_dir, "label_quality")
        for name, r in results.items():
            print(
                f"{name:>18}: step_acc {r['step_acc']:.3f}  first_error_acc {r['first_error_acc']:.3f}  "
                f"tokens/solution {r['tokens_per_solution']:.0f}  steps {r['mean_steps']:.2f}"
            )
    return results


if __name__ == "__main__":
    from flows._cli import main

    main(label_quality_flow, __doc__)
