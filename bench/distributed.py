"""Shards of stage `generate` on a Ray cluster: 1 worker node vs 2, against the thread runner.

    python -m bench.distributed [--problems 64] [--shards 8] [--n 4] [--max-new-tokens 96]

Workload: `tasks.generate.sample_solutions` (the stage's own code path) on a tiny random Llama
(the tests' tiny model, built here) over `--problems` synthetic problems in `--shards` shards.
A real local cluster (tasks.runners.local_cluster): a head with no CPUs and worker nodes of 1
CPU each, every shard reserving 1 CPU, torch on 1 thread everywhere (as Ray sets for a 1-CPU
task), so 2 worker nodes can run 2 shards at once. This is CPU: it measures the mechanism and
its overhead, not GPU throughput.

1. thread runner, in this process: the reference bytes and time;
2. ray, 1 worker node: a burn-in run (worker start-up, model load), then a timed run;
3. ray, 2 worker nodes: the same, on the same shards;
4. ray, 2 worker nodes, every shard file already there: each shard task only finds its file,
   so wall time / shards is the per-shard cost of scheduling (Ray dispatch, Prefect task run,
   result), and (1-node time - thread time) / shards is the per-shard cost on one CPU.

Each timed run starts from an empty shard dir; the median of `--repeats` runs is reported (the
2 cores are shared with other work). Prints one line and writes
reports/bench/distributed.json with generated tokens/s per setting, per-shard overheads in
seconds, and `identical` (every Ray run's samples and trees byte-equal to the thread runner's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch

from prmflow.config import GenerateConfig
from prmflow.io import write_json
from prmflow.policy.tiny import build_model, build_tokenizer
from prmflow.synth.world import generate_problems
from tasks import backends, runners
from tasks.generate import sample_solutions

CORPUS = [
    "Question: Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?\nAnswer:\n"
    "23 + 14 = 37\nThe answer is 37",
    "Question: Leo has 6 cards. Then his cards become 3 times as many. How many cards does Leo have now?\nAnswer:\n"
    "6 * 3 = 18\nThe answer is 18",
] * 20


def tiny_model(out: Path) -> Path:
    """tests/conftest.py's tiny model: a random 2-layer Llama (hidden 64) + local BPE tokenizer."""
    tok = build_tokenizer(CORPUS, 300)
    build_model("llama", len(tok), 64, 2, 4, 256, tok.pad_token_id, tok.eos_token_id, seed=0).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def timed(cfg: GenerateConfig, problems: list[dict], root: Path, fresh: bool = True) -> tuple[float, int, bytes, dict]:
    """(seconds, generated tokens, output bytes, run info) of one `sample_solutions` call."""
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    out = sample_solutions(cfg, problems, str(root))
    seconds = time.perf_counter() - t0
    tokens = sum(len(r["token_ids"]) for r in out["samples"]) + sum(r["suffix_tokens"] for r in out["tree"])
    blob = json.dumps([out["samples"], out["tree"]], sort_keys=True).encode()
    return seconds, tokens, blob, out["info"]


def best_of(repeats: int, cfg: GenerateConfig, problems: list[dict], root: Path) -> tuple[dict, int, bytes, dict]:
    """`timed` `repeats` times from an empty shard dir: median seconds and tokens/s, and every
    run's seconds (the machine is shared, so one run can be unlucky)."""
    runs = [timed(cfg, problems, root) for _ in range(repeats)]
    secs = sorted(r[0] for r in runs)
    med, tok = secs[len(secs) // 2], runs[0][1]
    assert all(r[1] == tok and r[2] == runs[0][2] for r in runs)
    return (
        {"seconds": med, "tokens_per_s": tok / med, "runs_seconds": [r[0] for r in runs]},
        tok,
        runs[0][2],
        runs[0][3],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per setting (the median is reported)")
    ap.add_argument("--out", default="reports/bench/distributed.json")
    args = ap.parse_args()

    import ray
    from prefect.testing.utilities import prefect_test_harness

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    problems = [p.to_row() for p in generate_problems(args.problems, seed=11)]
    cfg = GenerateConfig(
        model=str(tiny_model(work / "model")),
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        batch_size=16,
        top_logprobs=2,
        tree_problems=4,
        tree_max_branches=2,
        tree_threshold=0.5,
        num_shards=args.shards,
        task_retries=0,
    )
    res: dict[str, dict] = {}
    try:
        with prefect_test_harness(), runners.local_cluster(workers=1) as cluster:
            # ---- thread runner (burn-in, timed)
            timed(replace(cfg, num_shards=1), problems, work / "thread")
            res["thread"], _, ref, _ = best_of(args.repeats, cfg, problems, work / "thread")
            backends.clear()

            ray.init(address=cluster.address, **runners.ray_init_kwargs())
            try:
                on_ray = replace(cfg, task_runner="ray", ray_address=cluster.address)
                identical = True
                for nodes in (1, 2):
                    if nodes == 2:
                        runners.add_worker_node(cluster)
                        cluster.wait_for_nodes()
                    timed(on_ray, problems, work / f"burn{nodes}")  # worker start-up and model load on every node
                    stats, _, blob, info = best_of(args.repeats, on_ray, problems, work / f"ray{nodes}")
                    assert info["shards_run"] == args.shards
                    identical &= blob == ref
                    res[f"ray_{nodes}_node{'s' if nodes > 1 else ''}"] = stats
                # ---- scheduling only: every shard already on disk
                s, _, blob, info = timed(on_ray, problems, work / "ray2", fresh=False)
                assert info["shards_skipped"] == args.shards
                identical &= blob == ref
                noop_per_shard = s / args.shards
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    one, two = res["ray_1_node"], res["ray_2_nodes"]
    report = {
        "workload": {
            "stage": "generate",
            "repeats": args.repeats,
            "problems": args.problems,
            "shards": args.shards,
            "n": args.n,
            "max_new_tokens": args.max_new_tokens,
            "tree_problems": cfg.tree_problems,
            "model": "random Llama, 2 layers, hidden 64 (tests' tiny model)",
            "torch_threads": 1,
            "cluster": "head (0 CPUs) + 1 or 2 worker nodes of 1 CPU on this machine; 1 CPU per shard",
        },
        **res,
        "speedup_2_vs_1_nodes": two["tokens_per_s"] / one["tokens_per_s"],
        "overhead_s_per_shard": {
            "noop_shard_2_nodes": noop_per_shard,
            "ray_1_node_minus_thread": (one["seconds"] - res["thread"]["seconds"]) / args.shards,
        },
        "identical": identical,
        "versions": {k: version(k) for k in ("ray", "prefect-ray", "prefect", "torch")},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "shared": "2 cores shared with other work",
        },
    }
    write_json(args.out, report)
    print(
        f"distributed: thread {res['thread']['tokens_per_s']:.0f} tok/s, ray 1 node {one['tokens_per_s']:.0f}, "
        f"2 nodes {two['tokens_per_s']:.0f} (x{report['speedup_2_vs_1_nodes']:.2f}), "
        f"overhead {noop_per_shard:.2f} s/shard (no-op), identical {identical} -> {args.out}"
    )


if __name__ == "__main__":
    main()
