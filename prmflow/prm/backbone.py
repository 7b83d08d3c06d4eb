"""Where a PRM's backbone comes from, and whether it is still the one the heads were trained on.

A frozen-backbone PRM saves no copy of its backbone (`prmflow.prm.model.PRM.save_pretrained`);
it saves a `BackboneRef` (prm_backbone.json): the path as `train.backbone` gave it, sha256s of the
weights (`weights_digest`, every tensor's name, shape, dtype and bytes) and of the tokenizer
(`tokenizer_digest`), the dtype, and the id the step token got. Loading resolves the path
(`resolve_backbone`), recomputes both digests and refuses a backbone that changed.

`require_policy_backbone` guards the LM features, which mean something only on the policy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prmflow.shard import path_fingerprint


@dataclass(frozen=True)
class BackboneRef:
    """What a frozen-backbone PRM saves instead of its backbone: prm_backbone.json."""

    path: str
    """the backbone as `from_backbone` was given it: a local dir (relative: see `resolve_backbone`) or a hub id"""
    weights_sha256: str
    """`weights_digest` of the backbone as loaded, before the step token was added"""
    tokenizer_sha256: str
    """`tokenizer_digest` of its tokenizer, before the step token was added"""
    dtype: str
    """the dtype its weights were loaded in (float32 | bfloat16 | float16)"""
    step_token_id: int = -1
    """the id the step token got"""
    vocab_size: int = -1
    """len(tokenizer) with the step token"""


def resolve_backbone(src: str, prm_dir: str | Path) -> Path:
    """Where a backbone pointer `src` points: itself if absolute; a relative path under the
    nearest ancestor of `prm_dir` that has it (the repo root for <repo>/models/prm and
    "models/policy", also in a copy of the repo such as `dvc exp run --temp`), else under the
    working directory (where DVC runs stages). The returned path may not exist (a hub id)."""
    if Path(src).is_absolute():
        return Path(src)
    for root in Path(prm_dir).resolve().parents:
        if (root / src).exists():
            return root / src
    return Path.cwd() / src


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over a module's state dict: every tensor's name, shape, dtype and bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of a tokenizer's vocabulary (token -> id, added tokens included) and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps([vocab, tokenizer.special_tokens_map], sort_keys=True).encode()).hexdigest()


def require_policy_backbone(backbone: str | Path, policy: str | Path) -> None:
    """Raise unless `backbone` is the policy that wrote the steps, as `lm_features` needs.

    The same model means: the same string, the same directory, or directories of equal content
    (`prmflow.shard.path_fingerprint`).

    >>> require_policy_backbone("models/policy", "models/policy")
    >>> require_policy_backbone("org/lm-270m", "models/policy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: lm_features reads ... backbone 'org/lm-270m' is not the policy 'models/policy' ...
    """
    a, b = Path(backbone), Path(policy)
    if str(backbone) == str(policy) or (
        a.exists() and b.exists() and (a.resolve() == b.resolve() or path_fingerprint(a) == path_fingerprint(b))
    ):
        return
    raise ValueError(
        f"lm_features reads the backbone's own log-probabilities and entropies of each step's tokens, "
        f"which mean 'how surprised was the policy by what it wrote' only when the backbone IS that "
        f"policy; backbone {str(backbone)!r} is not the policy {str(policy)!r} that generated the labeled "
        f"steps. Set lm_features: false, or backbone to the policy"
    )


def dtype_name(model: torch.nn.Module) -> str:
    """'float32' | 'bfloat16' | ...: the dtype of a model's first parameter."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")
