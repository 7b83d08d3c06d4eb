"""Tasks of stage `evaluate`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow.config import EvaluateConfig
from prmflow.evaluate.baselines import entropy_step_scores
from prmflow.evaluate.scoring import score_rows
from prmflow.policy import load_backend
from prmflow.policy.base import Completion, SamplingConfig
from prmflow.prm import PRM
from prmflow.synth import extract_answer, format_prompt, step_spans
from tasks.generate import problem_seed


@task(cache_policy=NO_CACHE, tags=["policy"])
def sample(cfg: EvaluateConfig, problems: list[dict[str, Any]], n: int, salt: str) -> list[list[Completion]]:
    """n policy solutions per problem (seeded per problem id and `salt`). Not cached (DVC decides)."""
    backend = load_backend("transformers", cfg.policy, batch_size=cfg.batch_size, show_progress=True)
    sampling = SamplingConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    seeds = [problem_seed(cfg.seed, f"{salt}:{p['id']}") for p in problems]
    return backend.generate([format_prompt(p["problem"]) for p in problems], n, sampling, seeds=seeds)


def entropy_scores(rows: list[dict[str, Any]], completions: dict[str, Completion]) -> dict[str, list[float]]:
    """The policy's own uncertainty as a step score: exp(-max token entropy) per line."""
    out = {}
    for r in rows:
        c = completions[r["id"]]
        spans = step_spans(c.text)
        if len(spans) != len(r["steps"]):
            raise ValueError(f"row {r['id']}: {len(spans)} line spans but {len(r['steps'])} steps")
        out[r["id"]] = entropy_step_scores(c.entropy, c.offsets, spans)
    return out


@task(cache_policy=NO_CACHE, tags=["prm"])
def prm_scores(cfg: EvaluateConfig, rows: list[dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """PRM step scores for ProcessBench rows (see prmflow.evaluate.scoring)."""
    return score_rows(PRM.from_pretrained(cfg.prm), rows, batch_size=cfg.score_batch_size)


@task(cache_policy=NO_CACHE, tags=["prm"])
def bon_candidates(cfg: EvaluateConfig, problems: list[dict[str, Any]],
                   completions: list[list[Completion]]) -> list[dict[str, Any]]:
    """Best-of-N inputs: every candidate's final answer and PRM step scores (lines as steps)."""
    from prmflow.synth import split_steps

    prm = PRM.from_pretrained(cfg.prm)
    flat = [(i, c) for i, cs in enumerate(completions) for c in cs]
    rows = [{"id": f"{i}/{k}", "problem": problems[i]["problem"], "steps": split_steps(c.text) or [""]}
            for k, (i, c) in enumerate(flat)]
    scores, _ = score_rows(prm, rows, batch_size=cfg.score_batch_size)
    out = [{"answer": p["answer"], "candidates": []} for p in problems]
    for (i, c), r in zip(flat, rows, strict=True):
        out[i]["candidates"].append({"answer": extract_answer(c.text), "step_scores": scores[r["id"]],
                                     "tokens": len(c.token_ids)})
    return out
