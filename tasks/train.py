"""Tasks of stage `train`: fit the PRM on labeled steps, resumably."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow.config import TrainConfig
from prmflow.prm import PRM, PRMConfig
from prmflow.prm.train import TrainConfig as LoopConfig
from prmflow.prm.train import train_prm
from prmflow.tracking import RunLogger


def checkpoint_dir(cfg: TrainConfig, labels_path: str, root: str = "checkpoints/train") -> Path:
    """Checkpoints live outside the DVC output (DVC deletes outputs before a rerun), keyed by
    config + data, so a killed run resumes and a changed one starts fresh."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(Path(labels_path).read_bytes())
    return Path(root) / h.hexdigest()[:16]


def prm_config(cfg: TrainConfig, seed: int | None = None) -> PRMConfig:
    """The PRM architecture the `train` stage builds (seed: cfg.seed unless given)."""
    return PRMConfig(num_heads=cfg.num_heads, head_hidden=cfg.head_hidden, head_data_keep=cfg.head_data_keep,
                     l2_to_init=cfg.l2_to_init, max_len=cfg.max_len, label_type=cfg.label_type,
                     seed=cfg.seed if seed is None else seed, lm_features=cfg.lm_features)


def loop_config(cfg: TrainConfig) -> LoopConfig:
    """The training loop the `train` stage runs."""
    return LoopConfig(lr=cfg.lr, epochs=cfg.epochs, steps=cfg.steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                      weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, seed=cfg.seed,
                      checkpoint_every=cfg.checkpoint_every, freeze_backbone=cfg.freeze_backbone)


@task(cache_policy=NO_CACHE, tags=["train"])
def fit_prm(cfg: TrainConfig, rows: list[dict[str, Any]], labels_path: str, out_dir: str,
            run_id: str | None = None) -> dict[str, Any]:
    """Build the PRM on the backbone, train it (resuming from checkpoints), save to `out_dir`.

    Not cached by Prefect: its own checkpoints make a rerun after a crash cheap.
    """
    prm = PRM.from_backbone(cfg.backbone, prm_config(cfg))
    loop = loop_config(cfg)
    log = RunLogger(run_id) if run_id else None

    def on_step(step: int, metrics: dict[str, float]) -> None:
        if log and (step % 10 == 0 or step == 1):
            log.metrics(metrics, step=step)

    summary = train_prm(prm, rows, loop, checkpoint_dir(cfg, labels_path), on_step=on_step, resume=True)
    prm.save_pretrained(out_dir)
    return summary
