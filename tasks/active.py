"""Tasks of stage `active`: one ActPRM run (strategy x seed) and the labeler it pays."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow import tracking
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
from prmflow.active import report as rep
from prmflow.active.loop import LOOP_VERSION, config_key
from prmflow.config import SPEED_ONLY, ActiveConfig
from prmflow.options import ActiveLoopOptions, HeadOptions, options_of
from prmflow.policy.base import SamplingConfig
from prmflow.prm import PRM, PRMConfig
from prmflow.resume import job_dir, job_key
from prmflow.tracking import RunLogger
from tasks.runners import current_node

# these change neither which labels are bought nor the arithmetic of a run: the speed-only knobs,
# the ones the run's own path names (strategy, seed) and the batch sizes (a resumed run may change them)
_NOT_IN_RUN_KEY = SPEED_ONLY["active"] | {
    "strategies",
    "seeds",
    "match_fractions",
    "judge_max_retries",
    "judge_timeout",
    "judge_backoff",
    "score_batch_size",
    "micro_batch_size",
    "mc_batch_size",
}


def build_labeler(cfg: ActiveConfig, name: str | None = None) -> Labeler:
    """The labeler called `name` (default `cfg.labeler`), configured from cfg."""
    name = name or cfg.labeler
    if name == "oracle":
        return OracleLabeler()
    if name == "mc":
        from prmflow.policy import load_backend

        backend = load_backend("transformers", cfg.mc_model, batch_size=cfg.mc_batch_size)
        sampling = SamplingConfig(
            temperature=cfg.mc_temperature, max_new_tokens=cfg.mc_max_new_tokens, seed=cfg.mc_seed
        )
        return MCLabeler(backend, cfg.mc_num_rollouts, sampling)
    if name == "judge":
        if not cfg.judge_model:
            raise ValueError("active.judge_model is empty: name the model served at active.judge_base_url")
        return JudgeLabeler(
            cfg.judge_base_url,
            cfg.judge_model,
            api_key_env=cfg.judge_api_key_env,
            max_retries=cfg.judge_max_retries,
            timeout=cfg.judge_timeout,
            max_tokens=cfg.judge_max_tokens,
            backoff=cfg.judge_backoff,
        )
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


def run_dir(
    cfg: ActiveConfig, strategy: str, seed: int, inputs: Sequence[str | Path], root: str = "checkpoints/active"
) -> Path:
    """Loop state (labels bought, checkpoints) lives outside the DVC output, keyed by the loop's
    version, the config fields that matter and the bytes of the inputs (data files, backbone dir), so a killed run
    resumes without paying twice and a changed one starts fresh."""
    # a hub-id backbone (no such path) is keyed by its name, which is in cfg
    files = [Path(p) for p in inputs if Path(p).exists()]
    key = job_key({"loop_version": LOOP_VERSION, **config_key(cfg)}, files, exclude=_NOT_IN_RUN_KEY)
    return job_dir(root, key) / f"{strategy}-seed{seed}"


def _judge_unavailable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retries a run only when the judge endpoint stayed down (not on bugs or bad config)."""
    return isinstance(getattr(state, "data", None), JudgeUnavailable)


def _numbers(record: Mapping[str, Any]) -> dict[str, float]:
    out = {f"active/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({f"active/cost/{k}": v for k, v in record.get("cost", {}).items() if v})
    return out


@task(cache_policy=NO_CACHE, tags=["prm", "active"], retry_condition_fn=_judge_unavailable, retry_delay_seconds=30)
def run_strategy(
    cfg: ActiveConfig,
    strategy: str,
    seed: int,
    pool: list[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    state_dir: str,
    run_id: str | None = None,
    counts: list[int] | None = None,
    feature_cache: FeatureCache | None = None,
) -> dict[str, Any]:
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
        out = run_active_learning(
            prm,
            pool,
            problems,
            labeler,
            loop_config(cfg, strategy, seed),
            state_dir,
            eval_rows=eval_rows,
            counts=counts,
            on_round=on_round,
            feature_cache=feature_cache,
            progress=True,
        )
    finally:
        if hasattr(labeler, "close"):
            labeler.close()
    if (
        log is not None
        and out["history"]
        and out["history"][0]["round"] == 0
        and out["history"][0].get("f1") is not None
    ):
        log.metrics({"active/f1": out["history"][0]["f1"], "active/f1_at_labels": out["history"][0]["f1"]}, step=0)
    return out


@task(cache_policy=NO_CACHE, tags=["prm", "active"])
def run_seed(
    cfg: ActiveConfig,
    strategies: list[str],
    seed: int,
    pool: list[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    state_dirs: dict[str, str],
    parent_run_id: str,
    tracking_uri: str,
    feature_cache: FeatureCache | None = None,
) -> dict[str, Any]:
    """One seed's runs, `strategies` in order (random spends what active spent per round), each an
    MLflow run nested under `parent_run_id` in the store at `tracking_uri`; the stage's coarse task.

    Returns `runs` (run_strategy's dict by strategy), `seconds` by strategy, `backbone_passes`
    (solutions this task featurized; None without cache_features) and `node` (tasks.runners.current_node).
    `feature_cache`: the stage's shared cache under thread; under ray (None) the task makes its own,
    which gives the same numbers, and torch uses `num_cpus` threads, as the driver should for the
    same bytes as thread (tests/test_ray.py runs both with one).
    """
    on_ray = cfg.task_runner == "ray"
    features = feature_cache if feature_cache is not None or not cfg.cache_features else FeatureCache()
    passes_before = features.backbone_passes if features is not None else 0
    threads = torch.get_num_threads()
    if on_ray:
        torch.set_num_threads(max(1, int(cfg.num_cpus)))
    runs: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    try:
        with tracking.using(tracking_uri):
            for strategy in strategies:
                counts = runs["active"]["counts"] if strategy == "random" and "active" in runs else None
                with tracking.stage_run(f"active/{strategy}/seed{seed}", parent_run_id=parent_run_id) as run:
                    run.tags(
                        {
                            "strategy": strategy,
                            "seed": str(seed),
                            "labeler": cfg.labeler,
                            **({"ray_node": current_node()} if on_ray else {}),
                        }
                    )
                    run.params(asdict(loop_config(cfg, strategy, seed)), prefix="loop.")
                    t0 = time.perf_counter()
                    res = run_strategy.with_options(retries=cfg.task_retries)(
                        cfg,
                        strategy,
                        seed,
                        pool,
                        problems,
                        eval_rows,
                        state_dirs[strategy],
                        run.run_id,
                        counts,
                        features,
                    )
                    seconds[strategy] = time.perf_counter() - t0
                    run.metrics(rep.run_metrics(res, seconds[strategy]))
                runs[strategy] = res
                print(
                    f"active: {strategy} seed {seed}: F1 {res['final_f1']} with {res['labels_spent']} labels "
                    f"({seconds[strategy]:.0f} s)"
                )
    finally:
        torch.set_num_threads(threads)
    return {
        "runs": runs,
        "seconds": seconds,
        "node": current_node(),
        "backbone_passes": features.backbone_passes - passes_before if features is not None else None,
    }
