"""Stage `experiments`: the papers' claims reproduced in miniature, with seeds and 95% CIs.

    python -m flows.experiments [--params params.yaml] [--smoke]
    dvc repro experiments/dvc.yaml          # the same, as a DVC stage (not in the default `dvc repro`)

Runs on the embedded default's artifacts (policy, generations, EDU labels, synthetic
ProcessBench) and writes reports/REPORT.md, reports/experiments.json (every number with its CI)
and plots under reports/experiments/. Experiments:

1. Label efficiency: step/first-error label accuracy vs exact gold against rollout tokens, for
   newline MC, OmegaPRM, EDU steps and the EDU tree (per seed: its own problem subset and rollouts).
2. Data efficiency: PRM F1 when trained on EDU labels at fractions of their rollout budget,
   against a PRM on static newline-MC labels of the same solutions at 100%.
3. Threshold ablation: fixed entropy thresholds and the calibrated strategy: steps per
   solution, label cost, label accuracy and PRM F1 (per seed: problem subset, rollouts, PRM).
4. Active learning: the `active` stage's strategies x seeds (reports/active/summary.json).
5. EDU sampling: the `evaluate` stage's P-EDU vs standard seeds (reports/eval/edu_sampling.json).

Every arm x seed is an MLflow run tagged `experiment`, `arm`, `seed`. `--smoke` shrinks every
experiment to a couple of seeds and problems (CI runs it to check the report is complete).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

from prefect import flow

from prmflow import experiment_report as rep
from prmflow import io, tracking
from prmflow.config import ExperimentsConfig, LabelConfig, LabelQualityConfig, SegmentConfig, TrainConfig, load_section
from tasks.experiments import (
    collect_active_learning,
    collect_edu_sampling,
    run_data_efficiency,
    run_label_efficiency,
    run_threshold_ablation,
)

SMOKE = {
    "seeds": [0, 1],
    "label_problems": 2,
    "data_fractions": [0.25, 1.0],
    "thresholds": [1.0],
    "ablation_problems": 4,
    "static_rollouts": 2,
}


@flow(name="experiments", log_prints=True)
def experiments_flow(
    params: str | list[str] = "params.yaml", smoke: bool = False, reports_dir: str = "reports"
) -> dict:
    cfg = load_section(params, "experiments", ExperimentsConfig)
    if smoke:
        cfg = replace(cfg, **SMOKE)
    seg_cfg = load_section(params, "segment", SegmentConfig)
    label_cfg = load_section(params, "label", LabelConfig)
    train_cfg = load_section(params, "train", TrainConfig)
    lq = load_section(params, "label_quality", LabelQualityConfig)
    if smoke:
        lq = replace(lq, newline_rollouts=[1, 2], num_rollouts=2)
    out = Path(reports_dir)
    with tracking.stage_run("experiments", cfg) as run:
        pool = io.read_jsonl("data/problems/pool.jsonl")
        samples = io.read_jsonl("data/generations/generations.jsonl")
        tree = io.read_jsonl("data/generations/tree.jsonl", allow_empty=True)
        pb_rows = io.read_jsonl("data/eval/synthetic_processbench.jsonl")
        edu_rows = io.read_jsonl("data/labels/labels.jsonl")
        experiments = {
            "label_efficiency": lambda: run_label_efficiency(cfg, lq, pool, samples, tree, out),
            "data_efficiency": lambda: run_data_efficiency(
                cfg, seg_cfg, label_cfg, train_cfg, edu_rows, samples, pool, pb_rows, out
            ),
            "threshold_ablation": lambda: run_threshold_ablation(
                cfg, seg_cfg, label_cfg, train_cfg, samples, pool, pb_rows, out
            ),
            "active_learning": lambda: collect_active_learning(cfg, out),
            "edu_sampling": lambda: collect_edu_sampling(cfg, out),
        }
        sections, seconds = [], {}
        for name, run_experiment in experiments.items():
            if cfg.runs(name):
                t0 = time.perf_counter()
                sections.append(run_experiment())
                seconds[name] = time.perf_counter() - t0
                print(f"{name}: {seconds[name] / 60:.1f} min")

        command = "python -m flows.experiments" + (" --smoke" if smoke else "")
        io.write_json(
            out / "experiments.json", {"config": asdict(cfg), "smoke": smoke, "sections": sections, "seconds": seconds}
        )
        io.write_text(
            out / "REPORT.md",
            rep.render(sections, {"command": command, "seeds": cfg.seeds, "level": cfg.level, "seconds": seconds}),
        )
        for metrics in rep.suite_metrics(sections, seconds):
            run.metrics(metrics)
        run.artifact(out / "REPORT.md")
        run.artifact(out / "experiments.json")
        if (out / "experiments").is_dir():
            run.artifact(out / "experiments", "plots")
        for s in sections:
            print(f"{s['title']}: {s['verdict']}")
    return {"sections": [s["title"] for s in sections]}


if __name__ == "__main__":
    import argparse
    import sys

    from prmflow.config import load_params
    from prmflow.io import DataError

    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--smoke", action="store_true", help="a couple of seeds and problems per experiment (CI)")
    args = parser.parse_args()
    try:
        load_params(args.params)
        experiments_flow(params=args.params, smoke=args.smoke)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
