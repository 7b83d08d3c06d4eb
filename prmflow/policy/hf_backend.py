"""transformers backend: batched sampling with a KV cache and full-vocabulary entropy.

Per batch of prompts:
  1. prefill: encode the left-padded prompts once,                    (B, L) -> cache
  2. expand:  repeat the cache n times (`batch_repeat_interleave`),   B -> B*n rows,
     so n samples share one prompt encoding;
  3. decode:  one token per step for every row, recording H_t from the full logits
     (prmflow.entropy.token_entropy) and sampling with a per-row generator, so each
     sample's random stream depends on (seed, prompt, sample) and not on its neighbours.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from prmflow.entropy import check_finite, token_entropy
from prmflow.policy.base import Completion, SamplingConfig


def load_model_and_tokenizer(name_or_path: str, *, dtype: torch.dtype = torch.float32,
                             device: str = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory or a hub id.

    A hub id needs network access; with HF_HUB_OFFLINE=1 it must already be in the local cache.
    """
    is_local = Path(name_or_path).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except OSError as e:
        if is_local:
            raise OSError(f"cannot load model from directory '{name_or_path}': {e}") from e
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        hint = " (HF_HUB_OFFLINE is set, so hub ids must already be cached)" if offline else ""
        raise OSError(f"'{name_or_path}' is not a local model directory and could not be loaded from the hub{hint}: {e}") from e
    model.to(device).eval()
    return model, tokenizer


def token_offsets(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode ids and return (text, char span of each token in text).

    Spans come from decoding growing prefixes, so they agree with `decode` for any tokenizer.
    A token that stops inside a multi-byte UTF-8 character (decoded as U+FFFD) owns no
    characters; the character is credited to the token that completes it.

    >>> # e.g. ids for "12 + 5" with digit tokens -> spans [(0,1), (1,2), (2,4), (4,5), (5,6)]
    """
    spans: list[tuple[int, int]] = []
    prev = ""
    stable = 0  # length of the decoded prefix known to be final
    for i in range(len(ids)):
        cur = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        end = len(cur.rstrip("\ufffd")) if cur.endswith("\ufffd") else len(cur)
        end = max(end, stable)
        spans.append((stable, end))
        stable, prev = end, cur
    text = prev if ids else ""
    if spans and spans[-1][1] < len(text):  # trailing bytes that never completed a character
        spans[-1] = (spans[-1][0], len(text))
    return text, spans


class TransformersBackend:
    """Sample from any HF causal LM with per-token entropy. See module docstring."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, batch_size: int = 32,
                 show_progress: bool = False):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.eos_id is None:
            raise ValueError("tokenizer has no eos_token_id; generation could never stop")
        # counters for cost accounting (query cost in the EDU paper)
        self.forward_passes = 0
        self.generated_tokens = 0
        self.prompt_tokens_encoded = 0

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: object) -> TransformersBackend:
        model, tokenizer = load_model_and_tokenizer(name_or_path)
        return cls(model, tokenizer, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ public API

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def generate(self, prompts: Sequence[str], n: int, sampling: SamplingConfig,
                 seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        return self.generate_ids([self.encode(p) for p in prompts], n, sampling, seeds=seeds)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig,
                     seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        """n samples per prompt. `seeds[i]` (default sampling.seed + i) seeds prompt i's samples."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if seeds is None:
            seeds = [sampling.seed + i for i in range(len(prompt_ids))]
        if len(seeds) != len(prompt_ids):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompt_ids)} prompts")
        for i, ids in enumerate(prompt_ids):
            if len(ids) == 0:
                raise ValueError(f"prompt {i} is empty (no tokens)")
        out: list[list[Completion]] = []
        per_batch = max(1, self.batch_size // n) if self.batch_size >= n else 1
        batches = range(0, len(prompt_ids), per_batch)
        if self.show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="generate", unit="batch")
        for start in batches:
            chunk = prompt_ids[start : start + per_batch]
            out.extend(self._generate_batch(chunk, n, sampling, seeds[start : start + per_batch]))
        return out

    # ------------------------------------------------------------------ internals

    @torch.no_grad()
    def _generate_batch(self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig,
                        seeds: Sequence[int]) -> list[list[Completion]]:
        B = len(prompt_ids)
        L = max(len(p) for p in prompt_ids)
        device = self.model.device
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for b, ids in enumerate(prompt_ids):  # left padding: the last column is every prompt's last token
            input_ids[b, L - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
            attn[b, L - len(ids) :] = 1
        input_ids, attn = input_ids.to(device), attn.to(device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (B, L)

        # 1. prefill once per prompt
        out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=True)
        self.forward_passes += 1
        self.prompt_tokens_encoded += int(attn.sum())
        cache = out.past_key_values
        logits = out.logits[:, -1, :]  # (B, V)

        # 2. expand to n samples per prompt
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, dim=0)
            attn = attn.repeat_interleave(n, dim=0)
            pos = pos.repeat_interleave(n, dim=0)
        R = B * n
        gens = []
        for b in range(B):
            for j in range(n):
                g = torch.Generator(device="cpu")
                g.manual_seed((int(seeds[b]) * 1_000_003 + j) % (2**63 - 1))
                gens.append(g)

        next_pos = pos[:, -1] + 1  # (R,)
        tokens: list[list[int]] = [[] for _ in range(R)]
        ents: list[list[float]] = [[] for _ in range(R)]
        tops: list[list[list[tuple[int, float]]]] = [[] for _ in range(R)]
        done = torch.zeros(R, dtype=torch.bool)
        finish = ["length"] * R

        # 3. decode
        for _ in range(sampling.max_new_tokens):
            logp = torch.log_softmax(logits.float(), dim=-1)  # (R, V), temperature 1
            H = token_entropy(logits)  # (R,)
            check_finite(H[~done], "entropy")
            nxt = self._sample(logits, sampling, gens, done)  # (R,)
            if sampling.top_logprobs:
                tv, ti = logp.topk(sampling.top_logprobs, dim=-1)
            for r in range(R):
                if done[r]:
                    continue
                t = int(nxt[r])
                if t == self.eos_id:
                    done[r] = True
                    finish[r] = "stop"
                    continue
                tokens[r].append(t)
                ents[r].append(float(H[r]))
                if sampling.top_logprobs:
                    tops[r].append([(int(i), float(v)) for i, v in zip(ti[r], tv[r], strict=True)])
                self.generated_tokens += 1
            if bool(done.all()):
                break
            feed = torch.where(done, torch.full_like(nxt, self.pad_id), nxt).to(device)
            attn = torch.cat([attn, (~done).long().unsqueeze(1).to(device)], dim=1)
            out = self.model(input_ids=feed.unsqueeze(1), attention_mask=attn, position_ids=next_pos.unsqueeze(1),
                             past_key_values=cache, use_cache=True)
            self.forward_passes += 1
            cache = out.past_key_values
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1

        results: list[list[Completion]] = []
        for b in range(B):
            row = []
            for j in range(n):
                r = b * n + j
                text, spans = token_offsets(self.tokenizer, tokens[r])
                row.append(Completion(text=text, token_ids=tokens[r], offsets=spans, entropy=ents[r],
                                      top_logprobs=tops[r], finish_reason=finish[r]))
            results.append(row)
        return results

    @staticmethod
    def _sample(logits: torch.Tensor, sampling: SamplingConfig, gens: list[torch.Generator],
                done: torch.Tensor) -> torch.Tensor:
        if sampling.temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)  # (R, V)
        if sampling.top_p < 1.0:
            sp, si = probs.sort(dim=-1, descending=True)
            keep = (sp.cumsum(-1) - sp) < sampling.top_p  # always keeps the top token
            sp = sp * keep
            probs = torch.zeros_like(probs).scatter(-1, si, sp)
            probs = probs / probs.sum(-1, keepdim=True)
        nxt = torch.zeros(probs.shape[0], dtype=torch.long)
        for r in range(probs.shape[0]):
            if not done[r]:
                nxt[r] = torch.multinomial(probs[r].cpu(), 1, generator=gens[r]).item()
        return nxt
