r"""Train a PRM on TRL stepwise rows: a plain PyTorch loop with exact kill-and-resume.

The loss is `prmflow.prm.model.step_loss` (EDU-PRM arXiv 2503.22233, ActPRM arXiv 2504.10559).
Optimizer step s sees a group G_s of batch_size * grad_accum rows, run as grad_accum
micro-batches. The mean is taken over the (head, step) pairs P_s of the whole group, not per
micro-batch, so accumulation gives the gradient of one big batch:

    loss_s = sum_{micro-batch m} [ (1/|P_s|) sum_{(h,b,k) in P_s, b in m} BCE(z_{h,b,k}, y_{b,k})
                                   + l2_to_init * sum_h ||theta_h - theta_h^0||^2 / grad_accum ]

Rows come from a stream: epoch e is a seeded permutation of all rows, and group s is positions
[s * |G|, (s + 1) * |G|) of it (a group may straddle two epochs). So the data order is a pure
function of (seed, s), and a checkpoint needs only the step number to know where it was.

Checkpoints go to out_dir/checkpoints/step-{n}/ (written atomically by prmflow.resume):
model.safetensors (backbone + heads + initial head weights; the heads alone when the backbone is
frozen), optimizer.pt, rng.pt (torch CPU RNG) and state.json (step, examples seen, losses, Python
RNG, the job key of config + data + backbone, so another job's checkpoint is refused). With
resume=True a run continues from the newest one and ends bit-identical to an uninterrupted run on
the same machine: every ingredient of a step (parameters, AdamW moments, lr, rows, RNG) is
restored exactly.

Under `accelerate launch --num_processes W` the group's micro-batches are split over W processes
and their gradients summed (prmflow.prm.parallel), which is the same optimizer step.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import random
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from prmflow.options import TrainOptions
from prmflow.prm.model import PRM, TokenizedSteps, head_data_mask, step_bce
from prmflow.prm.parallel import Processes
from prmflow.resume import STATE_FILE, job_key, load_checkpoint, save_checkpoint
from prmflow.schedule import lr_at

if TYPE_CHECKING:
    from peft import PeftModel


@dataclass(frozen=True)
class TrainConfig(TrainOptions):
    """Stage `train_prm`: optimise a PRM on stepwise rows (the optimisation knobs: prmflow.options.TrainOptions)."""

    max_grad_norm: float = 1.0
    """clip the global gradient norm to this (0 = no clipping)"""
    max_len: int | None = None
    """context limit for training rows; None = the PRM's max_len"""
    label_type: str | None = None
    """`hard` | `soft`; None = the PRM's label_type (the one used is recorded in prm.cfg)"""
    keep_checkpoints: int = 2
    """newest checkpoints kept on disk"""
    progress_bar: bool = True
    """show a tqdm bar"""

    def __post_init__(self) -> None:
        self.check_train()
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.label_type not in (None, "hard", "soft"):
            raise ValueError(f"label_type must be 'hard', 'soft' or None, got {self.label_type!r}")


# these change neither the data order nor the arithmetic, so a resumed run may change them
_NOT_FINGERPRINTED = ("checkpoint_every", "keep_checkpoints", "progress_bar")


@dataclass(frozen=True)
class Example:
    """One tokenized training row: its id, tokens and one target per kept step."""

    id: str
    tokens: TokenizedSteps
    targets: list[float]


def prepare_examples(
    prm: PRM, rows: Sequence[dict[str, Any]], label_type: str, max_len: int, skipped: list[str] | None = None
) -> list[Example]:
    """Tokenize rows; targets are `labels` (hard, 0/1) or `soft_labels` (soft, [0, 1]).

    A row without "id" is called "row-{index}" (the ActPRM head mask hashes the id). A row whose
    first step alone does not fit max_len raises, or, given a `skipped` list, is left out and
    its id appended there.
    """
    out = []
    for i, row in enumerate(rows):
        rid = str(row.get("id", f"row-{i}"))
        labels = row.get("labels" if label_type == "hard" else "soft_labels")
        if labels is None or len(labels) != len(row["completions"]):
            raise ValueError(f"row {rid!r}: needs one {label_type} label per step, got {labels!r}")
        targets = [float(y) for y in labels]
        if any(not (0 <= y <= 1) for y in targets) or (label_type == "hard" and any(y not in (0, 1) for y in targets)):
            raise ValueError(f"row {rid!r}: {label_type} labels out of range: {labels!r}")
        try:
            tokens = prm.tokenize(row["prompt"], row["completions"], max_len)
        except ValueError as e:
            if skipped is None or "first step" not in str(e):
                raise ValueError(f"row {rid!r}: {e}") from None
            skipped.append(rid)
            continue
        out.append(Example(rid, tokens, targets[: len(tokens.label_positions)]))
    return out


@functools.lru_cache(maxsize=4)
def _epoch_perm(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist())


def example_order(n: int, seed: int, start: int, count: int) -> list[int]:
    """Row indices at stream positions start .. start + count - 1 (epoch e = seeded permutation e).

    >>> a = example_order(3, seed=0, start=0, count=6)   # two epochs, each a permutation
    >>> sorted(a[:3]), sorted(a[3:]), example_order(3, seed=0, start=2, count=2) == a[2:4]
    ([0, 1, 2], [0, 1, 2], True)
    """
    return [_epoch_perm(n, seed, p // n)[p % n] for p in range(start, start + count)]


def accumulate_grads(prm: PRM, group: Sequence[Example], batch_size: int, procs: Processes | None = None) -> float:
    """Backpropagate loss_s (module docstring) for one group in micro-batches; returns loss_s.

    Gradients add up in .grad (zero them first). With `procs` of W > 1 processes this process
    runs only its own micro-batches (`procs.owns`) and returns its share of loss_s; the shares
    and the gradients sum to the single-process ones. Raises FloatingPointError naming the rows
    of a micro-batch whose loss is not finite.
    """
    procs = procs or Processes()
    device = next(prm.parameters()).device
    masks = head_data_mask([e.id for e in group], prm.cfg.num_heads, prm.cfg.head_data_keep, prm.cfg.seed)  # (E, G)
    n_pairs = max(1, sum(int(masks[:, j].sum()) * len(e.targets) for j, e in enumerate(group)))
    n_micro = math.ceil(len(group) / batch_size)
    total = 0.0
    for i in range(0, len(group), batch_size):
        if not procs.owns(i // batch_size):
            continue
        mb = group[i : i + batch_size]
        ids, attn, steps, pos = prm.inputs([e.tokens for e in mb])  # (B, T) x 3, (B, S)
        targets = torch.zeros(pos.shape)  # (B, S)
        for b, e in enumerate(mb):
            targets[b, : len(e.targets)] = torch.tensor(e.targets)
        with procs.autocast():
            logits = prm(ids, attn, steps)  # (E, B, T)
        logits = logits.float()
        bce_sum, _ = step_bce(logits, pos, targets.to(device), masks[:, i : i + batch_size].to(device))
        loss = bce_sum / n_pairs
        if prm.cfg.l2_to_init > 0:
            loss = loss + prm.cfg.l2_to_init * prm.sq_dist_to_init() / n_micro
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} on the batch of rows {[e.id for e in mb]}")
        loss.backward()
        total += loss.item()
    return total


def train_prm(
    prm: PRM,
    rows: Sequence[dict[str, Any]],
    cfg: TrainConfig,
    out_dir: str | Path,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    resume: bool = True,
    procs: Processes | None = None,
) -> dict[str, Any]:
    """Train `prm` in place on TRL stepwise rows; returns a summary.

    `on_step(step, {"train/loss", "train/lr", "train/grad_norm"})` runs after each optimizer step
    (1-based), after that step's checkpoint is written, on the main process only. resume=True
    continues from the newest checkpoint in out_dir/checkpoints; resume=False deletes them and
    starts over. `procs` (default: one process, prm where it is) are the data-parallel
    processes, e.g. `Processes.current()` under `accelerate launch`; every one of them calls
    this with the same arguments, and the PRM moves to its device.
    """
    procs = procs or Processes(device=next(prm.parameters()).device)
    prm.to(procs.device)
    if cfg.lora_r > 0:
        prm.backbone = _wrap_lora(prm.backbone, cfg.lora_r)
    prm.cfg = dataclasses.replace(prm.cfg, label_type=cfg.label_type or prm.cfg.label_type)
    max_len = cfg.max_len or prm.cfg.max_len
    skipped: list[str] = []
    examples = prepare_examples(prm, rows, prm.cfg.label_type, max_len, skipped)
    if not examples:
        raise ValueError(f"no training rows ({len(skipped)} of {len(rows)} skipped: first step over max_len={max_len})")
    truncation = truncation_report(examples, skipped)
    if truncation["truncated_rows"] or skipped:
        print(
            f"train prm: max_len={max_len} truncated {truncation['truncated_rows']} of {len(examples)} rows "
            f"({truncation['truncated_fraction']:.1%}; {truncation['truncated_steps']} steps lost their label) and "
            f"skipped {len(skipped)} whose first step alone is longer{': ' + ', '.join(skipped[:5]) if skipped else ''}"
        )
    group_size = cfg.batch_size * cfg.grad_accum
    total = cfg.steps or max(1, math.ceil(cfg.epochs * len(examples) / group_size))
    if cfg.freeze_backbone:
        prm.backbone.requires_grad_(False)
    cached = None
    if cfg.cache_features:
        if procs.world > 1:
            raise ValueError("cache_features runs in one process; launch without accelerate or set it to false")
        from prmflow.active.features import CachedHeads  # lazy: prmflow.active imports prmflow.prm

        cached = CachedHeads(prm)
        for e in tqdm(examples, desc="featurize (frozen backbone)", disable=not cfg.progress_bar):
            cached.features([e.tokens])
    params = [p for p in prm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    ckpt_dir = Path(out_dir) / "checkpoints"
    fingerprint = _fingerprint(cfg, prm, examples)
    ckpt_module = prm.heads if cfg.freeze_backbone else prm  # a frozen backbone is rebuilt, not checkpointed
    latest = _latest_checkpoint(ckpt_dir) if resume else None
    if not resume and procs.is_main:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    procs.barrier()  # nobody reads checkpoints the main process is deleting
    if latest is not None:
        state = _load_checkpoint(latest, ckpt_module, opt, fingerprint)
    else:
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        state = {"step": 0, "examples_seen": 0, "losses": []}
    start = state["step"]

    prm.train()
    bar = tqdm(total=total, initial=start, desc="train prm", disable=not (cfg.progress_bar and procs.is_main))
    for step in range(start, total):
        lr = lr_at(step, total, cfg.lr, warmup=cfg.warmup_steps)  # linear warmup, cosine to lr / 10
        for g in opt.param_groups:
            g["lr"] = lr
        group = [examples[j] for j in example_order(len(examples), cfg.seed, step * group_size, group_size)]
        opt.zero_grad(set_to_none=True)
        try:
            if cached is not None:
                loss = cached.accumulate_grads(group, cfg.batch_size)
            else:
                loss = accumulate_grads(prm, group, cfg.batch_size, procs)
        except FloatingPointError as e:
            raise FloatingPointError(f"optimizer step {step + 1}: {e}") from None
        procs.sum_gradients(params)
        loss = procs.sum(loss)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf))
        if not math.isfinite(grad_norm):
            raise FloatingPointError(
                f"optimizer step {step + 1}: non-finite gradient norm on rows {[e.id for e in group]}"
            )
        opt.step()
        state["step"], state["examples_seen"] = step + 1, (step + 1) * group_size
        state["losses"].append(loss)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
            if procs.is_main:
                _save_checkpoint(ckpt_dir, ckpt_module, opt, state, fingerprint, cfg.keep_checkpoints)
            procs.barrier()
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if on_step is not None and procs.is_main:
            on_step(step + 1, {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm})
    bar.close()
    prm.eval()
    if cfg.lora_r > 0:
        prm.backbone = cast("PeftModel", prm.backbone).merge_and_unload()  # a plain backbone again, for save_pretrained
    return {
        "steps": total,
        "resumed_from": start,
        "final_loss": state["losses"][-1] if state["losses"] else math.nan,
        "losses": list(state["losses"]),
        "examples": len(examples),
        **truncation,
        "processes": procs.world,
        **({"backbone_passes": cached.cache.backbone_passes} if cached is not None else {}),
    }


def truncation_report(examples: Sequence[Example], skipped: Sequence[str] = ()) -> dict[str, Any]:
    """What max_len cost: rows that lost steps from the end (and their share), steps without a
    label, rows whose prompt lost tokens, rows skipped whole (first step alone too long)."""
    n_rows = len(examples) + len(skipped)
    truncated = sum(e.tokens.n_truncated_steps > 0 for e in examples)
    return {
        "truncated_rows": truncated,
        "truncated_fraction": truncated / n_rows if n_rows else 0.0,
        "truncated_steps": sum(e.tokens.n_truncated_steps for e in examples),
        "prompt_truncated_rows": sum(e.tokens.n_truncated_prompt_tokens > 0 for e in examples),
        "skipped_rows": len(skipped),
    }


# --------------------------------------------------------------------------- helpers


def _wrap_lora(backbone: torch.nn.Module, r: int) -> PeftModel:
    if importlib.util.find_spec("peft") is None:
        raise ImportError(
            "TrainConfig.lora_r > 0 needs the `peft` package, which is not installed "
            "(pip install peft), or set lora_r = 0 for full fine-tuning"
        )
    from peft import LoraConfig, get_peft_model

    return get_peft_model(backbone, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear"))


def _fingerprint(cfg: TrainConfig, prm: PRM, examples: Sequence[Example]) -> str:
    """The job key of everything that decides the arithmetic: train + PRM config, the frozen
    backbone's identity and the tokenized data."""
    ref = asdict(prm.backbone_ref) if prm.backbone_ref is not None else None  # a frozen backbone's identity
    rows = ([e.id, e.tokens.input_ids, e.tokens.label_positions, e.targets] for e in examples)
    return job_key(cfg, [asdict(prm.cfg), ref, *rows], exclude=_NOT_FINGERPRINTED)


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = [
        (int(m.group(1)), p)
        for p in ckpt_dir.glob("step-*")
        if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / STATE_FILE).is_file()
    ]
    return max(found)[1] if found else None


def _save_checkpoint(
    ckpt_dir: Path, prm: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any], fingerprint: str, keep: int
) -> None:
    def write_files(tmp: Path) -> None:
        save_model(prm, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")

    save_checkpoint(
        ckpt_dir / f"step-{state['step']}", fingerprint, {**state, "python_rng": random.getstate()}, write_files
    )
    old = sorted((int(p.name.split("-")[1]), p) for p in ckpt_dir.glob("step-*") if re.fullmatch(r"step-\d+", p.name))
    for _, p in old[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def _load_checkpoint(path: Path, prm: torch.nn.Module, opt: torch.optim.Optimizer, fingerprint: str) -> dict[str, Any]:
    state = load_checkpoint(path, fingerprint, "use a fresh out_dir or resume=False")
    assert state is not None  # _latest_checkpoint found its state file
    load_model(prm, str(path / "model.safetensors"), device=str(next(prm.parameters()).device))
    opt.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    version, internal, gauss = state.pop("python_rng")
    random.setstate((version, tuple(internal), gauss))
    return state
