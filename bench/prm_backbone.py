"""PRM training on a pretrained backbone: wall time and peak RSS of the `train` stage's loop.

    python -m bench.prm_backbone [--backbone models/real-policy] [--rows 200] [--max-len 512]
                                 [--lm-features] [--no-cache]

Workload: `--rows` stepwise rows (TRL format) made from GSM8K train problems
(../shared/data/gsm8k/train.jsonl; hand-made rows when it is absent): the reference solution's
lines are the steps, "#### N" becomes "The answer is N", and every other row has one step's
result changed (that step and all after it labeled 0). The PRM is the backbone frozen + one
linear head, trained as `train.cache_features` does (the backbone runs once per row), then
saved, reloaded from its pointer and scored. Writes reports/bench/prm_backbone.json and prints
one line: seconds (load / featurize + train / reload / score), peak RSS, truncated fraction, and
the size of the saved PRM directory. On a shared machine the wall times stretch with the load;
`cpu_seconds` does not. Measured: reports/bench/prm_backbone.json, and README.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from prmflow.io import write_json
from prmflow.prm import PRM, PRMConfig, TrainConfig, train_prm

GSM8K = Path("../shared/data/gsm8k/train.jsonl")


def gsm8k_rows(n: int, seed: int = 0) -> list[dict]:
    """n TRL stepwise rows from GSM8K reference solutions; odd rows carry one wrong step."""
    rng = random.Random(seed)
    if GSM8K.exists():
        problems = [json.loads(line) for line in GSM8K.read_text().splitlines()[: 4 * n]]
    else:  # hand-made stand-ins with the same shape
        problems = [
            {
                "question": f"Mia has {a} marbles and finds {b} more. How many now?",
                "answer": f"Mia has {a} + {b} = {a + b} marbles.\n#### {a + b}",
            }
            for a in range(10, 40)
            for b in range(2, 12)
        ]
    rows = []
    for i, p in enumerate(rng.sample(problems, n)):
        lines = [re.sub(r"<<[^>]*>>", "", x) for x in p["answer"].split("\n")]
        steps = [x + "\n" for x in lines[:-1]] + ["The answer is " + lines[-1].removeprefix("#### ").strip()]
        labels = [True] * len(steps)
        if i % 2 and len(steps) > 1:
            k = rng.randrange(len(steps) - 1)
            nums = list(re.finditer(r"\d+", steps[k]))
            if nums:
                m = nums[-1]
                steps[k] = steps[k][: m.start()] + str(int(m.group()) + rng.randint(1, 9)) + steps[k][m.end() :]
                labels = [j < k for j in range(len(steps))]
        rows.append(
            {
                "id": f"gsm8k-{i}",
                "prompt": f"Question: {p['question']}\nAnswer:\n",
                "completions": steps,
                "labels": labels,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--backbone", default="models/real-policy")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lm-features", action="store_true", help="heads also read the backbone's LM statistics")
    ap.add_argument("--no-cache", action="store_true", help="rerun the frozen backbone every epoch (for comparison)")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (0 = from --epochs)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; on a shared machine 2 OpenMP threads ran a forward 3-5x slower than 1",
    )
    ap.add_argument("--out", default="reports/bench/prm_backbone.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = gsm8k_rows(args.rows)

    t0 = time.perf_counter()
    prm = PRM.from_backbone(
        args.backbone, PRMConfig(max_len=args.max_len, lm_features=args.lm_features, step_tokenization="joined")
    )
    t_load = time.perf_counter() - t0
    cfg = TrainConfig(
        lr=1e-3,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=16,
        warmup_steps=5,
        freeze_backbone=True,
        cache_features=not args.no_cache,
        checkpoint_every=10_000,
    )
    prompts, steps = [r["prompt"] for r in rows[:32]], [r["completions"] for r in rows[:32]]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = train_prm(prm, rows, cfg, Path(tmp) / "ck")
        t_train = time.perf_counter() - t0
        peak_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        in_memory = prm.score_batch(prompts, steps, batch_size=8)
        t_score = time.perf_counter() - t0
        prm.save_pretrained(Path(tmp) / "prm")
        saved_bytes = sum(f.stat().st_size for f in (Path(tmp) / "prm").iterdir())
        del prm  # one PRM in memory at a time, as in the train and evaluate stages
        gc.collect()
        t0 = time.perf_counter()
        loaded = PRM.from_pretrained(Path(tmp) / "prm")
        t_reload = time.perf_counter() - t0
    same = loaded.score_batch(prompts, steps, batch_size=8) == in_memory
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "backbone": args.backbone,
        "rows": len(rows),
        "max_len": args.max_len,
        "lm_features": args.lm_features,
        "cache_features": not args.no_cache,
        "optimizer_steps": summary["steps"],
        "threads": args.threads,
        "seconds_load_backbone": round(t_load, 1),
        "seconds_train": round(t_train, 1),
        "seconds_reload": round(t_reload, 1),
        "seconds_score_32_rows": round(t_score, 1),
        "cpu_seconds": round(cpu.ru_utime + cpu.ru_stime, 1),
        "peak_rss_mib_train": round(peak_train, 1),
        "peak_rss_mib": round(peak, 1),
        "saved_prm_bytes": saved_bytes,
        "reloaded_scores_identical": same,
        "final_loss": round(summary["final_loss"], 4),
        "backbone_passes": summary.get("backbone_passes"),
        **{k: summary[k] for k in ("truncated_rows", "truncated_fraction", "truncated_steps", "skipped_rows")},
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    write_json(args.out, result)
    print(
        f"prm_backbone: {args.backbone} {len(rows)} rows max_len {args.max_len}: load {t_load:.0f} s, train "
        f"{t_train:.0f} s ({summary['steps']} steps, {summary.get('backbone_passes')} backbone passes), reload "
        f"{t_reload:.0f} s, score 32 rows {t_score:.0f} s; peak RSS {peak_train:.0f} MiB training, {peak:.0f} MiB "
        f"overall; saved {saved_bytes / 1e3:.1f} kB; "
        f"truncated {summary['truncated_fraction']:.1%}; reloaded scores identical: {same}"
    )


if __name__ == "__main__":
    main()
