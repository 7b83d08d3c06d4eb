"""transformers backend: batched sampling with a KV cache and full-vocabulary entropy.

Per batch of prompts:
  1. prefill: encode the left-padded prompts once,                    (B, L) -> cache
  2. expand:  repeat the cache n times (`batch_repeat_interleave`),   B -> B*n rows,
     so n samples share one prompt encoding;
  3. decode:  one token per step for every row, recording H_t from the full logits
     (prmflow.edu.entropy.token_entropy) and sampling with a per-row generator, so each
     sample's random stream depends on (seed, prompt, sample) and not on its neighbours.

Memory is bounded by design: everything runs under `torch.no_grad` (no autograd graph; not
inference_mode, whose tensors a later training step on the same model could trip over),
the prefill keeps only the logits of the last positions (`logits_to_keep`, see `prefill_keep`),
each decode step keeps only its (rows, V) logits and records per row just the sampled id, H_t
and the top-k, and `token_logprobs` (teacher forcing) runs the LM head over chunks of at most
`LOGPROB_CHUNK_ROWS` positions instead of materialising log_softmax over (B, T, V).
Peak memory is therefore model + KV cache + O((rows + 64) x V), whatever the generated length.

Bit-exactness: a float32 GEMM of fewer than ~16 rows takes a different MKL kernel than a
longer one (the last bits of a logit change), while longer products give each row the same bits
whatever their row count. The LM head is therefore always applied to at least
`HEAD_MIN_ROWS` rows (or to all positions when there are fewer), so logits are bitwise those of
the plain full-sequence forward (tests/test_backend_memory.py checks this against a reference).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

from prmflow.edu.entropy import check_finite, entropy_from_logprobs
from prmflow.policy.base import Completion, SamplingConfig, TokenizerFrontEnd, apply_stop, prompt_seeds, sample_seed

HEAD_MIN_ROWS = 64
"""the LM head runs on at least this many rows, so that it takes the same (long-product) GEMM
kernel as a full-sequence forward: same logits, bit for bit (see the module docstring)"""
LOGPROB_CHUNK_ROWS = 64
"""positions per LM-head call in `token_logprobs`: peak extra memory LOGPROB_CHUNK_ROWS x V floats"""


TRIM_EVERY = 16
"""decode steps between `release_freed_memory` calls"""


def _load_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim(0)`; a no-op elsewhere).

    glibc serves a freed block's size from its heap instead of mmap thereafter (its mmap
    threshold adapts upwards, to 32 MiB), and the heap it grows for per-step (rows, V) tensors is
    not always returned: measured on a 131k vocabulary, the resident set grew by one such tensor
    per decode step in one run of three. Trimming every TRIM_EVERY steps bounds that garbage.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def prefill_keep(batch: int, length: int) -> int:
    """How many trailing prompt positions the prefill computes logits for: enough that the LM
    head sees >= HEAD_MIN_ROWS rows (batch x keep), never more than the prompt length.

    >>> prefill_keep(16, 300), prefill_keep(1, 300), prefill_keep(2, 5), prefill_keep(128, 40)
    (4, 64, 5, 1)
    """
    return min(length, -(-HEAD_MIN_ROWS // batch))


def stop_window(stop: Sequence[str]) -> int:
    """Tokens decoded per step to look for a stop string that the newest token may complete:
    4 per character of the longest stop string (a byte-level token can carry a quarter of a
    4-byte character) plus 8, so the window holds it whole and does not begin inside it.

    >>> stop_window(["Question:"])
    44
    """
    return 4 * max(len(s) for s in stop) + 8


class GrowingLayer(DynamicLayer):
    """A KV-cache layer that appends into a buffer of doubling capacity.

    transformers' DynamicLayer `torch.cat`s the whole cache on every decode step, which copies
    rows x length x width per token and dominates sampling time for small models with long
    prefixes. Here an append writes one slot (amortised O(1)); `keys`/`values` are views.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._len = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        need = self._len + key_states.shape[-2]
        if self._k is None or self._v is None or need > self._k.shape[-2]:
            cap = max(64, 2 * need)
            k = key_states.new_empty((*key_states.shape[:2], cap, key_states.shape[-1]))
            v = value_states.new_empty((*value_states.shape[:2], cap, value_states.shape[-1]))
            if self._k is not None and self._v is not None and self._len:
                k[:, :, : self._len] = self._k[:, :, : self._len]
                v[:, :, : self._len] = self._v[:, :, : self._len]
            self._k, self._v = k, v
        self._k[:, :, self._len : need] = key_states
        self._v[:, :, self._len : need] = value_states
        self._len = need
        self.keys, self.values = self._k[:, :, :need], self._v[:, :, :need]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized and self._k is not None and self._v is not None:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self._k[:, :, : self._len], self._v[:, :, : self._len]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized and self._k is not None and self._v is not None:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[:, :, : self._len], self._v[:, :, : self._len]


def load_model_and_tokenizer(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
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
        raise OSError(
            f"'{name_or_path}' is not a local model directory and could not be loaded from the hub{hint}: {e}"
        ) from e
    model.to(device).eval()  # type: ignore[arg-type]  # transformers' wraps-decorated .to loses self
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
        cur = cast(
            str, tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )
        end = len(cur.rstrip("\ufffd")) if cur.endswith("\ufffd") else len(cur)
        end = max(end, stable)
        spans.append((stable, end))
        stable, prev = end, cur
    text = prev if ids else ""
    if spans and spans[-1][1] < len(text):  # trailing bytes that never completed a character
        spans[-1] = (spans[-1][0], len(text))
    return text, spans


class TransformersBackend(TokenizerFrontEnd):
    """Sample from any HF causal LM with per-token entropy. See module docstring."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ):
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
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> TransformersBackend:
        model, tokenizer = load_model_and_tokenizer(name_or_path)
        return cls(model, tokenizer, **kwargs)

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """n samples per prompt. `seeds[i]` (default sampling.seed + i) seeds prompt i's samples."""
        seeds = prompt_seeds(prompt_ids, n, sampling, seeds)
        # batch prompts of similar length together (less left padding); samples depend on their
        # own seeds only, so the order of work does not change them
        order = sorted(range(len(prompt_ids)), key=lambda i: (len(prompt_ids[i]), i))
        out: list[list[Completion] | None] = [None] * len(prompt_ids)
        per_batch = max(1, self.batch_size // n) if self.batch_size >= n else 1
        batches = range(0, len(order), per_batch)
        if self.show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="generate", unit="batch")
        for start in batches:
            idx = order[start : start + per_batch]
            done = self._generate_batch([prompt_ids[i] for i in idx], n, sampling, [seeds[i] for i in idx])
            for i, comps in zip(idx, done, strict=True):
                out[i] = comps
        return cast(list[list[Completion]], out)  # every slot filled: order is a permutation

    # ------------------------------------------------------------------ internals

    @torch.no_grad()
    def token_logprobs(
        self, prompt_ids: Sequence[Sequence[int]], token_ids: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """log p(token_t | prompt, tokens_<t) at temperature 1 for every given continuation token
        (teacher forcing, right-padded batches): how surprising the policy finds each token.

        The decoder runs once per batch; the LM head then runs over the needed positions only,
        LOGPROB_CHUNK_ROWS at a time (never a (B, T, V) tensor)."""
        if len(prompt_ids) != len(token_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(token_ids)} continuations")
        out: list[list[float]] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(prompt_ids), self.batch_size):
            prompts, conts = prompt_ids[start : start + self.batch_size], token_ids[start : start + self.batch_size]
            seqs = [list(p) + list(t) for p, t in zip(prompts, conts, strict=True)]
            B, T = len(seqs), max(len(s) for s in seqs)
            ids = torch.full((B, T), self.pad_id, dtype=torch.long)
            attn = torch.zeros((B, T), dtype=torch.long)
            for b, seq in enumerate(seqs):
                ids[b, : len(seq)], attn[b, : len(seq)] = torch.tensor(seq), 1
            ids, attn = ids.to(device), attn.to(device)
            self._check_head(ids[:1, : min(T, 8)])
            h = self.model.base_model(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, T, H)
            self.forward_passes += 1
            # row b*T + t of h predicts token t+1 of sequence b
            rows = torch.cat(
                [
                    torch.arange(len(p) - 1, len(p) + len(t) - 1) + b * T
                    for b, (p, t) in enumerate(zip(prompts, conts, strict=True))
                ]
            ).to(device)
            targets = torch.tensor([x for t in conts for x in t], dtype=torch.long, device=device)
            lp = self._target_logprobs(h, rows, targets).tolist()
            at = 0
            for t in conts:
                out.append(lp[at : at + len(t)])
                at += len(t)
        return out

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """The model's own logits from final hidden states: its output embedding, then the final
        soft-capping of models that have one (Gemma 2/3: cap * tanh(logits / cap)), in the same
        operations as their `forward`. `_check_head` verifies this against the model's forward."""
        logits = self.model.get_output_embeddings()(h)
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        if cap is not None:
            logits = logits / cap
            logits = torch.tanh(logits)
            logits = logits * cap
        return logits

    def _check_head(self, ids: torch.Tensor) -> None:
        """Once per backend: `_head(decoder(ids))` must give the model's own logits, else the
        model transforms its logits in a way `_head` does not know (fail, never silently differ)."""
        if getattr(self, "_head_checked", False):
            return
        ref = self.model(input_ids=ids).logits
        ours = self._head(self.model.base_model(input_ids=ids).last_hidden_state)
        if ours.shape != ref.shape or not torch.allclose(ours.float(), ref.float(), rtol=1e-4, atol=1e-4):
            raise NotImplementedError(
                f"{type(self.model).__name__}: its logits are not output_embeddings(hidden) "
                f"(with final_logit_softcapping), so token_logprobs cannot compute them in "
                f"chunks; max difference {float((ours.float() - ref.float()).abs().max()):.3g}"
            )
        self._head_checked = True

    def _target_logprobs(self, h: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log_softmax(logits)[target] at the given flat rows of h (B, T, H) -> (N,) float32.

        Small batches (B*T <= LOGPROB_CHUNK_ROWS) take the head over every position, exactly as a
        full forward; otherwise chunks of LOGPROB_CHUNK_ROWS rows, each padded to HEAD_MIN_ROWS
        rows so the GEMM, and so every logit, is bitwise the full-sequence one."""
        B, T, H = h.shape
        if B * T <= LOGPROB_CHUNK_ROWS:
            logp = self._head(h).float().log_softmax(-1).view(B * T, -1)  # (B*T, V), at most CHUNK x V
            return logp[rows, targets]
        flat = h.reshape(B * T, H)
        out = []
        for c in range(0, len(rows), LOGPROB_CHUNK_ROWS):
            sel, tgt = rows[c : c + LOGPROB_CHUNK_ROWS], targets[c : c + LOGPROB_CHUNK_ROWS]
            pad = max(0, HEAD_MIN_ROWS - len(sel))  # any rows will do (B*T > CHUNK >= MIN_ROWS)
            if pad:
                sel = torch.cat([sel, torch.arange(pad, device=sel.device)])
            logp = self._head(flat[sel]).float().log_softmax(-1)  # (<= CHUNK, V)
            out.append(logp[torch.arange(len(tgt), device=logp.device), tgt])
        return torch.cat(out) if out else flat.new_zeros(0, dtype=torch.float32)

    def _generate_batch(
        self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig, seeds: Sequence[int]
    ) -> list[list[Completion]]:
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

        # 1. prefill once per prompt; logits of the last positions only (prefill_keep)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attn,
            position_ids=pos,
            use_cache=True,
            past_key_values=Cache(layer_class_to_replicate=GrowingLayer),
            logits_to_keep=prefill_keep(B, L),
        )
        self.forward_passes += 1
        self.prompt_tokens_encoded += int(attn.sum())
        cache = out.past_key_values
        logits = out.logits[:, -1, :]  # (B, V)
        del out

        # 2. expand to n samples per prompt
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, dim=0)
            attn = attn.repeat_interleave(n, dim=0)
            pos = pos.repeat_interleave(n, dim=0)
        R, T = B * n, sampling.max_new_tokens
        # each row's uniforms come from its own generator, drawn once: the sample of row r
        # depends on (seed, prompt, sample index) only, never on its batch neighbours
        u = torch.empty((R, T))
        for b in range(B):
            for j in range(n):
                g = torch.Generator(device="cpu")
                g.manual_seed(sample_seed(seeds[b], j))
                u[b * n + j] = torch.rand(T, generator=g)

        next_pos = pos[:, -1] + 1  # (A,) for the A rows still active
        active = torch.arange(R)  # original row index of each active row
        steps_tok, steps_H, steps_top, steps_rows = [], [], [], []  # per decode step, for active rows
        finished_at = torch.full((R,), -1, dtype=torch.long)  # first step whose token is not returned
        drawn: list[list[int]] = [[] for _ in range(R)] if sampling.stop else []  # tokens so far, for stop
        window = stop_window(sampling.stop) if sampling.stop else 0

        # 3. decode: per step only (A, V) tensors, nothing full-vocabulary is kept across steps
        for t in range(T):
            logp = torch.log_softmax(logits.float(), dim=-1)  # (A, V)
            H = entropy_from_logprobs(logp)  # (A,), = token_entropy(logits) bit for bit
            check_finite(H, "entropy")
            nxt = self._sample(logits, sampling, u[active, t])  # (A,)
            steps_tok.append(nxt)
            steps_H.append(H)
            steps_rows.append(active)
            if sampling.top_logprobs:
                tv, ti = logp.topk(sampling.top_logprobs, dim=-1)
                steps_top.append((ti, tv))
            del logp
            is_eos = (nxt == self.eos_id) & (finished_at[active] < 0)  # first EOS of a row ends it
            finished_at[active[is_eos]] = t
            if sampling.stop:  # a stop string completed by this step's token ends its row after it
                for r, tok in zip(active.tolist(), nxt.tolist(), strict=True):
                    if finished_at[r] >= 0:
                        continue
                    drawn[r].append(tok)
                    tail = self.tokenizer.decode(
                        drawn[r][-window:], skip_special_tokens=True, clean_up_tokenization_spaces=False
                    )
                    if any(s in tail for s in sampling.stop):
                        finished_at[r] = t + 1
            keep = finished_at[active] < 0
            if t % TRIM_EVERY == TRIM_EVERY - 1:
                release_freed_memory()
            if not bool(keep.any()) or t == T - 1:
                break
            if 2 * int(keep.sum()) <= len(active):  # compact: drop finished rows from batch and cache
                idx = keep.nonzero().squeeze(1)
                cache.batch_select_indices(idx.to(device))
                active, nxt, next_pos, attn, keep = active[idx], nxt[idx], next_pos[idx], attn[idx], keep[idx]
            feed = torch.where(keep, nxt, torch.full_like(nxt, self.pad_id)).to(device)
            attn = torch.cat([attn, keep.long().unsqueeze(1).to(device)], dim=1)
            out = self.model(
                input_ids=feed.unsqueeze(1),
                attention_mask=attn,
                position_ids=next_pos.unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
            )
            self.forward_passes += 1
            cache = out.past_key_values
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1

        # 4. gather each row's tokens (up to, not including, EOS) from the per-step records
        tokens: list[list[int]] = [[] for _ in range(R)]
        ents: list[list[float]] = [[] for _ in range(R)]
        tops: list[list[list[tuple[int, float]]]] = [[] for _ in range(R)]
        for t, (rows, tok, H) in enumerate(zip(steps_rows, steps_tok, steps_H, strict=True)):
            rows_l, tok_l, H_l = rows.tolist(), tok.tolist(), H.tolist()
            top_i = top_v = None
            if sampling.top_logprobs:
                top_i, top_v = steps_top[t][0].tolist(), steps_top[t][1].tolist()
            for a, r in enumerate(rows_l):
                if 0 <= finished_at[r] <= t:
                    continue
                tokens[r].append(tok_l[a])
                ents[r].append(H_l[a])
                if top_i is not None and top_v is not None:
                    tops[r].append(list(zip(top_i[a], top_v[a], strict=True)))
        self.generated_tokens += sum(len(x) for x in tokens)

        results: list[list[Completion]] = []
        for b in range(B):
            row = []
            for j in range(n):
                r = b * n + j
                text, spans = token_offsets(self.tokenizer, tokens[r])
                c = Completion(
                    text=text,
                    token_ids=tokens[r],
                    offsets=spans,
                    entropy=ents[r],
                    top_logprobs=tops[r],
                    finish_reason="stop" if finished_at[r] >= 0 else "length",
                )
                row.append(apply_stop(c, sampling.stop))
            results.append(row)
        return results

    @staticmethod
    def _sample(logits: torch.Tensor, sampling: SamplingConfig, u: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sampling: row r takes the first token whose cumulative probability
        exceeds u[r] (one uniform per row, drawn from that row's own generator)."""
        if sampling.temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)  # (A, V)
        if sampling.top_p < 1.0:
            sp, si = probs.sort(dim=-1, descending=True)
            keep = (sp.cumsum(-1) - sp) < sampling.top_p  # always keeps the top token
            probs = torch.zeros_like(probs).scatter(-1, si, sp * keep)
        cdf = probs.cumsum(-1)
        cdf = cdf / cdf[:, -1:]  # exact normalisation, so u < 1 always lands on a token
        idx = torch.searchsorted(cdf, u.to(cdf.dtype).unsqueeze(1), right=True).squeeze(1)  # first cdf > u
        return idx.clamp(max=probs.shape[-1] - 1)
