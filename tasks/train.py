"""Tasks of stage `train`: fit the PRM on labeled steps, resumably."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow.config import SPEED_ONLY, TrainConfig, load_section
from prmflow.io import read_jsonl
from prmflow.options import PRMOptions, TrainOptions, options_of
from prmflow.prm import PRM, PRMConfig
from prmflow.prm.backbone import require_policy_backbone
from prmflow.prm.parallel import Processes
from prmflow.prm.train import TrainConfig as PRMTrainConfig
from prmflow.prm.train import train_prm
from prmflow.resume import job_dir, job_key
from prmflow.tracking import RunLogger


def checkpoint_dir(cfg: TrainConfig, labels_path: str, root: str = "checkpoints/train") -> Path:
    """Checkpoints live outside the DVC output (DVC deletes outputs before a rerun), keyed by
    config + data, so a killed run resumes and a changed one starts fresh. Checkpoint frequency
    and the registry name change no weight, so a resumed run may change them."""
    return job_dir(root, job_key(cfg, [Path(labels_path)], exclude=SPEED_ONLY["train"]))


def prm_config(cfg: TrainConfig, seed: int | None = None) -> PRMConfig:
    """The PRM architecture the `train` stage builds (seed: cfg.seed unless given)."""
    return PRMConfig(**options_of(cfg, PRMOptions), seed=cfg.seed if seed is None else seed)


def prm_train_config(cfg: TrainConfig) -> PRMTrainConfig:
    """The training loop the `train` stage runs."""
    return PRMTrainConfig(**options_of(cfg, TrainOptions))


def train_on_this_process(
    cfg: TrainConfig,
    rows: list[dict[str, Any]],
    labels_path: str,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[PRM, dict[str, Any], Processes]:
    """Build the PRM on the backbone and train it (resuming from checkpoints) as one of the
    data-parallel processes of this run (`accelerate launch`; a plain run is one process)."""
    if cfg.lm_features:
        require_policy_backbone(cfg.backbone, cfg.policy)
    procs = Processes.current()
    prm = PRM.from_backbone(cfg.backbone, prm_config(cfg), dtype=getattr(torch, cfg.dtype))
    summary = train_prm(
        prm, rows, prm_train_config(cfg), checkpoint_dir(cfg, labels_path), on_step=on_step, resume=True, procs=procs
    )
    return prm, summary, procs


def train_worker(params: str = "params.yaml", labels_path: str = "data/labels/labels.jsonl") -> None:
    """A non-main process of a data-parallel `train` stage: it trains its share and returns;
    the main process runs the Prefect flow, saves the model and logs to MLflow."""
    cfg = load_section(params, "train", TrainConfig)
    _, _, procs = train_on_this_process(cfg, read_jsonl(labels_path), labels_path)
    procs.barrier()  # matches fit_prm's: wait while rank 0 writes the model


@task(cache_policy=NO_CACHE, tags=["train"])
def fit_prm(
    cfg: TrainConfig, rows: list[dict[str, Any]], labels_path: str, out_dir: str, run_id: str | None = None
) -> dict[str, Any]:
    """Build the PRM on the backbone, train it (resuming from checkpoints), save to `out_dir`.

    Runs on the main process (rank 0); under `accelerate launch` the other ranks run
    `train_worker` alongside. Not cached by Prefect: its own checkpoints make a rerun after a
    crash cheap.
    """
    log = RunLogger(run_id) if run_id else None

    def on_step(step: int, metrics: dict[str, float]) -> None:
        if log and (step % 10 == 0 or step == 1):
            log.metrics(metrics, step=step)

    prm, summary, procs = train_on_this_process(cfg, rows, labels_path, on_step)
    prm.save_pretrained(out_dir)
    procs.barrier()  # the other ranks exit only once the model is written
    return summary
