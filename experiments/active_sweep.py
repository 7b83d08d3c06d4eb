"""Sweep ActPRM's confidence thresholds (p, std_threshold): how many labels each buys, at what F1.

    python -m experiments.active_sweep [--params params.yaml] [--seeds 0] [--grid 0.9:0.01 0.8:0.05 ...]

Why: with the released ActPRM defaults (p 0.9, std 0.01) a small ensemble on a small pool may
never be confident, so `active` labels everything and selection cannot pay. This runs the real
loop of stage `active` (prmflow.active.run_active_learning, the oracle labeler, the same pool,
eval rows and PRM config from params.yaml's `active` section) once per (p, std) and seed with
the strategy `active`, plus `full` once per seed as the reference, and writes
reports/sweeps/active_sweep.json: labels spent, final F1 (trailing mean of `final_window`
evaluations, as the stage reports it) and the labels needed to reach `full`'s final F1 gain.
No Prefect, no MLflow: a research sweep, not a stage. State goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prmflow import io
from prmflow.active import FeatureCache
from prmflow.active.compare import final_f1, initial_f1, labels_to_reach
from prmflow.config import ActiveConfig, load_section


def one_run(
    cfg: ActiveConfig,
    strategy: str,
    seed: int,
    pool,
    problems,
    eval_rows,
    root: Path,
    features: FeatureCache | None = None,
) -> dict:
    """One run exactly as stage `active` makes it (its task's function, without Prefect or MLflow), timed.

    `features` is shared by all runs, as the stage shares it (with `active.cache_features`)."""
    from tasks.active import run_strategy

    t0 = time.perf_counter()
    out = run_strategy.fn(
        replace(cfg, labeler="oracle"),
        strategy,
        seed,
        pool,
        problems,
        eval_rows,
        str(root / f"{strategy}-p{cfg.p}-s{cfg.std_threshold}-seed{seed}"),
        feature_cache=features,
    )
    out["seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    from flows.active import load_eval, load_pool

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--grid", nargs="+", default=["0.9:0.01", "0.8:0.05", "0.7:0.05", "0.8:0.1"], help="p:std_threshold pairs"
    )
    ap.add_argument("--out", default="reports/sweeps/active_sweep.json")
    args = ap.parse_args()

    cfg = load_section(args.params, "active", ActiveConfig)
    problems = {r["id"]: r for r in io.read_jsonl("data/problems/pool.jsonl")}
    pool = load_pool("data/segments/segments.jsonl", problems, cfg.pool_size)
    eval_rows = load_eval("data/eval/synthetic_processbench.jsonl", cfg.eval_size)
    grid = [tuple(map(float, g.split(":"))) for g in args.grid]
    rows = []
    features = FeatureCache() if cfg.cache_features else None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            full = one_run(cfg, "full", seed, pool, problems, eval_rows, Path(tmp), features)
            f_full, f0 = final_f1(full["curve"], cfg.final_window), initial_f1(full["curve"])
            print(
                f"seed {seed} full: F1 {f_full:.3f} (from {f0:.3f}) with {full['labels_spent']} labels "
                f"({full['seconds']:.0f} s)",
                flush=True,
            )
            for p, std in grid:
                c = replace(cfg, p=p, std_threshold=std)
                res = one_run(c, "active", seed, pool, problems, eval_rows, Path(tmp), features)
                f = final_f1(res["curve"], cfg.final_window)
                match = {
                    str(q): labels_to_reach(res["curve"], f0 + q * (f_full - f0), cfg.final_window)
                    for q in cfg.match_fractions
                }
                rows.append(
                    {
                        "seed": seed,
                        "p": p,
                        "std_threshold": std,
                        "labels_spent": res["labels_spent"],
                        "final_f1": f,
                        "full_final_f1": f_full,
                        "full_labels": full["labels_spent"],
                        "initial_f1": f0,
                        "labels_to_match": match,
                        "seconds": res["seconds"],
                        "confident_fraction": [round(h["confident_fraction"], 3) for h in res["history"][1:]],
                    }
                )
                print(
                    f"  p {p} std {std}: F1 {f:.3f} with {res['labels_spent']} labels; to match full's gain "
                    f"{match} ({res['seconds']:.0f} s)",
                    flush=True,
                )
                io.write_json(
                    args.out,
                    {
                        "params": args.params,
                        "pool": len(pool),
                        "eval_rows": len(eval_rows),
                        "final_window": cfg.final_window,
                        "runs": rows,
                    },
                )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
