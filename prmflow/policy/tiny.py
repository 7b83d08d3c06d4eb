"""The embedded default policy: a tiny causal LM trained from scratch on canonical solutions.

It is deliberately small, so that after a few minutes on a CPU it solves some problems and
botches others (mostly multi-digit arithmetic), with real entropy at the tokens where it
hesitates. Everything downstream (partitioning, MC labels, PRMs) studies those mistakes.

Tokenizer: byte-level BPE trained locally with `tokenizers`, every digit its own token, so the
model does arithmetic digit by digit (as Llama/Qwen tokenizers do).
Model: a Llama- or Qwen2-style `transformers` config. Loss: next-token cross entropy on the
solution tokens only (the prompt is context, not a target).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from prmflow.schedule import lr_at

PAD, EOS = "<pad>", "</s>"


def build_tokenizer(corpus: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus`, digits split into single tokens.

    Byte-level means any text encodes (no unknown token), including unicode the corpus lacks.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)


def build_model(
    arch: str,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    max_len: int,
    pad_id: int,
    eos_id: int,
    seed: int,
) -> PreTrainedModel:
    """A freshly initialised tiny Llama or Qwen2 causal LM (seeded)."""
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_len,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown arch '{arch}' (expected 'llama' or 'qwen2')")


@dataclass(frozen=True)
class Example:
    """One training sequence: prompt ids then solution ids (ending in EOS)."""

    prompt_ids: list[int]
    target_ids: list[int]


def make_examples(
    tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str], solutions: Sequence[str], max_len: int
) -> list[Example]:
    """Tokenize (prompt, solution) pairs; sequences longer than max_len are an error."""
    out = []
    for i, (p, s) in enumerate(zip(prompts, solutions, strict=True)):
        pi = tokenizer(p, add_special_tokens=False)["input_ids"]
        ti = tokenizer(s, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(pi) + len(ti) > max_len:
            raise ValueError(f"example {i} has {len(pi) + len(ti)} tokens, over max_len={max_len}")
        out.append(Example(pi, ti))
    return out


def collate(batch: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch. labels = -100 on prompt and padding, so only solution tokens count.

    >>> # prompt [5, 6], target [7, 1]  ->  input [5, 6, 7, 1], labels [-100, -100, 7, 1]
    """
    T = max(len(e.prompt_ids) + len(e.target_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), -100, dtype=torch.long)
    attn = torch.zeros((len(batch), T), dtype=torch.long)
    for b, e in enumerate(batch):
        seq = e.prompt_ids + e.target_ids
        ids[b, : len(seq)] = torch.tensor(seq)
        attn[b, : len(seq)] = 1
        labels[b, len(e.prompt_ids) : len(seq)] = torch.tensor(e.target_ids)
    return ids, attn, labels


def train_lm(
    model: PreTrainedModel,
    examples: Sequence[Example],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    warmup_steps: int,
    weight_decay: float,
    pad_id: int,
    seed: int,
    on_step: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Plain AdamW loop over shuffled examples. Returns the loss of every step.

    `on_step(step, loss, lr)` is called after each step (progress bars, metric logging).
    """
    if not examples:
        raise ValueError("no training examples")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    model.train()
    losses: list[float] = []
    # plain shuffled batches: sorting batches by length (less padding) made the policy learn
    # far worse here (4% vs 20% solve rate after 1200 steps), so we pay for the padding
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order = torch.randperm(len(examples), generator=g).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = [examples[i] for i in idx]
        ids, attn, labels = collate(batch, pad_id)
        cur_lr = lr_at(step, steps, lr, warmup=warmup_steps)  # linear warmup, cosine to lr / 10
        for group in opt.param_groups:
            group["lr"] = cur_lr
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {step} (batch of examples {idx[:8]}...)"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1], cur_lr)
    model.eval()
    return losses
