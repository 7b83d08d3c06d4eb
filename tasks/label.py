"""Tasks of stage `label`: MC step labels for segmented solutions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from prmflow.config import LabelConfig
from prmflow.label import LabelCost, answer_verifier, hard_label, omega_labels, stepwise_row
from prmflow.label import checkpoint
from prmflow.label.runner import Solution, mc_label_solutions
from prmflow.policy import load_backend
from prmflow.policy.base import Backend, SamplingConfig


def to_solutions(backend: Backend, rows: list[dict[str, Any]], answers: dict[str, str]) -> list[Solution]:
    """Segmented rows -> what the labelers need (prompt ids, step ends, prefix texts)."""
    prompt_ids: dict[str, list[int]] = {}
    out = []
    for r in rows:
        if r["prompt"] not in prompt_ids:
            prompt_ids[r["prompt"]] = backend.encode(r["prompt"])
        if r["problem_id"] not in answers:
            raise ValueError(f"segment row '{r['id']}': problem '{r['problem_id']}' is not in the problems file")
        out.append(Solution(
            id=r["id"], prompt_ids=prompt_ids[r["prompt"]], token_ids=r["token_ids"], ends=r["ends"],
            prefix_texts=[r["text"][: span[1]] for span in r["spans"]], answer=answers[r["problem_id"]],
            final_correct=r["final_correct"], finished=r["finish_reason"] == "stop",
        ))
    return out


def checkpoint_path(cfg: LabelConfig, rows: list[dict[str, Any]], answers: dict[str, str],
                    root: str = "checkpoints/label") -> Path:
    """Where paid-for estimates of this exact job (config + inputs) accumulate."""
    h = hashlib.sha256(json.dumps([asdict(cfg), [r["id"] for r in rows], [r["token_ids"] for r in rows],
                                   [r["ends"] for r in rows], answers], sort_keys=True).encode())
    return Path(root) / f"{h.hexdigest()[:16]}.jsonl"


@task(cache_policy=NO_CACHE, tags=["policy", "rollouts"])
def label_rows(cfg: LabelConfig, rows: list[dict[str, Any]], answers: dict[str, str],
               checkpoint_root: str = "checkpoints/label") -> tuple[list[dict[str, Any]], dict[str, int]]:
    """TRL stepwise rows with MC (or OmegaPRM) labels, their cost, and the exact gold labels.

    Not cached by Prefect (DVC decides when this stage reruns). Instead, every chunk of MC
    estimates is appended to a checkpoint as soon as it is paid for, so a killed run resumes
    where it stopped and ends with the same artifact as an uninterrupted one.
    Returns (rows, run info: `resumed_prefixes`, `rollouts_run` = rollouts actually sampled now).
    """
    backend = load_backend(cfg.backend, cfg.model, batch_size=cfg.batch_size)
    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              seed=cfg.seed)
    if cfg.max_solutions:
        rows = rows[: cfg.max_solutions]
    resumed = {"resumed_prefixes": 0, "resumed_rollouts": 0}
    sols = to_solutions(backend, rows, answers)
    if cfg.method == "mc":
        ckpt = checkpoint_path(cfg, rows, answers, checkpoint_root)
        done = checkpoint.load(ckpt)
        resumed = {"resumed_prefixes": len(done), "resumed_rollouts": sum(c.rollouts for _, c in done.values())}
        total = sum(len(s.ends) for s in sols)
        with tqdm(total=total, desc="MC rollouts (prefixes, upper bound)", unit="prefix") as bar:
            if done:
                bar.write(f"resuming: {len(done)} prefix estimates already paid for in {ckpt}")
            labeled = mc_label_solutions(backend, sols, cfg.num_rollouts, sampling, chunk_size=cfg.chunk_size,
                                         exact_last=cfg.exact_last, done=done,
                                         on_chunk=lambda new: checkpoint.append(ckpt, new), progress=bar.update)
        results = [(lab.soft_labels, [hard_label(x) for x in lab.soft_labels], lab.cost) for lab in labeled]
    elif cfg.method == "omega":
        results = []
        for s in tqdm(sols, desc="OmegaPRM binary search", unit="solution"):
            prefixes = [s.prompt_ids + s.token_ids[:e] for e in s.ends]
            res = omega_labels(backend, prefixes, s.final_correct, answer_verifier(s.answer, s.prefix_texts),
                               cfg.num_rollouts, sampling)
            results.append((res.soft_labels, res.hard_labels, res.cost))
    else:
        raise ValueError(f"label.method must be 'mc' or 'omega', got '{cfg.method}'")
    out = []
    for r, (soft, hard, cost) in zip(rows, results, strict=True):
        out.append(stepwise_row(r["id"], r["prompt"], r["steps"], hard, soft, cost.to_dict(),
                                f"{r['source']}/{cfg.method}{cfg.num_rollouts}", problem_id=r["problem_id"],
                                gold_labels=r["gold_labels"], final_correct=r["final_correct"]))
    total = sum(r["cost"]["rollouts"] for r in out)
    return out, {"resumed_prefixes": resumed["resumed_prefixes"], "rollouts_run": total - resumed["resumed_rollouts"]}


def total_cost(rows: list[dict[str, Any]]) -> LabelCost:
    total = LabelCost()
    for r in rows:
        total += LabelCost(**r["cost"])
    return total
