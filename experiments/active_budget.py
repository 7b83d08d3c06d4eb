"""Is the ActPRM loop bound by labels or by optimization? Active vs random vs full per loop setting.

    python -m experiments.active_budget [--params params.yaml] [--seeds 0 1 2] \
        [--cells grad_steps=3 grad_steps=10 pool_size=0,grad_steps=10 ...]

Each cell overrides fields of params.yaml's `active` section (comma-separated key=value; values
are read as YAML) and runs, per seed, exactly what stage `active` runs: `full`, then `active`,
then `random` at active's per-round counts, through the stage's own task function
(tasks.active.run_strategy, oracle labeler, cached head inputs shared by all runs). The cell's
summary is `prmflow.active.summarize` plus `paired_at_budget` (`paired`: per seed, active's final
F1 minus random's and minus full's, and its label fraction), as in reports/active/summary.json.
`full` ignores the selection thresholds, so cells that differ only in `p`, `std_threshold` and
`select_fraction` share its runs. Writes
reports/sweeps/active_budget.json after every cell. No Prefect, no MLflow; state goes to a
temporary directory.

If selection is to pay, active must reach full's F1 with fewer labels than random does; that can
only show in a loop whose F1 is limited by which labels it gets, not by how few optimizer
steps it takes. Sweeping `grad_steps` and the pool size separates the two.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prmflow import io
from prmflow.active import FeatureCache, paired_at_budget, summarize
from prmflow.config import ActiveConfig, load_section


def parse_cell(text: str) -> dict[str, Any]:
    """'grad_steps=10,pool_size=0' -> {'grad_steps': 10, 'pool_size': 0}

    >>> parse_cell("grad_steps=10,p=0.7")
    {'grad_steps': 10, 'p': 0.7}
    """
    out = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"cell {text!r}: {part!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_strategies(
    cfg: ActiveConfig,
    seeds: Sequence[int],
    pool: list[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    root: Path,
    features: FeatureCache,
    full_runs: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Per seed, what stage `active` runs: `full`, `active`, then `random` at active's per-round
    counts (tasks.active.run_strategy, loop state under root/<strategy>-seed<seed>).

    `full_runs` maps full's settings (thresholds aside, as `full` ignores them) and seed to its
    result, filled and reused across calls on the same pool; None runs `full` every time.
    """
    from tasks.active import run_strategy

    runs: dict[str, dict[int, dict[str, Any]]] = {"full": {}, "active": {}, "random": {}}
    for seed in seeds:
        for strategy in runs:
            key = repr((replace(cfg, p=0.0, std_threshold=0.0, select_fraction=0.0), seed))
            if strategy == "full" and full_runs is not None and key in full_runs:
                runs["full"][seed] = full_runs[key]
                continue
            counts = runs["active"][seed]["counts"] if strategy == "random" else None
            runs[strategy][seed] = run_strategy.fn(
                cfg,
                strategy,
                seed,
                pool,
                problems,
                eval_rows,
                str(root / f"{strategy}-seed{seed}"),
                counts=counts,
                feature_cache=features,
            )
            if strategy == "full" and full_runs is not None:
                full_runs[key] = runs["full"][seed]
    return runs


def paired_line(paired: dict[str, Any]) -> str:
    """`paired_at_budget` output as one line: each difference with its interval."""
    return ", ".join(
        f"{k} {v['mean']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]"
        for k, v in paired.items()
        if isinstance(v, dict) and v.get("lo") is not None
    )


def main() -> None:
    from flows.active import load_eval, load_pool

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--cells",
        nargs="+",
        default=[
            "grad_steps=3",
            "grad_steps=10",
            "grad_steps=30",
            "pool_size=0,grad_steps=3",
            "pool_size=0,grad_steps=10",
            "pool_size=0,grad_steps=30",
        ],
    )
    ap.add_argument("--out", default="reports/sweeps/active_budget.json")
    ap.add_argument("--eval", default="data/eval/synthetic_processbench.jsonl")
    args = ap.parse_args()

    base = replace(
        load_section(args.params, "active", ActiveConfig), labeler="oracle", freeze_backbone=True, cache_features=True
    )
    problems = {r["id"]: r for r in io.read_jsonl("data/problems/pool.jsonl")}
    eval_rows = load_eval(args.eval, base.eval_size)
    features = FeatureCache()
    full_runs: dict[str, dict[str, Any]] = {}
    cells: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for c, text in enumerate(args.cells):
            overrides = parse_cell(text)
            cfg = replace(base, **overrides)
            pool = load_pool("data/segments/segments.jsonl", problems, cfg.pool_size)
            t0 = time.perf_counter()
            runs = run_strategies(
                cfg, args.seeds, pool, problems, eval_rows, Path(tmp) / f"cell{c}", features, full_runs
            )
            summary = summarize(runs, cfg.match_fractions, cfg.final_window)
            summary["paired"] = paired_at_budget(runs, cfg.final_window)
            cells.append(
                {
                    "cell": text,
                    "overrides": overrides,
                    "pool": len(pool),
                    "seeds": args.seeds,
                    "rounds": runs["full"][args.seeds[0]]["rounds"],
                    "seconds": time.perf_counter() - t0,
                    "summary": summary,
                }
            )
            line = ", ".join(
                f"{s} F1 {summary[s]['final_f1']['mean']:.3f}+-{summary[s]['final_f1']['std']:.3f} "
                f"@{summary[s]['labels_spent']['mean']:.0f}"
                + (
                    f" (to 0.95 of full's gain: {summary[s]['match']['0.95']['fraction_of_full']['mean']}"
                    f", {summary[s]['match']['0.95']['fraction_of_full']['reached']}/{len(args.seeds)} seeds)"
                    if "match" in summary[s] and "0.95" in summary[s]["match"]
                    else ""
                )
                for s in runs
            )
            line += "; paired: " + paired_line(summary["paired"])
            print(f"[{text}] pool {len(pool)}: {line} ({cells[-1]['seconds']:.0f} s)", flush=True)
            io.write_json(
                args.out,
                {
                    "params": args.params,
                    "eval_rows": len(eval_rows),
                    "base": {
                        k: getattr(base, k)
                        for k in (
                            "p",
                            "std_threshold",
                            "batch_size",
                            "lr",
                            "grad_steps",
                            "pool_size",
                            "num_heads",
                            "head_data_keep",
                            "l2_to_init",
                            "final_window",
                        )
                    },
                    "cells": cells,
                },
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
