"""Run VLLMBackend on a model and dump its outputs as JSON (helper of tests/test_vllm_backend.py).

vllm cannot be imported in the main venv (see `make vllm-env`), so the test runs this script with
`.venv-vllm/bin/python` and compares the JSON with TransformersBackend in its own process:

    .venv-vllm/bin/python tests/vllm_check.py SPEC.json OUT.json

SPEC: {"model": dir, "prompts": [...], "max_new_tokens": int, "entropy_top_k": int,
       "seeds": [...], "prefix_len": int}
"""

from __future__ import annotations

import json
import sys
import time


def rows(comps):  # list[list[Completion]] -> JSON rows
    return [[c.to_row() for c in row] for row in comps]


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    t0 = time.perf_counter()
    import vllm

    from prmflow.policy.base import SamplingConfig
    from prmflow.policy.vllm_backend import VLLMBackend

    out: dict = {"vllm_version": vllm.__version__, "timings": {"import_s": time.perf_counter() - t0}}
    t0 = time.perf_counter()
    # max_logprobs=-1 (no cap) lets the greedy run return the full distribution, to check the
    # logprobs themselves against transformers; entropy still uses the top `entropy_top_k` only
    be = VLLMBackend(
        spec["model"],
        dtype="float32",
        seed=0,
        entropy_top_k=spec["entropy_top_k"],
        max_logprobs=-1,
        kv_cache_space_gb=1,
        max_model_len=256,
    )
    out["timings"]["engine_start_s"] = time.perf_counter() - t0
    V = be.vocab_size
    out["vocab_size"] = V
    prompts, T, seeds = spec["prompts"], spec["max_new_tokens"], spec["seeds"]

    def timed(name, fn):
        t = time.perf_counter()
        r = fn()
        out["timings"][name + "_s"] = time.perf_counter() - t
        return r

    greedy = timed(
        "greedy", lambda: be.generate(prompts, 1, SamplingConfig(temperature=0, max_new_tokens=T, top_logprobs=V))
    )
    out["greedy"] = rows(greedy)
    out["prompt_ids"] = [be.encode(p) for p in prompts]

    sample = SamplingConfig(temperature=1.0, max_new_tokens=T, top_logprobs=spec["entropy_top_k"])
    out["sampled_a"] = rows(timed("sampled", lambda: be.generate(prompts, 3, sample, seeds=seeds)))
    # same seeds, prompts in reverse order (other batch neighbours): must give the same samples
    out["sampled_b"] = rows(be.generate(prompts[::-1], 3, sample, seeds=seeds[::-1])[::-1])
    out["sampled_c"] = rows(be.generate(prompts, 3, sample, seeds=[s + 1000 for s in seeds]))
    # sampled at temperature 0.5: entropy and top logprobs must still be those of temperature 1
    cold = SamplingConfig(temperature=0.5, top_p=0.9, max_new_tokens=T, top_logprobs=spec["entropy_top_k"])
    out["sampled_cold"] = rows(be.generate(prompts, 2, cold, seeds=seeds))

    # token-level prefix: the prompt plus the first greedy tokens (an MC rollout from a step prefix)
    m = spec["prefix_len"]
    prefix = out["prompt_ids"][0] + greedy[0][0].token_ids[:m]
    out["prefix_ids"] = prefix
    out["prefix_greedy"] = rows(be.generate_ids([prefix], 1, SamplingConfig(temperature=0, max_new_tokens=T - m)))
    out["prefix_sampled"] = rows(be.generate_ids([prefix], 4, sample, seeds=[7]))

    out["token_logprobs"] = be.token_logprobs(out["prompt_ids"], [c.token_ids for [c] in greedy])
    out["counters"] = {
        "forward_passes": be.forward_passes,
        "generated_tokens": be.generated_tokens,
        "prompt_tokens_encoded": be.prompt_tokens_encoded,
        "prompt_tokens_cached": be.prompt_tokens_cached,
    }
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
