"""Stage `active`: ActPRM active learning vs random and full labeling, F1 against labels spent.

    python -m flows.active [--params params.yaml]

ActPRM (arXiv 2504.10559): an ensemble PRM streams the unlabeled pool in batches, sends only
the solutions it is unsure about to the labeler and trains on those alone (prmflow.active).
For every seed, three runs start from the same fresh ensemble on models/policy and see the pool
in the same order: `full` labels every solution, `active` the uncertain ones, `random` exactly as
many per round as `active` did (uniformly drawn), so all curves share one budget axis.
Every `eval_every` rounds each run is scored on synthetic ProcessBench (threshold calibrated on
`calib`, F1 on `test`). Outputs reports/active/summary.json (final F1, labels spent, and the labels
each strategy needs to reach the initial F1 plus q times full labeling's F1 gain; F1 is read as
a trailing mean of `final_window` evaluations, see prmflow.active.compare),
reports/active/curves.json and reports/active/curve.png. `paired` in the summary holds, per seed
and with intervals, active's final F1 minus random's and minus full's, and active's labels as a
fraction of full's: whether the selection pays at the budget it spends. `plateau` holds the same
differences averaged over every evaluation in the second half of the stream (prmflow.active.paired_plateau),
which reads many models per run instead of the last few. Each (strategy, seed) is an MLflow run
nested under the stage's run.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.active import FeatureCache, mean_curve
from prmflow.active import report as rep
from prmflow.active.report import load_eval, load_pool
from prmflow.config import ActiveConfig, load_section
from prmflow.summaries import metrics_file
from tasks.active import loop_config, run_dir, run_strategy


@flow(name="active", log_prints=True)
def active_flow(params: str | list[str] = "params.yaml", segments_path: str = "data/segments/segments.jsonl",
                problems_path: str = "data/problems/pool.jsonl",
                eval_path: str = "data/eval/synthetic_processbench.jsonl", reports_dir: str = "reports",
                state_root: str = "checkpoints/active") -> dict:
    cfg = load_section(params, "active", ActiveConfig)
    out = Path(reports_dir) / "active"
    strategies = rep.strategy_order(cfg.strategies)
    with tracking.stage_run("active", cfg) as stage:
        # ---- data
        problems = {r["id"]: r for r in io.read_jsonl(problems_path)}
        pool = load_pool(segments_path, problems, cfg.pool_size)
        eval_rows = load_eval(eval_path, cfg.eval_size)
        inputs = [segments_path, problems_path, eval_path, cfg.backbone]
        print(f"active: pool {len(pool)} solutions, {len(eval_rows)} eval rows, labeler {cfg.labeler}")

        # ---- one run per (strategy, seed), each an MLflow run nested under the stage's
        features = FeatureCache() if cfg.cache_features else None  # one backbone pass per solution per stage
        runs: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in strategies}
        seconds: dict[str, list[float]] = {s: [] for s in strategies}
        for seed in cfg.seeds:
            for strategy in strategies:
                counts = runs["active"][seed]["counts"] if strategy == "random" and "active" in runs else None
                with tracking.stage_run(f"active/{strategy}/seed{seed}", parent_run_id=stage.run_id) as run:
                    run.tags({"strategy": strategy, "seed": str(seed), "labeler": cfg.labeler})
                    run.params(asdict(loop_config(cfg, strategy, seed)), prefix="loop.")
                    t0 = time.perf_counter()
                    res = run_strategy.with_options(retries=cfg.task_retries)(
                        cfg, strategy, seed, pool, problems, eval_rows,
                        str(run_dir(cfg, strategy, seed, inputs, state_root)), run.run_id, counts, features)
                    seconds[strategy].append(time.perf_counter() - t0)
                    run.metrics(rep.run_metrics(res, seconds[strategy][-1]))
                runs[strategy][seed] = res
                print(f"active: {strategy} seed {seed}: F1 {res['final_f1']} with {res['labels_spent']} labels "
                      f"({seconds[strategy][-1]:.0f} s)")

        # ---- summary, curves, plot
        data = rep.data_summary(runs, pool, eval_rows, cfg.labeler, features.backbone_passes if features is not None else None)
        summary = rep.stage_summary(runs, seconds, cfg.match_fractions, cfg.final_window, data)
        io.write_json(out / "summary.json", summary)
        io.write_json(out / "curves.json", rep.curves(runs))
        plots.active_curves({s: mean_curve([r["curve"] for r in runs[s].values()]) for s in strategies},
                            out / "curve.png", rep.gain_targets(summary, runs, cfg.match_fractions))
        batches = rep.stage_metrics(summary, strategies)
        for metrics in batches:
            stage.metrics(metrics)
        io.write_json(Path(reports_dir) / "active.json", metrics_file([(m, None) for m in batches], "active/"))
        stage.artifact(out, "active")
        for line in rep.summary_lines(summary, strategies):
            print(line)
    return summary


if __name__ == "__main__":
    from flows._cli import main

    main(active_flow, __doc__)
