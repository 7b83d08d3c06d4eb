"""Is the ensemble's uncertainty a signal? How well each score ranks the solutions it gets wrong.

    python -m experiments.active_signal [--params params.yaml] [--seeds 0 1 2 3 4] [--train 320]

Per seed, a fresh ensemble PRM (params.yaml's `active` section, frozen backbone, cached head
inputs) runs strategy `full` of the active loop on the first `--train` solutions of the seeded
pool order, then scores every solution it has not seen. A solution is *wrong* when the
ensemble's predicted first error (`prmflow.active.uncertainty`) differs from the gold one. For
each uncertainty score, the AUROC of ranking the wrong solutions above the right ones:

    margin   -min_k |head_mean_k - 0.5| over the unmasked steps     (ActPRM's p test)
    std       max_k head_std_k over the unmasked steps               (ActPRM's std test)
    n_steps   the number of steps                                    (a trivial baseline)

plus the error rate among the solutions the configured rule calls confident and among the rest.
Writes reports/sweeps/active_signal.json. No Prefect, no MLflow; loop state in a temp dir.
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prmflow import io
from prmflow.active import CachedHeads, FeatureCache, OracleLabeler, pool_order, run_active_learning
from prmflow.active.uncertainty import solution_uncertainty
from prmflow.config import ActiveConfig, load_section
from prmflow.label.quality import first_error_of


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """P(score of a positive > score of a negative), ties counted half; None without both classes.

    >>> auroc([0.9, 0.8, 0.1], [True, False, False]), auroc([1.0, 1.0], [True, False]), auroc([1.0], [True])
    (1.0, 0.5, None)
    """
    pos = [s for s, y in zip(scores, positive) if y]
    neg = [s for s, y in zip(scores, positive) if not y]
    if not pos or not neg:
        return None
    neg_sorted = sorted(neg)
    below = [bisect.bisect_left(neg_sorted, p) for p in pos]
    ties = [bisect.bisect_right(neg_sorted, p) - b for p, b in zip(pos, below)]
    wins = sum(below) + 0.5 * sum(ties)
    return wins / (len(pos) * len(neg))


def main() -> None:
    from flows.active import load_pool
    from tasks.active import build_prm, loop_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--train", type=int, default=320)
    ap.add_argument("--out", default="reports/sweeps/active_signal.json")
    args = ap.parse_args()

    cfg = replace(load_section(args.params, "active", ActiveConfig), cache_features=True, freeze_backbone=True)
    problems = {r["id"]: r for r in io.read_jsonl("data/problems/pool.jsonl")}
    pool = load_pool("data/segments/segments.jsonl", problems, cfg.pool_size)
    features = FeatureCache()
    per_seed = []
    for seed in args.seeds:
        order = pool_order([r["id"] for r in pool], seed)
        seen, unseen = [pool[i] for i in order[: args.train]], [pool[i] for i in order[args.train :]]
        prm = build_prm(cfg, seed)  # cfg.freeze_backbone is forced on above
        with tempfile.TemporaryDirectory() as tmp:
            run_active_learning(
                prm, seen, problems, OracleLabeler(), loop_config(cfg, "full", seed), tmp, feature_cache=features
            )
        scored = CachedHeads(prm, features).score_batch(
            [r["prompt"] for r in unseen], [r["steps"] for r in unseen], 256
        )
        wrong, confident, scores = [], [], {"margin": [], "std": [], "n_steps": []}
        for row, sc in zip(unseen, scored):
            u = solution_uncertainty(sc.per_head, cfg.p, cfg.std_threshold)
            judged = [k for k, masked in enumerate(u.mask) if not masked]
            wrong.append(u.first_error != first_error_of(row["gold_labels"][: len(u.pseudo_labels)]))
            confident.append(u.confident)
            scores["margin"].append(-min(abs(u.head_mean[k] - 0.5) for k in judged))
            scores["std"].append(max(u.head_std[k] for k in judged))
            scores["n_steps"].append(float(len(row["steps"])))
        rec = {
            "seed": seed,
            "unseen": len(unseen),
            "wrong_rate": statistics.fmean(wrong),
            "confident_fraction": statistics.fmean(confident),
            "wrong_rate_confident": statistics.fmean([w for w, c in zip(wrong, confident) if c] or [float("nan")]),
            "wrong_rate_uncertain": statistics.fmean([w for w, c in zip(wrong, confident) if not c] or [float("nan")]),
            "auroc": {k: auroc(v, wrong) for k, v in scores.items()},
        }
        per_seed.append(rec)
        print(
            f"seed {seed}: wrong {rec['wrong_rate']:.3f}, AUROC "
            + ", ".join(f"{k} {v:.3f}" for k, v in rec["auroc"].items() if v is not None),
            flush=True,
        )
    mean = {
        k: statistics.fmean(r["auroc"][k] for r in per_seed if r["auroc"][k] is not None) for k in per_seed[0]["auroc"]
    }
    io.write_json(
        args.out,
        {
            "params": args.params,
            "train": args.train,
            "p": cfg.p,
            "std_threshold": cfg.std_threshold,
            "mean_auroc": mean,
            "per_seed": per_seed,
        },
    )
    print(f"mean AUROC {mean}; wrote {args.out}")


if __name__ == "__main__":
    main()
