"""Rollout throughput: prmflow's MC labeling vs naive `model.generate` per prefix, in one run.

    python -m bench.rollouts [--model models/policy] [--prefixes 48] [--rollouts 8]

Workload: the step prefixes (EDU entropy steps) of the first sampled solutions of synthetic
problems, each rolled out `--rollouts` times to completion, as the `label` stage does.

- prmflow: `mc_estimates` -> TransformersBackend.generate_ids: prefixes batched together,
  each encoded once and its KV cache repeated for its N rollouts, per-token entropy recorded.
- naive:   for each prefix, `model.generate(prefix, do_sample=True, num_return_sequences=N)`
  from scratch (the prefix re-encoded N times; no batching across prefixes).

One burn-in, then the timed runs. Prints one line and writes reports/bench/rollouts.json with
generated tokens/s, seconds per labeled step, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from prmflow.edu.partition import PartitionConfig, partition
from prmflow.io import write_json
from prmflow.label.mc import answer_verifier, mc_estimates
from prmflow.policy.base import SamplingConfig
from prmflow.policy.hf_backend import TransformersBackend
from prmflow.synth import WorldConfig, format_prompt, generate_problems


def workload(backend: TransformersBackend, n_prefixes: int, seed: int) -> tuple[list[list[int]], list[str], list[str]]:
    """Step prefixes of sampled solutions (prompt ids + completion tokens up to each step end)."""
    problems = generate_problems(8 * n_prefixes, seed + 12345, WorldConfig(max_steps=6), id_prefix="bench")
    prompts = [format_prompt(p.problem) for p in problems]
    sols = backend.generate(prompts, 1, SamplingConfig(max_new_tokens=160, seed=seed))
    prefixes, texts, answers = [], [], []
    for p, prompt, [c] in zip(problems, prompts, sols, strict=True):
        if not c.token_ids:
            continue
        seg = partition(c.text, c.offsets, c.entropy, PartitionConfig(strategy="fixed", entropy_threshold=1.0))
        ids = backend.encode(prompt)
        for end, span in zip(seg.ends[:-1], seg.spans[:-1], strict=True):  # the last step needs no rollouts
            prefixes.append(ids + c.token_ids[:end])
            texts.append(c.text[: span[1]])
            answers.append(str(p.answer))
            if len(prefixes) == n_prefixes:
                return prefixes, texts, answers
    return prefixes, texts, answers


def run_prmflow(
    backend: TransformersBackend, prefixes, texts, answers, n: int, sampling: SamplingConfig
) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = 0
    for start in range(0, len(prefixes), 64):
        chunk = slice(start, start + 64)
        verifiers = [answer_verifier(a, [t]) for a, t in zip(answers[chunk], texts[chunk], strict=True)]
        _, cost = mc_estimates(backend, prefixes[chunk], lambda i, s, v=verifiers: v[i](0, s), n, sampling)
        tokens += cost.generated_tokens
    return time.perf_counter() - t0, tokens


@torch.no_grad()
def run_naive(backend: TransformersBackend, prefixes, n: int, sampling: SamplingConfig) -> tuple[float, int]:
    model, eos, pad = backend.model, backend.eos_id, backend.pad_id
    t0 = time.perf_counter()
    tokens = 0
    for i, p in enumerate(prefixes):
        torch.manual_seed(sampling.seed + i)
        x = torch.tensor([p])
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            do_sample=True,
            temperature=sampling.temperature,
            top_k=0,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=n,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        gen = out[:, len(p) :]
        for row in gen.tolist():  # tokens up to and including EOS
            tokens += row.index(eos) + 1 if eos in row else len(row)
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/policy", help="policy dir (default: the pipeline's trained policy)")
    ap.add_argument("--prefixes", type=int, default=128)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256, help="rows per forward pass (label.batch_size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/bench/rollouts.json")
    args = ap.parse_args()
    if not Path(args.model).is_dir():
        raise SystemExit(
            f"error: no policy at '{args.model}': run `make run` (or `dvc repro policy`) first, or pass --model"
        )

    backend = TransformersBackend.from_pretrained(args.model, batch_size=args.batch_size)
    prefixes, texts, answers = workload(backend, args.prefixes, args.seed)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=160, seed=args.seed)

    # burn-in on a few prefixes (allocator, kernels), then the timed runs
    run_prmflow(backend, prefixes[:4], texts[:4], answers[:4], args.rollouts, sampling)
    run_naive(backend, prefixes[:2], args.rollouts, sampling)
    t_ours, tok_ours = run_prmflow(backend, prefixes, texts, answers, args.rollouts, sampling)
    t_naive, tok_naive = run_naive(backend, prefixes, args.rollouts, sampling)

    result = {
        "workload": {
            "prefixes": len(prefixes),
            "rollouts_per_prefix": args.rollouts,
            "model": args.model,
            "mean_prefix_tokens": sum(map(len, prefixes)) / len(prefixes),
            "batch_size": args.batch_size,
        },
        "prmflow": {
            "seconds": t_ours,
            "generated_tokens": tok_ours,
            "tokens_per_s": tok_ours / t_ours,
            "seconds_per_labeled_step": t_ours / len(prefixes),
        },
        "naive_generate": {
            "seconds": t_naive,
            "generated_tokens": tok_naive,
            "tokens_per_s": tok_naive / t_naive,
            "seconds_per_labeled_step": t_naive / len(prefixes),
        },
        "speedup_tokens_per_s": (tok_ours / t_ours) / (tok_naive / t_naive),
        "speedup_seconds_per_step": t_naive / t_ours,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    write_json(args.out, result)
    print(
        f"rollouts: prmflow {result['prmflow']['tokens_per_s']:.0f} tok/s vs naive generate "
        f"{result['naive_generate']['tokens_per_s']:.0f} tok/s -> {result['speedup_tokens_per_s']:.1f}x tokens/s, "
        f"{result['speedup_seconds_per_step']:.1f}x per labeled step ({len(prefixes)} prefixes x {args.rollouts}) -> {args.out}"
    )
    print(json.dumps(result["workload"]))


if __name__ == "__main__":
    main()
