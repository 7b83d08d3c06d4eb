"""Peak RSS and tokens/s of the policy backends on the real model, for generation and MC rollouts.

    python -m bench.real_model [--model models/real-policy] [--batch 16] [--new-tokens 512]
                               [--prefixes 8] [--rollouts 4] [--rollout-tokens 128] [--no-vllm]

Workloads, on GSM8K problems (`--data`, fields question/answer) under a 2-shot prompt
"Question: ...\\nAnswer: ...\\nThe answer is N\\n\\n" ... "Question: ...\\nAnswer:":

- generate: `--batch` prompts x 1 sample, temperature 1, `--new-tokens` new tokens each with
  stop=() (a base model rarely emits EOS, so every row runs the full budget): the issue's
  bounded-memory goal is peak RSS <= 4 GiB at batch 16 x 512 new tokens for a <= 0.5B model;
- rollouts (MC labeling): step prefixes (prompt + the first k lines of the gold solution), each
  continued `--rollouts` times with `generate_ids` at temperature 1, `--rollout-tokens` new tokens,
  stop=("Question:",) as the label stage would use on a base model.

Each backend runs in its own fresh process (the transformers one in this venv, the vLLM one
under .venv-vllm, where vllm lives): model load, a short burn-in, then each workload once, timed.
Peak RSS is the process's high-water resident set (VmHWM, reset before each workload with
/proc/self/clear_refs, so it covers the weights plus that workload). tokens/s counts generated
tokens (stop strings and EOS cut, as returned). `--baseline-repo DIR` also runs the transformers
generation from another checkout's prmflow (e.g. the code before the memory bounds) at
`--baseline-batch` x `--baseline-tokens`, next to this checkout at the same shape.

Writes reports/bench/real_model.json and prints one line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
STOP = ("Question:",)


# ----------------------------------------------------------------------------- workload


def gold_lines(answer: str) -> tuple[list[str], str]:
    """GSM8K solution lines without calculator annotations, and the final answer after ####.

    >>> gold_lines("She has 2*3 = <<2*3=6>>6 apples.\\nSo 6+1 = <<6+1=7>>7.\\n#### 7")
    (['She has 2*3 = 6 apples.', 'So 6+1 = 7.'], '7')
    """
    body, _, final = answer.partition("####")
    lines = [re.sub(r"<<[^>]*>>", "", ln).strip() for ln in body.strip().splitlines()]
    return [ln for ln in lines if ln], final.strip()


def few_shot(shots: list[dict]) -> str:
    out = []
    for s in shots:
        lines, final = gold_lines(s["answer"])
        out.append(f"Question: {s['question']}\nAnswer: " + "\n".join(lines) + f"\nThe answer is {final}\n\n")
    return "".join(out)


def build_workload(data: Path, tokenizer, batch: int, n_prefixes: int, seed: int) -> dict:
    """Token-id prompts for generation and step prefixes for rollouts (BOS prepended when the
    tokenizer does not add it itself)."""
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    shots, rest = rows[:2], rows[2:]
    picked = random.Random(seed).sample(rest, batch + n_prefixes)
    head = few_shot(shots)

    def encode(text: str) -> list[int]:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = tokenizer.bos_token_id
        return ids if bos is None or (ids and ids[0] == bos) else [bos] + ids

    prompts = [encode(f"{head}Question: {r['question']}\nAnswer:") for r in picked[:batch]]
    prefixes = []
    for r in picked[batch:]:
        lines, _ = gold_lines(r["answer"])
        k = max(1, len(lines) // 2)  # a mid-solution step boundary, as MC labeling scores
        prefixes.append(encode(f"{head}Question: {r['question']}\nAnswer: " + "\n".join(lines[:k]) + "\n"))
    return {"prompts": prompts, "prefixes": prefixes}


# ----------------------------------------------------------------------------- worker


def _kib(field: str) -> int:
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def worker(spec_path: str, out_path: str) -> None:
    """One backend in this process: load, burn in, then each job once. PYTHONPATH's first entry
    goes ahead of the working directory, so `--baseline-repo` really runs that checkout's prmflow."""
    first_path = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    if first_path:
        sys.path.insert(0, first_path)
    from prmflow.policy.base import SamplingConfig

    spec = json.loads(Path(spec_path).read_text())
    t0 = time.perf_counter()
    if spec["backend"] == "vllm":
        from prmflow.policy.vllm_backend import VLLMBackend

        be = VLLMBackend(
            spec["model"],
            dtype="float32",
            seed=0,
            batch_size=spec["batch_size"],
            kv_cache_space_gb=spec["kv_cache_space_gb"],
            max_model_len=spec["max_model_len"],
        )
    else:
        import torch

        from prmflow.policy.hf_backend import TransformersBackend

        torch.set_num_threads(spec["threads"])
        be = TransformersBackend.from_pretrained(spec["model"], batch_size=spec["batch_size"])
    result = {"load_s": time.perf_counter() - t0, "rss_after_load_mib": _kib("VmRSS") / 1024, "jobs": {}}
    first = spec["jobs"][0]
    be.generate_ids(first["prompts"][:1], 1, SamplingConfig(max_new_tokens=8, seed=1))  # burn-in
    for job in spec["jobs"]:
        kw = dict(job["sampling"])
        stop = tuple(kw.pop("stop"))
        sampling = SamplingConfig(**kw, **({"stop": stop} if stop else {}))  # a baseline may predate `stop`
        _reset_peak()
        t = time.perf_counter()
        comps = be.generate_ids(job["prompts"], job["n"], sampling)
        seconds = time.perf_counter() - t
        tokens = sum(len(c.token_ids) for row in comps for c in row)
        reasons = [c.finish_reason for row in comps for c in row]
        result["jobs"][job["name"]] = {
            "seconds": seconds,
            "generated_tokens": tokens,
            "tokens_per_s": tokens / seconds,
            "peak_rss_mib": _kib("VmHWM") / 1024,
            "rows": len(job["prompts"]) * job["n"],
            "finish_stop": reasons.count("stop"),
            "finish_length": reasons.count("length"),
            "mean_prompt_tokens": sum(map(len, job["prompts"])) / len(job["prompts"]),
            "sample_text": comps[0][0].text[:200],
        }
    import prmflow

    result["prmflow"] = str(Path(prmflow.__file__).resolve().parent)
    Path(out_path).write_text(json.dumps(result))


def run_worker(python: str, spec: dict, env_extra: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": env_extra.pop("PYTHONPATH", str(REPO)), **env_extra}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [python, "-m", "bench.real_model", "--worker", f"{tmp}/spec.json", f"{tmp}/out.json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        if proc.returncode != 0:
            return {"failed": f"rc {proc.returncode}", "stderr": proc.stderr[-3000:]}
        out = json.loads((Path(tmp) / "out.json").read_text())
        out["wall_s"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/real-policy")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"))
    ap.add_argument("--batch", type=int, default=16, help="generation prompts (1 sample each)")
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--prefixes", type=int, default=8, help="rollout step prefixes")
    ap.add_argument("--rollouts", type=int, default=4, help="rollouts per prefix")
    ap.add_argument("--rollout-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads / vLLM OpenMP threads")
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--baseline-repo", help="also run generation from this checkout's prmflow (before/after)")
    ap.add_argument("--baseline-batch", type=int, default=4)
    ap.add_argument("--baseline-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/bench/real_model.json")
    ap.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    from transformers import AutoTokenizer

    from prmflow.io import write_json

    model = str(Path(args.model).resolve())
    if not Path(model).is_dir():
        raise SystemExit(f"--model {args.model}: no such model directory (convert Gemma-3-270M there first)")
    if not Path(args.data).is_file():
        raise SystemExit(f"--data {args.data}: GSM8K train.jsonl not found")
    tok = AutoTokenizer.from_pretrained(model)
    wl = build_workload(Path(args.data), tok, args.batch, args.prefixes, args.seed)
    jobs = [
        {
            "name": "generate",
            "prompts": wl["prompts"],
            "n": 1,
            "sampling": {"temperature": 1.0, "max_new_tokens": args.new_tokens, "seed": args.seed, "stop": []},
        },
        {
            "name": "rollouts",
            "prompts": wl["prefixes"],
            "n": args.rollouts,
            "sampling": {
                "temperature": 1.0,
                "max_new_tokens": args.rollout_tokens,
                "seed": args.seed,
                "stop": list(STOP),
            },
        },
    ]
    rows = max(args.batch, args.prefixes * args.rollouts)
    longest = max(len(p) for p in wl["prompts"] + wl["prefixes"]) + max(args.new_tokens, args.rollout_tokens)
    base = {"model": model, "batch_size": rows, "threads": args.threads, "jobs": jobs}
    result: dict = {
        "workload": {
            "model": model,
            "data": args.data,
            "generate": f"{args.batch} prompts x {args.new_tokens} new tokens, stop=()",
            "rollouts": f"{args.prefixes} prefixes x {args.rollouts} "
            f"rollouts x {args.rollout_tokens} new tokens, stop={list(STOP)}",
            "mean_prompt_tokens": sum(map(len, wl["prompts"])) / len(wl["prompts"]),
            "mean_prefix_tokens": sum(map(len, wl["prefixes"])) / len(wl["prefixes"]),
            "goal": "peak RSS <= 4 GiB at batch 16 x 512 new tokens",
        }
    }
    t0 = time.perf_counter()
    import torch

    def machine() -> dict:
        return {
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_avg_1m": os.getloadavg()[0],
            "bench_wall_s": time.perf_counter() - t0,
        }

    result["transformers"] = run_worker(sys.executable, {**base, "backend": "transformers"}, {})
    write_json(args.out, {**result, "machine": machine()})  # partial results survive an interrupted run
    if args.no_vllm:
        result["vllm"] = {"skipped": "--no-vllm"}
    elif not VLLM_PY.exists():
        result["vllm"] = {"skipped": f"{VLLM_PY} not found; run `make vllm-env`"}
    else:
        from prmflow.policy.vllm_backend import engine_env_defaults

        cpus = sorted(os.sched_getaffinity(0))[: args.threads]
        bind = f"{cpus[0]}-{cpus[-1]}" if cpus == list(range(cpus[0], cpus[-1] + 1)) else ",".join(map(str, cpus))
        env = {**engine_env_defaults(), "VLLM_CPU_OMP_THREADS_BIND": bind}
        result["vllm"] = run_worker(
            str(VLLM_PY), {**base, "backend": "vllm", "kv_cache_space_gb": 1, "max_model_len": longest + 16}, env
        )
        write_json(args.out, {**result, "machine": machine()})
    if args.baseline_repo:
        shape = {
            "name": "generate",
            "prompts": wl["prompts"][: args.baseline_batch],
            "n": 1,
            "sampling": {**jobs[0]["sampling"], "max_new_tokens": args.baseline_tokens},
        }
        small = {**base, "backend": "transformers", "batch_size": args.baseline_batch, "jobs": [shape]}
        result["baseline"] = {
            "shape": f"{args.baseline_batch} prompts x {args.baseline_tokens} new tokens",
            "before": run_worker(sys.executable, small, {"PYTHONPATH": str(Path(args.baseline_repo).resolve())}),
            "after": run_worker(sys.executable, small, {}),
        }
    result["machine"] = machine()
    write_json(args.out, result)
    for name in ("transformers", "vllm"):
        r = result[name]
        for job, m in r.get("jobs", {}).items():
            print(
                f"{name:12s} {job:9s} {m['tokens_per_s']:7.1f} tok/s  peak RSS {m['peak_rss_mib']:7.0f} MiB  "
                f"({m['generated_tokens']} tokens in {m['seconds']:.0f}s)"
            )
        if "jobs" not in r:
            print(f"{name:12s} {r}")
    for k, r in result.get("baseline", {}).items():
        if isinstance(r, dict) and "jobs" in r:
            m = r["jobs"]["generate"]
            print(f"baseline {k:6s} {m['tokens_per_s']:7.1f} tok/s  peak RSS {m['peak_rss_mib']:7.0f} MiB")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
