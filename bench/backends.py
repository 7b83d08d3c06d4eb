"""Rollout throughput of the policy backends on one tiny model and one workload, in one command.

    python -m bench.backends [--model DIR] [--prefixes 128] [--rollouts 8] [--max-new-tokens 160]

Workload: that of bench/rollouts.py (`bench.rollouts.workload`): the step prefixes of sampled
solutions of synthetic problems, each rolled out `--rollouts` times at temperature 1, as the
`label` stage does. Measured, as generated tokens/s (EOS counted, as in bench/rollouts.py):

- transformers: `TransformersBackend.generate_ids` (prefix encoded once, KV cache repeated for
  its rollouts, full-vocabulary entropy), 64 prefixes per call as in bench/rollouts.py;
- vllm: the offline `VLLMBackend.generate_ids` (top-20 entropy), same calls, run with
  `.venv-vllm/bin/python -m bench.backends --vllm-worker ...` in a subprocess, because vllm is
  not importable in the main venv (`make vllm-env`); its engine start is reported apart;
  vLLM gets as many OpenMP threads as torch has here (VLLM_CPU_OMP_THREADS_BIND);
- naive: `model.generate` per prefix with `num_return_sequences` (bench.rollouts.run_naive).

The model must have an attention head_dim vLLM's CPU kernels support (32, 64, 80, ...). Without
`--model`, a tiny Llama (hidden 96, 3 heads -> head_dim 32, 3 layers, 512 positions) is trained for
`--train-steps` steps on canonical synthetic solutions (~1 min) and saved to
`--model-cache` (reused by later runs). The pipeline's default policy (hidden 96, 4 heads ->
head_dim 24) cannot run on vLLM CPU.

One burn-in per backend, then the timed runs. Writes reports/bench/backends.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
CHUNK = 64  # prefixes per backend call (bench/rollouts.py)


def tokens_with_eos(rows) -> int:
    """Generated tokens counting the EOS of stopped samples (as `model.generate` counts them)."""
    return sum(len(c.token_ids) + (c.finish_reason == "stop") for row in rows for c in row)


def timed_rollouts(backend, prefixes, n: int, sampling) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = 0
    for start in range(0, len(prefixes), CHUNK):
        chunk = prefixes[start : start + CHUNK]
        tokens += tokens_with_eos(
            backend.generate_ids(chunk, n, sampling, seeds=[sampling.seed + start + i for i in range(len(chunk))])
        )
    return time.perf_counter() - t0, tokens


def build_tiny_model(out: Path, steps: int, seed: int) -> None:
    """A head_dim-32 tiny Llama trained briefly on canonical solutions (tasks/policy.py, smaller)."""
    from prmflow.policy.tiny import build_model, build_tokenizer, make_examples, train_lm
    from prmflow.synth import WorldConfig, format_prompt, generate_problems

    problems = generate_problems(4000, seed + 777, WorldConfig(max_steps=6), id_prefix="benchtrain")
    prompts = [format_prompt(p.problem) for p in problems]
    sols = [p.solution for p in problems]
    tok = build_tokenizer([p + s for p, s in zip(prompts, sols, strict=True)], 384)
    model = build_model("llama", len(tok), 96, 3, 3, 512, tok.pad_token_id, tok.eos_token_id, seed=seed)
    examples = [e for e in make_examples(tok, prompts, sols, 10_000) if len(e.prompt_ids) + len(e.target_ids) <= 256]
    train_lm(
        model,
        examples,
        steps=steps,
        batch_size=32,
        lr=3e-3,
        warmup_steps=min(50, steps // 4),
        weight_decay=0.01,
        pad_id=tok.pad_token_id,
        seed=seed,
    )
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".tmp"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)


def vllm_worker(spec_path: str, out_path: str) -> None:
    """Runs under .venv-vllm: the same timed rollouts on VLLMBackend."""
    from prmflow.policy.base import SamplingConfig
    from prmflow.policy.vllm_backend import VLLMBackend

    spec = json.loads(Path(spec_path).read_text())
    t0 = time.perf_counter()
    # max_model_len: the model's max_position_embeddings (prefix + budget must fit)
    be = VLLMBackend(spec["model"], dtype="float32", seed=0, batch_size=spec["batch_size"], kv_cache_space_gb=1)
    start_s = time.perf_counter() - t0
    sampling = SamplingConfig(**spec["sampling"])
    prefixes, n = spec["prefixes"], spec["rollouts"]
    timed_rollouts(be, prefixes[:4], n, sampling)  # burn-in
    seconds, tokens = timed_rollouts(be, prefixes, n, sampling)
    import vllm

    Path(out_path).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "generated_tokens": tokens,
                "engine_start_s": start_s,
                "vllm": vllm.__version__,
                "entropy_top_k": be.entropy_top_k,
            }
        )
    )


def run_vllm(model: str, prefixes, n: int, sampling, batch_size: int, threads: int) -> dict:
    """`threads`: vLLM's OpenMP threads, bound to the first `threads` CPUs this process may use
    (the same thread count as torch in the transformers runs)."""
    if not VLLM_PY.exists():
        return {"skipped": f"{VLLM_PY.relative_to(REPO)} not found; run `make vllm-env`"}
    from dataclasses import asdict

    from prmflow.policy.vllm_backend import engine_env_defaults

    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "model": model,
            "prefixes": prefixes,
            "rollouts": n,
            "sampling": asdict(sampling),
            "batch_size": batch_size,
        }
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        cpus = sorted(os.sched_getaffinity(0))[:threads]
        bind = f"{cpus[0]}-{cpus[-1]}" if cpus == list(range(cpus[0], cpus[-1] + 1)) else ",".join(map(str, cpus))
        env = {
            **os.environ,
            **engine_env_defaults(),
            "VLLM_CPU_OMP_THREADS_BIND": bind,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "PYTHONPATH": str(REPO),
        }
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(VLLM_PY), "-m", "bench.backends", "--vllm-worker", f"{tmp}/spec.json", f"{tmp}/out.json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        if proc.returncode != 0:
            raise SystemExit(f"vLLM worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
        out = json.loads((Path(tmp) / "out.json").read_text())
        out["subprocess_wall_s"] = time.perf_counter() - t0
        out["omp_threads_bind"] = bind
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model dir with a vLLM-compatible head_dim (default: build a tiny one)")
    ap.add_argument(
        "--model-cache",
        default=str(Path(tempfile.gettempdir()) / "prmflow-bench-tiny-hd32"),
        help="where the default tiny model is built and reused",
    )
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--prefixes", type=int, default=128)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=256, help="rows per forward pass / vLLM max_num_seqs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/bench/backends.json")
    ap.add_argument("--vllm-worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.vllm_worker:
        vllm_worker(*args.vllm_worker)
        return

    import torch

    from bench.rollouts import run_naive, workload
    from prmflow.io import write_json
    from prmflow.policy.base import SamplingConfig
    from prmflow.policy.hf_backend import TransformersBackend

    model = args.model
    if model is None:
        model = args.model_cache
        if not Path(model).is_dir():
            t0 = time.perf_counter()
            build_tiny_model(Path(model), args.train_steps, args.seed)
            print(f"built tiny head_dim-32 model in {time.perf_counter() - t0:.0f}s -> {model}", file=sys.stderr)
    backend = TransformersBackend.from_pretrained(model, batch_size=args.batch_size)
    prefixes, _, _ = workload(backend, args.prefixes, args.seed)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=args.seed)

    timed_rollouts(backend, prefixes[:4], args.rollouts, sampling)  # burn-in
    run_naive(backend, prefixes[:2], args.rollouts, sampling)
    t_hf, tok_hf = timed_rollouts(backend, prefixes, args.rollouts, sampling)
    t_naive, tok_naive = run_naive(backend, prefixes, args.rollouts, sampling)
    vllm = run_vllm(
        str(Path(model).resolve()), prefixes, args.rollouts, sampling, args.batch_size, torch.get_num_threads()
    )

    def entry(seconds: float, tokens: int) -> dict:
        return {"seconds": seconds, "generated_tokens": tokens, "tokens_per_s": tokens / seconds}

    result = {
        "workload": {
            "model": model,
            "prefixes": len(prefixes),
            "rollouts_per_prefix": args.rollouts,
            "max_new_tokens": args.max_new_tokens,
            "mean_prefix_tokens": sum(map(len, prefixes)) / len(prefixes),
            "batch_size": args.batch_size,
            "prefixes_per_call": CHUNK,
            "params": sum(p.numel() for p in backend.model.parameters()),
        },
        "transformers": {**entry(t_hf, tok_hf), "entropy": "full vocabulary"},
        "naive_generate": {**entry(t_naive, tok_naive), "entropy": "none"},
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_avg_1m": os.getloadavg()[0],
        },
    }
    hf_tps, naive_tps = tok_hf / t_hf, tok_naive / t_naive
    result["ratios"] = {"transformers_over_naive": hf_tps / naive_tps}
    if "skipped" in vllm:
        result["vllm"] = vllm
    else:
        result["vllm"] = {
            **entry(vllm["seconds"], vllm["generated_tokens"]),
            "entropy": f"top-{vllm['entropy_top_k']} estimate",
            "engine_start_s": vllm["engine_start_s"],
            "vllm_version": vllm["vllm"],
            "subprocess_wall_s": vllm["subprocess_wall_s"],
            "omp_threads_bind": vllm["omp_threads_bind"],
        }
        vllm_tps = result["vllm"]["tokens_per_s"]
        result["ratios"].update(vllm_over_transformers=vllm_tps / hf_tps, vllm_over_naive=vllm_tps / naive_tps)
    write_json(args.out, result)
    line = f"backends: transformers {hf_tps:.0f} tok/s, naive generate {naive_tps:.0f} tok/s"
    if "tokens_per_s" in result["vllm"]:
        line += f", vllm {result['vllm']['tokens_per_s']:.0f} tok/s (engine start {vllm['engine_start_s']:.1f}s)"
    print(f"{line} ({len(prefixes)} prefixes x {args.rollouts}) -> {args.out}")
    print(json.dumps(result["ratios"]))


if __name__ == "__main__":
    main()
