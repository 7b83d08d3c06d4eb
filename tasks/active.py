"""Tasks of stage `active`: one ActPRM run (strategy x seed) and the labeler it pays."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow.active import (
    ConsensusLabeler,
    FeatureCache,
    JudgeLabeler,
    JudgeUnavailable,
    Labeler,
    LoopConfig,
    MCLabeler,
    OracleLabeler,
    run_active_learning,
)
from prmflow.active.loop import LOOP_VERSION, config_key
from prmflow.config import RUNNER_FIELDS, ActiveConfig
from prmflow.options import ActiveLoopOptions, HeadOptions, options_of
from prmflow.policy.base import SamplingConfig
from prmflow.prm import PRM, PRMConfig
from prmflow.tracking import RunLogger

# these change neither which labels are bought nor the arithmetic of a run
_NOT_IN_RUN_KEY = ("strategies", "seeds", "match_fractions", "task_retries", "judge_max_retries", "judge_timeout",
                   "judge_backoff", "checkpoint_every", "score_batch_size", "micro_batch_size", "mc_batch_size",
                   *RUNNER_FIELDS)


def build_labeler(cfg: ActiveConfig, name: str | None = None) -> Labeler:
    """The labeler called `name` (default `cfg.labeler`), configured from cfg."""
    name = name or cfg.labeler
    if name == "oracle":
        return OracleLabeler()
    if name == "mc":
        from prmflow.policy import load_backend

        backend = load_backend("transformers", cfg.mc_model, batch_size=cfg.mc_batch_size)
        sampling = SamplingConfig(temperature=cfg.mc_temperature, max_new_tokens=cfg.mc_max_new_tokens, seed=cfg.mc_seed)
        return MCLabeler(backend, cfg.mc_num_rollouts, sampling)
    if name == "judge":
        if not cfg.judge_model:
            raise ValueError("active.judge_model is empty: name the model served at active.judge_base_url")
        return JudgeLabeler(cfg.judge_base_url, cfg.judge_model, api_key_env=cfg.judge_api_key_env,
                            max_retries=cfg.judge_max_retries, timeout=cfg.judge_timeout,
                            max_tokens=cfg.judge_max_tokens, backoff=cfg.judge_backoff)
    if name == "consensus":
        if len(cfg.consensus) != 2 or "consensus" in cfg.consensus:
            raise ValueError(f"active.consensus must name two labelers other than consensus, got {cfg.consensus}")
        return ConsensusLabeler(build_labeler(cfg, cfg.consensus[0]), build_labeler(cfg, cfg.consensus[1]))
    raise ValueError(f"active.labeler must be oracle, mc, judge or consensus, got {name!r}")


def build_prm(cfg: ActiveConfig, seed: int) -> PRM:
    """A fresh ensemble PRM on cfg.backbone with the heads seeded by `seed`, backbone frozen if configured."""
    prm = PRM.from_backbone(cfg.backbone, PRMConfig(**options_of(cfg, HeadOptions), seed=seed))
    if cfg.freeze_backbone:
        prm.backbone.requires_grad_(False)
    return prm


def loop_config(cfg: ActiveConfig, strategy: str, seed: int) -> LoopConfig:
    """The loop of run (strategy, seed)."""
    return LoopConfig(**options_of(cfg, ActiveLoopOptions), strategy=strategy, seed=seed)


def run_dir(cfg: ActiveConfig, strategy: str, seed: int, inputs: Sequence[str | Path],
            root: str = "checkpoints/active") -> Path:
    """Loop state (labels bought, checkpoints) lives outside the DVC output, keyed by the loop's
    version, the config fields that matter and the bytes of the inputs (data files, backbone dir), so a killed run
    resumes without paying twice and a changed one starts fresh."""
    key = {k: v for k, v in config_key(cfg).items() if k not in _NOT_IN_RUN_KEY}
    h = hashlib.sha256(json.dumps({"loop_version": LOOP_VERSION, **key}, sort_keys=True).encode())
    for p in map(Path, inputs):
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return Path(root) / h.hexdigest()[:16] / f"{strategy}-seed{seed}"


def _judge_unavailable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retries a run only when the judge endpoint stayed down (not on bugs or bad config)."""
    return isinstance(getattr(state, "data", None), JudgeUnavailable)


def _numbers(record: Mapping[str, Any]) -> dict[str, float]:
    out = {f"active/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({f"active/cost/{k}": v for k, v in record.get("cost", {}).items() if v})
    return out


@task(cache_policy=NO_CACHE, tags=["prm", "active"], retry_condition_fn=_judge_unavailable, retry_delay_seconds=30)
def run_strategy(cfg: ActiveConfig, strategy: str, seed: int, pool: list[dict[str, Any]],
                 problems: dict[str, dict[str, Any]], eval_rows: list[dict[str, Any]], state_dir: str,
                 run_id: str | None = None, counts: list[int] | None = None,
                 feature_cache: FeatureCache | None = None) -> dict[str, Any]:
    """One strategy x seed from a fresh ensemble PRM on the backbone; per-round metrics go to MLflow run `run_id`.

    `feature_cache` (with `cfg.cache_features`) is shared by the runs of a stage, so each
    solution passes through the frozen backbone once per stage, not once per run.

    Not cached by Prefect: the loop's own saved labels and checkpoints in `state_dir` make a
    rerun cheap, and a retry (when the judge stayed unavailable) pays no label twice.
    """
    prm = build_prm(cfg, seed)
    labeler = build_labeler(cfg)
    log = RunLogger(run_id) if run_id else None

    def on_round(t: int, record: dict[str, Any]) -> None:
        if log is None:
            return
        log.metrics(_numbers(record), step=t)
        if record.get("f1") is not None:  # F1 against labels spent, for MLflow's chart
            log.metrics({"active/f1_at_labels": record["f1"]}, step=record["labels_spent"])

    try:
        out = run_active_learning(prm, pool, problems, labeler, loop_config(cfg, strategy, seed), state_dir,
                                  eval_rows=eval_rows, counts=counts, on_round=on_round,
                                  feature_cache=feature_cache, progress=True)
    finally:
        if hasattr(labeler, "close"):
            labeler.close()
    if log is not None and out["history"] and out["history"][0]["round"] == 0 and out["history"][0].get("f1") is not None:
        log.metrics({"active/f1": out["history"][0]["f1"], "active/f1_at_labels": out["history"][0]["f1"]}, step=0)
    return out
