"""Does ActPRM's selection pay more on a bigger pool? Active vs random vs full as the pool grows.

    python -m experiments.active_pool [--params params.yaml] [--scales 1 2 3] [--seeds 50 51 ...]

On the default pool (about 1673 solutions) ActPRM labels 77% and beats random selection at the
same per-round counts by +0.010 F1, an interval that touches 0 (reports/active/summary.json).
The ensemble grows more confident as it trains (it skips 2% of a batch at round 3 and about
30% in the last rounds), so a longer stream should lower the label fraction and give selection
more to choose from. This sweep tests that. It extends the pool and runs, for each scale and
seed, what stage `active` runs: `full`, `active`, then `random` at active's per-round counts,
through the stage's own task function (tasks.active.run_strategy, oracle labeler, params.yaml's
`active` section, cached head inputs).

How the pool grows: scale s adds the problems the problems stage would have drawn with
`n_pool * s`. The seeded problem stream is prefix-stable, so train, eval and the first n_pool pool
problems stay exactly the stage's. The extra problems get `generate.n` samples each from
models/policy with the generate stage's settings and no EDU trees (tasks.generate.sample_problems),
cut at the entropy threshold the segment stage calibrated (reports/segment.json). The pool of
scale s is the stage's own pool plus the extras of the first n_pool * (s - 1) extra problems.

The extras are sampled in blocks of n_pool problems, one generation job each, so the pool of
scale s does not depend on the largest scale asked for. They are kept under
checkpoints/sweeps/active_pool/ (keyed by the generate knobs, the policy's bytes and the block's
problems), so a rerun does not sample again. `--set key=value,...` overrides fields of the
`active` section, as experiments.active_budget's cells do.

Two statistics per scale, both paired by seed (prmflow.active.compare): `paired` compares the
final F1 (mean of the last `final_window` evaluations); `plateau` averages the per-round
difference over the evaluations in the second half of the stream, where every strategy's F1
has levelled off, so it reads many models per run instead of the last few. Writes
reports/sweeps/active_pool.json (with every run's curve) after every scale. No Prefect runs, no MLflow.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prmflow import io, plots
from prmflow.active import FeatureCache, mean_curve, paired_at_budget, paired_plateau, summarize
from prmflow.config import ActiveConfig, GenerateConfig, ProblemsConfig, SegmentConfig, load_section


def extra_problems(params: str, pool_path: str, scale: int) -> list[dict[str, Any]]:
    """The pool problems that `n_pool * scale` would add after the stage's own, in stream order."""
    from tasks.problems import sample_problems

    pcfg = load_section(params, "problems", ProblemsConfig)
    if pcfg.source != "synthetic":
        raise SystemExit(
            f"experiments.active_pool: problems.source is {pcfg.source!r}; only the synthetic stream extends"
        )
    pool = sample_problems.fn(replace(pcfg, n_pool=pcfg.n_pool * scale))["pool"]
    have = [r["id"] for r in io.read_jsonl(pool_path)]
    if [r["id"] for r in pool[: len(have)]] != have:
        raise SystemExit(
            f"experiments.active_pool: {pool_path} is not the prefix of the problem stream params.yaml "
            "draws; run `dvc repro problems` first"
        )
    return pool[len(have) :]


def extra_segments(params: str, problems: list[dict[str, Any]], state_root: Path) -> Path:
    """Sample (or find under state_root) and segment the solutions of `problems`; the segments file."""
    from tasks.generate import _backend, job_dir, plan_batches, sample_problems
    from tasks.segment import segment_rows

    gcfg = replace(load_section(params, "generate", GenerateConfig), tree_problems=0)
    scfg = load_section(params, "segment", SegmentConfig)
    # the segment stage's calibrated threshold, as tasks.segment.segment passes it
    threshold = io.read_json("reports/segment.json")["threshold"] if scfg.strategy == "calibrated" else None
    wd = job_dir(gcfg, problems, str(state_root))  # keyed by the generate knobs, the policy's bytes and the problems
    gen_path, seg_path = wd / "generations.jsonl", wd / f"segments-{threshold}.jsonl"
    if gen_path.is_file():
        rows = io.read_jsonl(gen_path)
    else:
        wd.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        recs = sample_problems(_backend(gcfg), gcfg, plan_batches(gcfg, problems, wd), set())
        rows = [r for rec in recs for r in rec["samples"]]
        io.write_jsonl(gen_path, rows)
        print(f"sampled {len(rows)} extra solutions of {len(problems)} problems in {time.perf_counter() - t0:.0f} s")
    if not seg_path.is_file():
        io.write_jsonl(seg_path, segment_rows(scfg, rows, threshold)[0])
    return seg_path


def main() -> None:
    from experiments.active_budget import paired_line, parse_cell, run_strategies
    from flows.active import load_eval, load_pool

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(50, 60)))
    ap.add_argument("--out", default="reports/sweeps/active_pool.json")
    ap.add_argument("--pool-problems", default="data/problems/pool.jsonl")
    ap.add_argument("--segments", default="data/segments/segments.jsonl")
    ap.add_argument("--eval", default="data/eval/synthetic_processbench.jsonl")
    ap.add_argument("--state", default="checkpoints/sweeps/active_pool")
    ap.add_argument("--set", default="", help="override fields of params.yaml's active section: key=value,...")
    ap.add_argument("--plot-only", action="store_true", help="only redraw the PNGs from --out")
    args = ap.parse_args()
    if args.plot_only:
        plot(io.read_json(args.out)["cells"], Path(args.out))
        return
    if min(args.scales) < 1:
        raise SystemExit("--scales must be >= 1")

    overrides = parse_cell(args.set)
    cfg = replace(
        load_section(args.params, "active", ActiveConfig),
        **overrides,
        labeler="oracle",
        freeze_backbone=True,
        cache_features=True,
    )
    problems = {r["id"]: r for r in io.read_jsonl(args.pool_problems)}
    base_pool = load_pool(args.segments, problems, 0)
    n_pool = len(problems)
    extra = extra_problems(args.params, args.pool_problems, max(args.scales)) if max(args.scales) > 1 else []
    problems.update((p["id"], p) for p in extra)
    extra_rows = [
        r
        for b in range(0, len(extra), n_pool)
        for r in load_pool(str(extra_segments(args.params, extra[b : b + n_pool], Path(args.state))), problems, 0)
    ]
    rank = {p["id"]: i for i, p in enumerate(extra)}
    eval_rows = load_eval(args.eval, cfg.eval_size)
    features = FeatureCache()
    cells: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            pool = base_pool + [r for r in extra_rows if rank[r["problem_id"]] < n_pool * (scale - 1)]
            t0 = time.perf_counter()
            runs = run_strategies(cfg, args.seeds, pool, problems, eval_rows, Path(tmp) / f"x{scale}", features)
            summary = summarize(runs, cfg.match_fractions, cfg.final_window)
            summary["paired"] = paired_at_budget(runs, cfg.final_window)
            summary["plateau"] = paired_plateau(runs)
            cells.append(
                {
                    "scale": scale,
                    "pool": len(pool),
                    "pool_problems": n_pool * scale,
                    "seeds": args.seeds,
                    "rounds": runs["full"][args.seeds[0]]["rounds"],
                    "seconds": time.perf_counter() - t0,
                    "confident_fraction_by_round": _mean_by_round(runs["active"], "confident_fraction"),
                    "mean_curves": {s: mean_curve([r["curve"] for r in runs[s].values()]) for s in runs},
                    "summary": summary,
                    "curves": {
                        s: {
                            str(seed): [{k: p.get(k) for k in ("round", "labels_spent", "f1")} for p in r["curve"]]
                            for seed, r in runs[s].items()
                        }
                        for s in runs
                    },
                }
            )
            line = ", ".join(
                f"{s} F1 {summary[s]['final_f1']['mean']:.3f} @{summary[s]['labels_spent']['mean']:.0f}" for s in runs
            )
            line += "; paired: " + paired_line(summary["paired"]) + "; plateau: " + paired_line(summary["plateau"])
            print(f"[x{scale}] pool {len(pool)}: {line} ({cells[-1]['seconds']:.0f} s)", flush=True)
            io.write_json(
                args.out,
                {
                    "params": args.params,
                    "overrides": overrides,
                    "eval_rows": len(eval_rows),
                    "active": {
                        k: getattr(cfg, k)
                        for k in (
                            "p",
                            "std_threshold",
                            "batch_size",
                            "lr",
                            "lr_schedule",
                            "lr_final",
                            "grad_steps",
                            "num_heads",
                            "head_data_keep",
                            "l2_to_init",
                            "final_window",
                            "eval_every",
                        )
                    },
                    "cells": cells,
                },
            )
            plot(cells, Path(args.out))
    print(f"wrote {args.out}")


def plot(cells: list[dict[str, Any]], out: Path) -> None:
    """<out>.png: active minus random and minus full (final F1 and, where recorded, the plateau mean;
    95% CI over seeds) and active's label fraction against the pool size; <out>_x<scale>.png: each
    scale's F1-vs-labels curves."""
    by_pool = sorted(cells, key=lambda c: c["pool"])
    series = {
        f"active minus {b}, final F1": [(c["pool"], c["summary"]["paired"][f"active_minus_{b}"]) for c in by_pool]
        for b in ("random", "full")
    }
    if all("plateau" in c["summary"] for c in by_pool):
        series.update(
            {
                f"active minus {b}, plateau mean": [
                    (c["pool"], c["summary"]["plateau"][f"active_minus_{b}"]) for c in by_pool
                ]
                for b in ("random", "full")
            }
        )
    fractions = ", ".join(f"{c['pool']}: {c['summary']['paired']['label_fraction']['mean']:.0%}" for c in by_pool)
    plots.ci_lines(
        series,
        out.with_suffix(".png"),
        "pool size (solutions streamed once)",
        "F1 difference (95% CI over seeds)",
        f"ActPRM vs the baselines as the pool grows\nactive's labels / full's: {fractions}",
        hline=0.0,
    )
    for c in (c for c in by_pool if "mean_curves" in c):
        plots.active_curves(
            c["mean_curves"],
            out.with_name(f"{out.stem}_x{c['scale']}.png"),
            title=f"pool {c['pool']} (x{c['scale']}), {len(c['seeds'])} seeds",
        )


def _mean_by_round(runs: dict[int, dict[str, Any]], key: str) -> list[float]:
    """Per round, the mean over seeds of history[key] (rounds every seed reached)."""
    hists = [[h[key] for h in r["history"] if h["round"] > 0] for r in runs.values()]
    n = min(map(len, hists), default=0)
    return [round(sum(h[t] for h in hists) / len(hists), 4) for t in range(n)]


if __name__ == "__main__":
    main()
