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

The coarse task is one seed (tasks.active.run_seed: its strategies in order). `task_runner: thread`
runs the seeds one after another in this process, sharing one feature cache; `ray` submits every
seed at once to the cluster (tasks.runners.run_shards), each task with a cache of its own, its loop
state under `shard_storage`/active (else `state_root`) and its MLflow runs in this process's store.
summary.json and curves.json are the same either way, except timings (`seconds_per_run`) and
`data.backbone_passes` (per task under ray, so summed over tasks).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.active import FeatureCache, mean_curve
from prmflow.active import report as rep
from prmflow.active.report import load_eval, load_pool
from prmflow.config import ActiveConfig, load_section
from prmflow.summaries import metrics_file
from tasks import runners
from tasks.active import run_dir, run_seed


@flow(name="active", log_prints=True)
def active_flow(
    params: str | list[str] = "params.yaml",
    segments_path: str = "data/segments/segments.jsonl",
    problems_path: str = "data/problems/pool.jsonl",
    eval_path: str = "data/eval/synthetic_processbench.jsonl",
    reports_dir: str = "reports",
    state_root: str = "checkpoints/active",
) -> dict:
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

        # ---- one task per seed (its strategies in order), each (strategy, seed) an MLflow run nested under the stage's
        # thread: one feature cache for the stage; ray: each seed task makes its own
        features = FeatureCache() if cfg.cache_features and cfg.task_runner == "thread" else None
        state = str(runners.shard_root(cfg, state_root, "active"))
        task_cfg = runners.for_workers(cfg, backbone=cfg.backbone, mc_model=cfg.mc_model)
        done = runners.run_shards(
            run_seed,
            cfg,
            "active",
            [
                {
                    "cfg": task_cfg,
                    "strategies": strategies,
                    "seed": seed,
                    "pool": pool,
                    "problems": problems,
                    "eval_rows": eval_rows,
                    "state_dirs": {s: str(run_dir(cfg, s, seed, inputs, state)) for s in strategies},
                    "parent_run_id": stage.run_id,
                    "tracking_uri": tracking.absolute_uri(),
                    "feature_cache": features,
                }
                for seed in cfg.seeds
            ],
        )
        runs = {s: {seed: d["runs"][s] for seed, d in zip(cfg.seeds, done)} for s in strategies}
        seconds = {s: [d["seconds"][s] for d in done] for s in strategies}
        passes = sum(d["backbone_passes"] for d in done) if cfg.cache_features else None  # summed over tasks
        if cfg.task_runner == "ray":
            print(f"active: seeds ran on nodes {[d['node'] for d in done]}")

        # ---- summary, curves, plot
        data = rep.data_summary(runs, pool, eval_rows, cfg.labeler, passes)
        summary = rep.stage_summary(runs, seconds, cfg.match_fractions, cfg.final_window, data)
        io.write_json(out / "summary.json", summary)
        io.write_json(out / "curves.json", rep.curves(runs))
        plots.active_curves(
            {s: mean_curve([r["curve"] for r in runs[s].values()]) for s in strategies},
            out / "curve.png",
            rep.gain_targets(summary, runs, cfg.match_fractions),
        )
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
