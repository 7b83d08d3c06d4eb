"""Per-token predictive entropy, the signal behind EDU-PRM (arXiv 2503.22233).

    H_t = -sum_v p_t(v) log p_t(v)                                        (eq. 1, nats)

where p_t is the policy's next-token distribution at position t. With full logits we compute
it exactly. Engines that return only the top-k logprobs (vLLM, OpenAI-style APIs) get the
"other-bucket" approximation:

    H_k = -sum_{i<=k} p_i log p_i  -  r log r,      r = 1 - sum_{i<=k} p_i        (eq. 2)

which treats the leftover mass r as one token. Merging outcomes never increases entropy, so
H_k <= H always (a lower bound), with equality when the top k hold all the mass.
An upper bound spreads r evenly over the V - k unseen tokens:  H_k + r log(V - k).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last dim. (..., V) -> (...).

    `torch.special.entr` maps p=0 to 0, so masked (-inf) logits give 0, not NaN.

    >>> round(float(token_entropy(torch.zeros(4))), 6)   # uniform over 4 -> log 4
    1.386294
    """
    return entropy_from_logprobs(torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1))


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """Eq. 1 from normalised log-probabilities (..., V) -> (...): `token_entropy(x)` is
    `entropy_from_logprobs(log_softmax(x))` bit for bit, so a caller that also needs the
    log-probabilities (top-k) computes the softmax once.

    >>> round(float(entropy_from_logprobs(torch.log(torch.tensor([0.5, 0.25, 0.25])))), 6)
    1.039721
    """
    return torch.special.entr(logp.exp()).sum(-1)


def topk_entropy(logprobs: Sequence[float]) -> float:
    """Eq. 2: lower bound on entropy from the top-k logprobs, leftover mass as one bucket.

    >>> round(topk_entropy([math.log(0.5), math.log(0.25)]), 6)   # 0.5, 0.25, other 0.25
    1.039721
    """
    probs = [math.exp(lp) for lp in logprobs if lp > -math.inf]
    rest = max(0.0, 1.0 - sum(probs))
    return -sum(p * math.log(p) for p in probs if p > 0) - (rest * math.log(rest) if rest > 0 else 0.0)


def topk_entropy_upper(logprobs: Sequence[float], vocab_size: int) -> float:
    """Upper bound: the leftover mass spread uniformly over the vocab_size - k unseen tokens."""
    probs = [math.exp(lp) for lp in logprobs if lp > -math.inf]
    rest = max(0.0, 1.0 - sum(probs))
    unseen = max(1, vocab_size - len(probs))
    return topk_entropy(logprobs) + (rest * math.log(unseen) if rest > 0 else 0.0)


def check_finite(values: torch.Tensor, what: str) -> None:
    """Fail loudly where a NaN/inf arises, rather than letting it reach a saved artifact."""
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        idx = bad.nonzero()[0].tolist()
        raise FloatingPointError(f"non-finite {what} at index {idx} (value {values[tuple(idx)].item()})")
