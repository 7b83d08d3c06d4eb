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

import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.active import FeatureCache, initial_f1, mean_curve, paired_at_budget, paired_plateau, summarize
from prmflow.config import ActiveConfig, load_section
from tasks.active import loop_config, run_dir, run_strategy


def load_pool(path: str, problems: dict[str, Any], cap: int) -> list[dict[str, Any]]:
    """Segmented solutions with at least one step whose problem is known; the first `cap` by id (0 = all)."""
    rows = []
    for line in io.iter_jsonl(path):
        rid, pid, steps = line.get("id", str), line.get("problem_id", str), line.get("steps", list)
        line.get("prompt", str)
        if pid not in problems:
            raise line.error("problem_id", f"problem {pid!r} is not in the problems file")
        if steps:
            rows.append({k: line.row[k] for k in ("id", "problem_id", "prompt", "steps", "gold_labels") if k in line.row})
            rows[-1]["id"] = rid
    rows.sort(key=lambda r: r["id"])
    return rows[:cap] if cap else rows


def load_eval(path: str, size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Synthetic ProcessBench rows (with their `subset`); a seeded sample of `size` of them (0 = all)."""
    rows = []
    for line in io.iter_jsonl(path, allow_empty=True):  # a tiny config can leave it empty: no F1 then
        rows.append({"id": line.get("id", str), "problem": line.get("problem", str), "steps": line.get("steps", list),
                     "label": line.get("label", int), "subset": line.get("subset", str)})
    if size and size < len(rows):
        keep = set(random.Random(seed).sample(range(len(rows)), size))
        rows = [r for i, r in enumerate(rows) if i in keep]
    return rows


@flow(name="active", log_prints=True)
def active_flow(params: str | list[str] = "params.yaml", segments_path: str = "data/segments/segments.jsonl",
                problems_path: str = "data/problems/pool.jsonl",
                eval_path: str = "data/eval/synthetic_processbench.jsonl", reports_dir: str = "reports",
                state_root: str = "checkpoints/active") -> dict:
    cfg = load_section(params, "active", ActiveConfig)
    out = Path(reports_dir) / "active"
    # random matches active's per-round label counts, so it runs after active
    strategies = sorted(dict.fromkeys(cfg.strategies), key=["full", "active", "random"].index)
    with tracking.stage_run("active", cfg) as stage:
        # ---- data
        problems = {r["id"]: r for r in io.read_jsonl(problems_path)}
        pool = load_pool(segments_path, problems, cfg.pool_size)
        eval_rows = load_eval(eval_path, cfg.eval_size)
        inputs = [segments_path, problems_path, eval_path, cfg.backbone]
        print(f"active: pool {len(pool)} solutions, {len(eval_rows)} eval rows, labeler {cfg.labeler}")

        # ---- one run per (strategy, seed)
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
                    final = {"active/final_f1": res["final_f1"]} if res["final_f1"] is not None else {}
                    run.metrics({**final, "active/labels_spent": res["labels_spent"], "active/seconds": seconds[strategy][-1]})
                runs[strategy][seed] = res
                print(f"active: {strategy} seed {seed}: F1 {res['final_f1']} with {res['labels_spent']} labels "
                      f"({seconds[strategy][-1]:.0f} s)")

        # ---- summary, curves, plot
        summary = summarize(runs, cfg.match_fractions, cfg.final_window)
        for s in strategies:
            summary[s]["final_f1_last_eval"] = {str(seed): r["final_f1"] for seed, r in runs[s].items()}
            summary[s]["seconds_per_run"] = sum(seconds[s]) / len(seconds[s])
            summary[s]["labeler_cost"] = {str(seed): r["cost"] for seed, r in runs[s].items()}
        # does the selection pay? final F1 per seed at the budget active spent (random spends the same)
        summary["paired"] = paired_at_budget(runs, cfg.final_window)
        summary["plateau"] = paired_plateau(runs)
        summary["data"] = {"pool": len(pool), "eval_rows": len(eval_rows),
                           "eval_test_rows": sum(r["subset"] == "test" for r in eval_rows),
                           "rounds": next(iter(next(iter(runs.values())).values()))["rounds"] if pool else 0,
                           "labeler": cfg.labeler,
                           # solutions featurized by the frozen backbone for all runs together (cache_features)
                           "backbone_passes": features.backbone_passes if features is not None else None}
        io.write_json(out / "summary.json", summary)
        io.write_json(out / "curves.json", {s: {str(seed): r["history"] for seed, r in by.items()} for s, by in runs.items()})
        means = {s: mean_curve([r["curve"] for r in runs[s].values()]) for s in strategies}
        targets = {}
        if "full" in summary and summary["full"]["final_f1"]["mean"] is not None:
            f0 = sum(initial_f1(r["curve"]) for r in runs["full"].values()) / len(runs["full"])
            gain = summary["full"]["final_f1"]["mean"] - f0
            targets = {f"initial + {q:g} x full's gain": f0 + q * gain for q in cfg.match_fractions}
        plots.active_curves(means, out / "curve.png", targets)

        for s in strategies:
            metrics = {f"active/{s}/final_f1_mean": summary[s]["final_f1"]["mean"],
                       f"active/{s}/labels_spent_mean": summary[s]["labels_spent"]["mean"]}
            for q, m in summary[s].get("match", {}).items():
                metrics[f"active/{s}/labels_fraction_at_{q}"] = m["fraction_of_full"]["mean"]
            stage.metrics({k: v for k, v in metrics.items() if v is not None})
        for name in ("paired", "plateau"):
            stage.metrics({f"active/{name}/{k}": v["mean"] for k, v in summary[name].items() if isinstance(v, dict)})
        stage.artifact(out, "active")
        for s in strategies:
            m = summary[s]
            match = {q: v["fraction_of_full"]["mean"] for q, v in m.get("match", {}).items()}
            print(f"  {s:>6}: final F1 {m['final_f1']['mean']} +- {m['final_f1']['std']}, labels "
                  f"{m['labels_spent']['mean']} +- {m['labels_spent']['std']}, labels/full to reach q of full's gain: {match}")
        for name in ("paired", "plateau"):
            for k, v in summary[name].items():
                if isinstance(v, dict):
                    print(f"  {name} {k}: {v['mean']:.4f} [{v['lo']}, {v['hi']}] over {v['n']} seeds")
    return summary


if __name__ == "__main__":
    from flows._cli import main

    main(active_flow, __doc__)
