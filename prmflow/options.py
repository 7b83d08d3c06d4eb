"""Option groups that a library config and a stage config share, each knob declared once.

`prmflow.prm.PRMConfig`, `prmflow.prm.TrainConfig` and `prmflow.active.LoopConfig` inherit these
groups and add their own fields; so do the `train` and `active` stage configs of prmflow.config,
whose tasks hand the group on with `options_of(cfg, Group)`. The defaults are the library's
(params.yaml holds each stage's values; prmflow.config.PARAMS_DIFFERENT_FROM_DEFAULTS lists where
they differ). This module imports no torch: prmflow.config, which every stage imports, builds on
it without putting the PRM code into every DVC stage's deps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from prmflow.schedule import SCHEDULES

STEP_TOKENIZATIONS = ("pieces", "joined")


def options_of(cfg: Any, group: type) -> dict[str, Any]:
    """The values of `group`'s fields in `cfg` (a config that inherits `group`), by name.

    >>> options_of(PRMOptions(num_heads=4, label_type="soft"), HeadOptions)["num_heads"]
    4
    """
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(group)}


@dataclass(frozen=True)
class HeadOptions:
    """The PRM's reward heads (prmflow.prm.model): PRMConfig, stages `train` and `active`."""

    num_heads: int = 1
    """E, the number of ensemble heads (1 = a single head; > 1 = an ActPRM ensemble, whose spread
    is the epistemic uncertainty; scores are the mean sigmoid over heads)"""
    head_hidden: int = 0
    """0 = linear head Linear(H, 1); >0 = MLP Linear(H, head_hidden)-GELU-Linear(head_hidden, 1)"""
    head_data_keep: float = 1.0
    """ActPRM data mask: each head trains on an example with this probability (hash of head, id)"""
    l2_to_init: float = 0.0
    """coefficient of sum_h ||theta_h - theta_h^0||^2, the pull of each head toward its init (keeps
    the heads diverse)"""
    max_len: int = 512
    """context limit in tokens; longer solutions lose whole steps from the end (counted)"""
    lm_features: bool = False
    """heads also read the backbone's own LM statistics of each step (min/mean token log-prob, max
    entropy; prmflow.prm.model); needs a causal-LM backbone that is the policy (backbone = policy)"""

    def check_heads(self) -> None:
        if self.num_heads < 1 or self.max_len < 1:
            raise ValueError(f"num_heads and max_len must be >= 1, got {self.num_heads}, {self.max_len}")
        if self.head_hidden < 0 or self.l2_to_init < 0:
            raise ValueError(f"head_hidden and l2_to_init must be >= 0, got {self.head_hidden}, {self.l2_to_init}")
        if not 0 < self.head_data_keep <= 1:
            raise ValueError(f"head_data_keep must be in (0, 1], got {self.head_data_keep}")


@dataclass(frozen=True)
class PRMOptions(HeadOptions):
    """The PRM's heads plus what they are trained on and how steps become tokens: PRMConfig, stage `train`."""

    label_type: str = "hard"
    """`hard` (0/1, Math-Shepherd hard estimation) | `soft` (fraction of rollouts right): the heads' targets"""
    add_bos: bool = True
    """put the tokenizer's BOS id first, once (Gemma, Llama); a no-op for tokenizers without one
    (PRMs saved before this field existed load with False, the layout they were trained with)"""
    step_tokenization: str = "pieces"
    """`pieces` (prompt and each step tokenized alone) | `joined` (the text tokenized once, split at
    step boundaries; right for SentencePiece tokenizers); prmflow.prm.tokenization"""

    def check_prm(self) -> None:
        self.check_heads()
        if self.label_type not in ("hard", "soft"):
            raise ValueError(f"label_type must be 'hard' or 'soft', got {self.label_type!r}")
        if self.step_tokenization not in STEP_TOKENIZATIONS:
            raise ValueError(f"step_tokenization must be one of {STEP_TOKENIZATIONS}, got {self.step_tokenization!r}")


@dataclass(frozen=True)
class TrainOptions:
    """PRM training (prmflow.prm.train): its TrainConfig and stage `train`."""

    lr: float = 1e-5
    """peak AdamW learning rate (linear warmup, then cosine decay to lr/10)"""
    epochs: float = 1.0
    """passes over the rows; used only when steps == 0"""
    steps: int = 0
    """optimizer steps; 0 = ceil(epochs * rows / (batch_size * grad_accum))"""
    batch_size: int = 8
    """rows per micro-batch (one forward + backward)"""
    grad_accum: int = 1
    """micro-batches per optimizer step"""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay"""
    warmup_steps: int = 0
    """optimizer steps of linear lr warmup"""
    seed: int = 0
    """seeds the data order and the torch RNG (dropout); the train stage's PRM heads and data masks too"""
    freeze_backbone: bool = False
    """train the heads only"""
    lora_r: int = 0
    """0 = full fine-tuning (or a frozen backbone); >0 = LoRA of this rank on the backbone (needs
    `peft`), merged at the end"""
    cache_features: bool = False
    """with freeze_backbone: run the backbone once per row and train the heads on the cached head
    inputs (prmflow.active.features) instead of once per row and epoch. Equal up to float rounding
    (and dropout, which the cached pass does not apply); one process only"""
    checkpoint_every: int = 500
    """optimizer steps between checkpoints (the last step is always checkpointed; a killed run
    resumes from the last one)"""

    def check_train(self) -> None:
        if min(self.batch_size, self.grad_accum, self.checkpoint_every) < 1:
            raise ValueError("batch_size, grad_accum and checkpoint_every must be >= 1")
        if self.steps < 0 or self.epochs <= 0 or self.lr <= 0:
            raise ValueError(f"need steps >= 0, epochs > 0, lr > 0 (got {self.steps}, {self.epochs}, {self.lr})")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.cache_features and not self.freeze_backbone:
            raise ValueError("cache_features caches a frozen backbone's outputs; it needs freeze_backbone: true")


@dataclass(frozen=True)
class ActiveLoopOptions:
    """Pool-based active learning (prmflow.active.loop): its LoopConfig and stage `active`."""

    p: float = 0.9
    """a step is confident only if head_mean >= p or <= 1 - p"""
    std_threshold: float = 0.01
    """a step is confident only if head_std (population std over heads) <= std_threshold"""
    select_fraction: float = 0.5
    """`random` without a count schedule (or an `active` run to match) labels round(select_fraction * batch) per round"""
    batch_size: int = 32
    """pool solutions scored per round"""
    lr: float = 1e-3
    """AdamW learning rate (of the first round)"""
    lr_schedule: str = "constant"
    """`constant` | `linear` | `cosine`: the rate over the stream's rounds (prmflow.active.loop.lr_at)"""
    lr_final: float = 0.1
    """with a decaying schedule, the last round's rate as a fraction of lr"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    grad_steps: int = 1
    """optimizer steps per round on that round's labeled solutions"""
    micro_batch_size: int = 16
    """solutions per forward/backward (speed and memory only)"""
    eval_every: int = 2
    """rounds between synthetic-ProcessBench evaluations (plus before the first; the last round is
    always evaluated; 0 = only the last)"""
    score_batch_size: int = 32
    """solutions per scoring forward pass (speed only)"""
    checkpoint_every: int = 1
    """rounds between loop checkpoints (labels are saved after every labeled solution regardless)"""
    cache_features: bool = False
    """score and train the heads on cached head inputs (prmflow.active.features; frozen backbone
    only; the same numbers up to float rounding, one backbone pass per solution)"""

    def check_loop(self) -> None:
        if (
            min(self.batch_size, self.grad_steps, self.micro_batch_size, self.checkpoint_every) < 1
            or self.eval_every < 0
        ):
            raise ValueError("batch_size, grad_steps, micro_batch_size, checkpoint_every must be >= 1, eval_every >= 0")
        if not 0 <= self.select_fraction <= 1:
            raise ValueError(f"select_fraction must be in [0, 1], got {self.select_fraction}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.lr_final <= 1:
            raise ValueError(f"lr_final must be in [0, 1], got {self.lr_final}")
