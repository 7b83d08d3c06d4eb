r"""A process reward model: a pretrained backbone plus an ensemble of step heads.

EDU-PRM (arXiv 2503.22233) trains a discriminative PRM on Monte-Carlo step labels; ActPRM
(arXiv 2504.10559) puts `num_heads` heads on one backbone and reads the spread of their scores
as uncertainty. Each step ends in a dedicated separator token `<step>`; head h reads the
backbone's last hidden state there, giving a logit z_{h,b,k} for step k of example b and a
score sigmoid(z_{h,b,k}). Per step, `head_mean` and `head_std` summarise the heads.

Loss (`step_loss`): binary cross entropy at the separators only, averaged over the unmasked
(head, step) pairs P, plus an L2 pull of each head toward its initial weights theta_h^0:

    L = (1/|P|) sum_{(h,b,k) in P} BCE(z_{h,b,k}, y_{b,k})  +  l2_to_init * sum_h ||theta_h - theta_h^0||^2
    BCE(z, y) = -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]
    P = {(h, b, k) : m_{h,b} = 1 and step k of example b was kept (not truncated)}
    m_{h,b} = 1[u(seed, h, id_b) < head_data_keep],   u = a hash of (seed, h, id_b) mapped into [0, 1)

y is the hard label (0/1) or the soft label (fraction of rollouts that reach the answer).
The mask m gives every head its own random subset of the data (ActPRM), and is reproducible
because it depends only on the example id.

Where each step's separator sits, for any tokenizer, is `prmflow.prm.tokenization`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from prmflow.io import atomic_path
from prmflow.prm.tokenization import TokenizedSteps, add_step_token, collate, tokenize_steps

CONFIG_NAME = "prmflow_prm.json"
HEADS_NAME = "prm_heads.safetensors"


@dataclass
class PRMConfig:
    """The PRM's architecture and scoring limits; saved as prmflow_prm.json beside the model."""

    step_token: str = "<step>"
    """separator appended after every step, added to the tokenizer as a special token"""
    num_heads: int = 1
    """E, the number of ensemble heads (1 = a single head)"""
    head_hidden: int = 0
    """0 = linear head Linear(H, 1); >0 = MLP Linear(H, head_hidden)-GELU-Linear(head_hidden, 1)"""
    head_data_keep: float = 1.0
    """ActPRM data mask: each head trains on an example with this probability (hash of head, id)"""
    l2_to_init: float = 0.0
    """coefficient of sum_h ||theta_h - theta_h^0||^2, the pull of each head toward its init"""
    max_len: int = 512
    """context limit in tokens; longer solutions lose whole steps from the end"""
    label_type: str = "hard"
    """`hard` (0/1 labels) | `soft` (soft_labels in [0, 1]): what the heads are trained on"""
    seed: int = 0
    """seeds head initialisation and the per-head data mask"""

    def __post_init__(self) -> None:
        if self.num_heads < 1 or self.head_hidden < 0 or self.max_len < 1 or self.l2_to_init < 0:
            raise ValueError(f"invalid PRMConfig {self}")
        if not 0 < self.head_data_keep <= 1:
            raise ValueError(f"head_data_keep must be in (0, 1], got {self.head_data_keep}")
        if self.label_type not in ("hard", "soft"):
            raise ValueError(f"label_type must be 'hard' or 'soft', got {self.label_type!r}")


def head_data_mask(example_ids: Sequence[str], num_heads: int, keep: float, seed: int) -> torch.Tensor:
    """m_{h,b} = 1[u(seed, h, id_b) < keep], a reproducible coin per (head, example). -> (E, B) bool.

    >>> head_data_mask(["p0", "p1", "p2", "p3"], num_heads=2, keep=0.5, seed=0).int().tolist()
    [[1, 0, 0, 0], [0, 1, 0, 1]]
    >>> head_data_mask(["p0", "p1"], num_heads=2, keep=1.0, seed=0).all().item()   # keep = 1: no mask
    True
    """
    def u(h: int, i: str) -> float:
        digest = hashlib.blake2b(f"{seed}/{h}/{i}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return torch.tensor([[u(h, str(i)) < keep for i in example_ids] for h in range(num_heads)], dtype=torch.bool)


# --------------------------------------------------------------------------- loss


def step_bce(logits: torch.Tensor, label_positions: torch.Tensor, targets: torch.Tensor,
             head_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The BCE sum over the unmasked (head, step) pairs P, and |P|. Padded positions are -1.

    logits (E, B, T), label_positions (B, S), targets (B, S) in [0, 1], head_mask (E, B) bool.
    """
    E = logits.shape[0]
    valid = label_positions >= 0  # (B, S)
    z = logits.gather(2, label_positions.clamp(min=0).unsqueeze(0).expand(E, -1, -1))  # (E, B, S)
    y = targets.to(z.dtype).unsqueeze(0).expand_as(z)  # (E, B, S)
    pairs = head_mask.unsqueeze(-1) & valid.unsqueeze(0)  # (E, B, S)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")  # (E, B, S)
    return torch.where(pairs, bce, torch.zeros_like(bce)).sum(), pairs.sum()


def step_loss(logits: torch.Tensor, label_positions: torch.Tensor, targets: torch.Tensor, head_mask: torch.Tensor,
              sq_dist_to_init: torch.Tensor | float = 0.0, l2_to_init: float = 0.0) -> torch.Tensor:
    """L = (1/|P|) sum_P BCE(z, y) + l2_to_init * sum_h ||theta_h - theta_h^0||^2 (module docstring).

    `sq_dist_to_init` is `PRM.sq_dist_to_init()`. With no unmasked pair the BCE term is 0.
    """
    total, n_pairs = step_bce(logits, label_positions, targets, head_mask)
    return total / n_pairs.clamp(min=1) + l2_to_init * sq_dist_to_init


# --------------------------------------------------------------------------- model


class Head(torch.nn.Module):
    """One ensemble_head: hidden states (B, T, H) -> logits (B, T). Remembers its initial weights."""

    def __init__(self, hidden_size: int, head_hidden: int):
        super().__init__()
        if head_hidden == 0:
            self.net: torch.nn.Module = torch.nn.Linear(hidden_size, 1)
        else:
            self.net = torch.nn.Sequential(torch.nn.Linear(hidden_size, head_hidden), torch.nn.GELU(),
                                           torch.nn.Linear(head_hidden, 1))
        for name, p in self.net.named_parameters():  # theta_h^0, saved and moved with the head
            self.register_buffer("init_" + name.replace(".", "_"), p.detach().clone())

    def sq_dist_to_init(self) -> torch.Tensor:
        """||theta_h - theta_h^0||^2 over all of the head's weights and biases."""
        return sum(((p - getattr(self, "init_" + n.replace(".", "_"))) ** 2).sum()
                   for n, p in self.net.named_parameters())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden).squeeze(-1)  # (B, T)


@dataclass
class StepScores:
    """Scores of the kept steps of one solution; truncated steps (cut from the end) get none."""

    head_mean: list[float]
    """per kept step, the mean over heads of sigmoid(z_h); len = num_steps - n_truncated_steps"""
    head_std: list[float]
    """per kept step, the population std over heads (0.0 for a single head)"""
    per_head: list[list[float]]
    """(num_heads, kept steps) sigmoid scores"""
    n_truncated_steps: int
    """steps dropped from the end for context, which have no score"""

    def head_mean_padded(self) -> list[float]:
        """One score per step: truncated steps repeat the last kept score (for consumers such as
        `evaluate_subsets` that need len == num_steps)."""
        return self.head_mean + self.head_mean[-1:] * self.n_truncated_steps


class PRM(torch.nn.Module):
    """backbone (AutoModel, no LM head) + `num_heads` heads over its last hidden state.

    Any AutoModel checkpoint works: a causal LM (Llama, Qwen2) loads its base model, and step k
    sees only what precedes its separator. An encoder (BERT) loads too, but attends both ways,
    so step k's score also sees the later steps.
    """

    def __init__(self, backbone: PreTrainedModel, tokenizer: Any, cfg: PRMConfig):
        super().__init__()
        if cfg.step_token not in tokenizer.get_added_vocab():
            raise ValueError(f"tokenizer has no {cfg.step_token!r}; build the PRM with PRM.from_backbone")
        self.backbone, self.tokenizer, self.cfg = backbone, tokenizer, cfg
        self.step_token_id = tokenizer.convert_tokens_to_ids(cfg.step_token)
        hidden_size = backbone.config.get_text_config().hidden_size
        with torch.random.fork_rng(devices=[]):  # seeded heads, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.heads = torch.nn.ModuleList(Head(hidden_size, cfg.head_hidden) for _ in range(cfg.num_heads))

    @property
    def pad_id(self) -> int:
        for tid in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if tid is not None:
                return tid
        return 0  # any id: padded positions are masked and never read

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T) -> logits (E, B, T) at every position."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        hidden = hidden.to(next(self.heads.parameters()).dtype)  # heads stay float32 on a bf16 backbone
        return torch.stack([head(hidden) for head in self.heads])  # (E, B, T)

    def sq_dist_to_init(self) -> torch.Tensor:
        """sum_h ||theta_h - theta_h^0||^2, the L2-to-init term before its coefficient."""
        return sum(head.sq_dist_to_init() for head in self.heads)

    def tokenize(self, prompt: str, steps: Sequence[str], max_len: int | None = None) -> TokenizedSteps:
        return tokenize_steps(self.tokenizer, prompt, steps, self.step_token_id, max_len or self.cfg.max_len)

    # ----------------------------------------------------------------------- scoring

    @torch.no_grad()
    def score_batch(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]],
                    batch_size: int = 16) -> list[StepScores]:
        """Score every kept step of every solution (eval mode, right-padded batches, no grad).

        Steps cut from the end for context get no score: head_mean, head_std and each per_head
        row cover only the kept steps, and n_truncated_steps says how many are missing (see
        `StepScores.head_mean_padded`). A solution whose first step alone exceeds max_len raises.
        """
        if len(prompts) != len(steps_list):
            raise ValueError(f"{len(prompts)} prompts but {len(steps_list)} step lists")
        was_training, device = self.training, next(self.parameters()).device
        self.eval()
        out: list[StepScores] = []
        try:
            for i in range(0, len(prompts), batch_size):
                chunk = zip(prompts[i : i + batch_size], steps_list[i : i + batch_size])
                batch = [self.tokenize(p, s) for p, s in chunk]
                ids, attn, pos = collate(batch, self.pad_id)
                probs = torch.sigmoid(self(ids.to(device), attn.to(device)).float()).cpu()  # (E, B, T)
                for b, x in enumerate(batch):
                    per_head = probs[:, b, x.label_positions]  # (E, kept steps)
                    out.append(StepScores(per_head.mean(0).tolist(), per_head.std(0, correction=0).tolist(),
                                          per_head.tolist(), x.n_truncated_steps))
        finally:
            self.train(was_training)
        return out

    def score(self, problem_prompt: str, steps: Sequence[str]) -> list[float]:
        """head_mean per kept step of one solution (truncated steps are left out, see score_batch)."""
        return self.score_batch([problem_prompt], [steps])[0].head_mean

    # ----------------------------------------------------------------------- save / load

    @classmethod
    def from_backbone(cls, path_or_name: str | Path, cfg: PRMConfig, **backbone_kwargs: Any) -> PRM:
        """A fresh PRM on a policy / LM checkpoint: its base model, its tokenizer + the step token,
        and seeded heads. `backbone_kwargs` go to AutoModel.from_pretrained (e.g. dtype)."""
        tokenizer = AutoTokenizer.from_pretrained(path_or_name)
        backbone = AutoModel.from_pretrained(path_or_name, **backbone_kwargs)
        add_step_token(tokenizer, backbone, cfg.step_token)
        return cls(backbone, tokenizer, copy.deepcopy(cfg))

    def save_pretrained(self, out_dir: str | Path) -> None:
        """Atomically write backbone (HF format), tokenizer, heads and prmflow_prm.json to out_dir."""
        with atomic_path(out_dir) as tmp:
            self.backbone.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}, tmp / HEADS_NAME)
            (tmp / CONFIG_NAME).write_text(json.dumps(asdict(self.cfg), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, **backbone_kwargs: Any) -> PRM:
        """Load a PRM written by save_pretrained."""
        path = Path(path)
        cfg = PRMConfig(**json.loads((path / CONFIG_NAME).read_text()))
        prm = cls(AutoModel.from_pretrained(path, **backbone_kwargs), AutoTokenizer.from_pretrained(path), cfg)
        prm.heads.load_state_dict(load_file(path / HEADS_NAME))
        return prm
