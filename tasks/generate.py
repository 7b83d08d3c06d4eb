"""Tasks of stage `generate`: sample solutions with per-token entropy."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow.config import GenerateConfig
from prmflow.policy import load_backend
from prmflow.policy.base import SamplingConfig
from prmflow.policy.evaluate import grade
from prmflow.synth import format_prompt


def problem_seed(seed: int, problem_id: str) -> int:
    """A sampling seed that depends only on (seed, problem id), not on batch or shard layout."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:7], "big")


@task(cache_policy=NO_CACHE, tags=["policy"])
def sample_solutions(cfg: GenerateConfig, problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """n completions per problem, one output row per completion (ids `<problem id>/<j>`).

    Not cached by Prefect: DVC reruns this stage only when its inputs change.
    """
    backend = load_backend(cfg.backend, cfg.model, batch_size=cfg.batch_size, show_progress=True)
    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              seed=cfg.seed, top_logprobs=cfg.top_logprobs)
    seeds = [problem_seed(cfg.seed, p["id"]) for p in problems]
    completions = backend.generate([format_prompt(p["problem"]) for p in problems], cfg.n, sampling, seeds=seeds)
    rows = []
    for p, samples in zip(problems, completions, strict=True):
        for j, c in enumerate(samples):
            g = grade(p, c.text)
            rows.append({
                "id": f"{p['id']}/{j}",
                "problem_id": p["id"],
                "sample_idx": j,
                "prompt": format_prompt(p["problem"]),
                **c.to_row(cfg.decimals),
                # exact ground truth from the synthetic checker (for measuring label quality)
                "first_error": g.first_error,
                "final_correct": g.final_correct,
            })
    return rows
