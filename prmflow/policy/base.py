"""The generation interface every policy backend implements.

    backend.generate(prompts, n, sampling) -> completions[prompt][sample]

Each `Completion` carries its token ids, the character span of each token in its text, the
entropy of the full next-token distribution before each token (nats, temperature 1), and
optionally the top-k logprobs there. Later stages (partitioning, MC labeling, EDU sampling)
need nothing else from a backend.

Stop strings (`SamplingConfig.stop`) end a sample at the first occurrence of any of them in its
decoded continuation; every backend applies the same cut (`cut_at_stop`) to its tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


def derive_seed(seed: int, key: str) -> int:
    """A 56-bit sampling seed from (seed, key): depends on nothing else (batch, shard, order).

    >>> derive_seed(0, "synth-000001") == derive_seed(0, "synth-000001") != derive_seed(1, "synth-000001")
    True
    """
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:7], "big")


_SEED_MOD = 2**63 - 1


def sample_seed(prompt_seed: int, j: int) -> int:
    """Seed of sample j of a prompt whose seed is `prompt_seed`: every backend (transformers'
    per-row generators, vLLM's and the OpenAI server's per-request seeds) uses this formula.

    >>> sample_seed(5, 0) != sample_seed(5, 1) != sample_seed(6, 0)
    True
    """
    return (int(prompt_seed) * 1_000_003 + j) % _SEED_MOD


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample. temperature 0 means greedy."""

    temperature: float = 1.0
    """softmax temperature for sampling (entropy is always reported at temperature 1)"""
    top_p: float = 1.0
    """nucleus mass kept before sampling"""
    max_new_tokens: int = 128
    """generation budget per sample"""
    seed: int = 0
    """base seed; sample j of prompt i uses its own stream derived from (seed, i, j)"""
    top_logprobs: int = 0
    """how many top logprobs to return per token (0 = none)"""
    stop: tuple[str, ...] = ()
    """stop strings: a sample ends at the first occurrence of any of them in its decoded text,
    which then ends just before it (see `cut_at_stop`); () = stop on end-of-sequence only"""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {self.top_logprobs}")
        if isinstance(self.stop, str):
            raise ValueError(f"stop must be a tuple of strings, got the string {self.stop!r} (write ({self.stop!r},))")
        object.__setattr__(self, "stop", tuple(self.stop))  # a list from YAML/JSON becomes a tuple
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r} in stop={self.stop!r}")


@dataclass
class Completion:
    """One sampled continuation of one prompt."""

    text: str
    """decoded continuation (special tokens removed)"""
    token_ids: list[int]
    """generated ids, excluding the end-of-sequence token"""
    offsets: list[tuple[int, int]]
    """character span [start, end) of each token in `text`; a token that ends inside a
    multi-byte character gets an empty span at the character's start"""
    entropy: list[float]
    """H_t in nats of the next-token distribution that produced token t (eq. 1, prmflow.edu.entropy)"""
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    """per token: the top-k (token id, logprob) pairs at temperature 1"""
    finish_reason: str = "stop"
    """`stop` (end-of-sequence token or a stop string) or `length` (budget exhausted)"""

    def to_row(self, decimals: int | None = None) -> dict[str, Any]:
        r = (lambda x: round(x, decimals)) if decimals is not None else (lambda x: x)
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "offsets": [list(o) for o in self.offsets],
            "entropy": [r(h) for h in self.entropy],
            "top_logprobs": [[[t, r(lp)] for t, lp in tops] for tops in self.top_logprobs],
            "finish_reason": self.finish_reason,
        }


def cut_at_stop(text: str, offsets: Sequence[tuple[int, int]], stop: Sequence[str]) -> tuple[int, int] | None:
    r"""Where a continuation ends under stop strings: (tokens kept, characters kept), or None if
    no stop string occurs in `text`.

    The cut is at s, the start of the earliest occurrence of any stop string. The text keeps
    text[:s]; the tokens kept are those whose span starts before s. A token that straddles the
    boundary (start < s < end, e.g. " Question" for the stop string "Question") is kept, its span
    clipped to end at s, so spans still tile the kept text while its id still decodes to the
    whole token. A token whose span starts at s or later, or an empty span at s, is dropped.

    >>> # tokens "The", " answer", " is 5", "\n\n", "Question" -> spans of "The answer is 5\n\nQuestion"
    >>> spans = [(0, 3), (3, 10), (10, 15), (15, 17), (17, 25)]
    >>> cut_at_stop("The answer is 5\n\nQuestion", spans, ["\n\n", "Question:"])
    (3, 15)
    >>> cut_at_stop("The answer is 5\n\nQuestion", spans, ["swer"])   # " answer" straddles: kept
    (2, 6)
    >>> cut_at_stop("The answer is 5", spans[:3], ["\n\n"]) is None
    True
    """
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not found:
        return None
    s = min(found)
    return sum(1 for start, _ in offsets if start < s), s


def apply_stop(c: Completion, stop: Sequence[str]) -> Completion:
    r"""`c` cut by `cut_at_stop` (finish_reason `stop`), or `c` itself if no stop string occurs.

    >>> c = Completion("5\nQ: x", [7, 8, 9, 10], [(0, 1), (1, 2), (2, 4), (4, 6)], [0.1, 0.2, 0.3, 0.4], [], "length")
    >>> apply_stop(c, ["\nQ"])
    Completion(text='5', token_ids=[7], offsets=[(0, 1)], entropy=[0.1], top_logprobs=[], finish_reason='stop')
    """
    cut = cut_at_stop(c.text, c.offsets, stop) if stop else None
    if cut is None:
        return c
    k, s = cut
    return Completion(
        text=c.text[:s],
        token_ids=c.token_ids[:k],
        offsets=[(a, min(b, s)) for a, b in c.offsets[:k]],
        entropy=c.entropy[:k],
        top_logprobs=c.top_logprobs[:k],
        finish_reason="stop",
    )


class Backend(Protocol):
    """A policy that samples continuations with per-token entropy."""

    tokenizer: Any
    """its HF tokenizer (step texts are encoded with it, without special tokens)"""

    def encode(self, prompt: str) -> list[int]:
        """A prompt's token ids, special tokens (BOS) included."""
        ...

    def generate(self, prompts: Sequence[str], n: int, sampling: SamplingConfig) -> list[list[Completion]]:
        """n completions for each prompt, in prompt order."""
        ...

    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Like `generate`, from token-level prefixes (MC rollouts continue a step prefix)."""
        ...


def prompt_seeds(
    prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig, seeds: Sequence[int] | None
) -> list[int]:
    """Check a `generate_ids` request and return one seed per prompt (default sampling.seed + i).

    >>> prompt_seeds([[1], [2, 3]], 2, SamplingConfig(seed=7), None)
    [7, 8]
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seeds is None:
        seeds = [sampling.seed + i for i in range(len(prompt_ids))]
    if len(seeds) != len(prompt_ids):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompt_ids)} prompts")
    for i, ids in enumerate(prompt_ids):
        if len(ids) == 0:
            raise ValueError(f"prompt {i} is empty (no tokens)")
    return list(seeds)


class TokenizerFrontEnd:
    """`encode` and `generate` for a backend that has `self.tokenizer` and `generate_ids`."""

    tokenizer: Any

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        raise NotImplementedError  # each backend has its own

    def generate(
        self, prompts: Sequence[str], n: int, sampling: SamplingConfig, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        return self.generate_ids([self.encode(p) for p in prompts], n, sampling, seeds=seeds)
