"""Tasks of stage `problems`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow.config import ProblemsConfig
from prmflow.synth import WorldConfig, generate_problems, load_gsm8k, load_math


def reference_steps(row: dict[str, Any]) -> int:
    """Lines of a real problem's reference solution (GSM8K: one calculation per line)."""
    return sum(1 for line in row.get("solution", "").splitlines() if line.strip())


def world_config(cfg: ProblemsConfig) -> WorldConfig:
    return WorldConfig(
        min_steps=cfg.min_steps,
        max_steps=cfg.max_steps,
        start_max=cfg.start_max,
        add_max=cfg.add_max,
        mul_max=cfg.mul_max,
        div_max=cfg.div_max,
        max_value=cfg.max_value,
    )


@task(cache_policy=NO_CACHE, tags=["cpu"])
def sample_problems(cfg: ProblemsConfig) -> dict[str, Any]:
    """Split one seeded stream of problems into train / eval / pool, without overlap.

    Not cached by Prefect: DVC decides when this stage reruns, and it takes seconds.
    Eval and pool problems whose text also occurs in train are dropped (and counted), so the
    policy is never scored on problems it was trained on.
    """
    if cfg.source == "synthetic":
        total = cfg.n_train + cfg.n_eval + cfg.n_pool
        rows = [p.to_row() for p in generate_problems(total, cfg.seed, world_config(cfg))]
    elif cfg.source in ("gsm8k", "math"):
        loader = load_gsm8k if cfg.source == "gsm8k" else load_math
        if cfg.sample not in ("file_order", "shuffle"):
            raise ValueError(f"problems.sample must be 'file_order' or 'shuffle', got '{cfg.sample}'")
        rows = loader(cfg.source_path, shuffle_seed=cfg.seed if cfg.sample == "shuffle" else None)
        rows = [r for r in rows if cfg.min_steps <= reference_steps(r) <= cfg.max_steps]
    else:
        raise ValueError(f"problems.source must be 'synthetic', 'gsm8k' or 'math', got '{cfg.source}'")
    train = rows[: cfg.n_train]
    seen = {r["problem"] for r in train}
    rest = [r for r in rows[cfg.n_train :] if r["problem"] not in seen]
    dropped = len(rows) - len(train) - len(rest)
    return {
        "train": train,
        "eval": rest[: cfg.n_eval],
        "pool": rest[cfg.n_eval : cfg.n_eval + cfg.n_pool],
        "dropped_overlap": dropped,
    }
