"""Tasks of stage `label_quality`: label the same solutions with every scheme, score vs gold."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from prmflow.config import LabelQualityConfig
from prmflow.edu.partition import PartitionConfig
from prmflow.label import LabelCost, answer_verifier, hard_label, label_quality, omega_labels
from prmflow.label.runner import mc_label_solutions
from prmflow.policy import load_backend
from prmflow.policy.base import SamplingConfig
from tasks.label import to_solutions
from tasks.segment import segment_rows


def schemes(cfg: LabelQualityConfig) -> list[dict[str, Any]]:
    """(name, partition strategy, labeler, N, uses tree) for every compared scheme."""
    out = [
        {"name": f"newline_mc{n}", "strategy": "newline", "labeler": "mc", "n": n, "tree": False}
        for n in cfg.newline_rollouts
    ]
    out += [
        {
            "name": f"chunk_mc{cfg.num_rollouts}",
            "strategy": "chunk",
            "labeler": "mc",
            "n": cfg.num_rollouts,
            "tree": False,
        },
        {
            "name": f"edu_mc{cfg.num_rollouts}",
            "strategy": "fixed",
            "labeler": "mc",
            "n": cfg.num_rollouts,
            "tree": False,
        },
        {
            "name": f"edu_tree_mc{cfg.num_rollouts}",
            "strategy": "fixed",
            "labeler": "mc",
            "n": cfg.num_rollouts,
            "tree": True,
        },
        {
            "name": f"omega_newline{cfg.num_rollouts}",
            "strategy": "newline",
            "labeler": "omega",
            "n": cfg.num_rollouts,
            "tree": False,
        },
    ]
    return out


@task(cache_policy=NO_CACHE, tags=["policy", "rollouts"])
def compare_schemes(
    cfg: LabelQualityConfig, samples: list[dict[str, Any]], tree: list[dict[str, Any]], answers: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Per scheme: label quality vs gold, query cost, steps. Not cached (DVC decides reruns)."""
    backend = load_backend("transformers", cfg.model, batch_size=cfg.batch_size)
    sampling = SamplingConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    results: dict[str, dict[str, Any]] = {}
    for sch in tqdm(schemes(cfg), desc="labeling schemes"):
        rows = samples + (tree if sch["tree"] else [])
        pcfg = PartitionConfig(
            strategy=sch["strategy"],
            entropy_threshold=cfg.entropy_threshold,
            min_len=cfg.min_len,
            max_len=cfg.max_len,
            chunk_len=cfg.chunk_len,
        )
        seg, _ = segment_rows(pcfg, rows, None)
        sols = to_solutions(backend, seg, answers)
        cost = LabelCost()
        if sch["labeler"] == "mc":
            labeled = mc_label_solutions(backend, sols, sch["n"], sampling)
            pred = [[hard_label(x) for x in lab.soft_labels] for lab in labeled]
            for lab in labeled:
                cost += lab.cost
        else:
            pred = []
            for s in sols:
                res = omega_labels(
                    backend,
                    [s.prompt_ids + s.token_ids[:e] for e in s.ends],
                    s.final_correct,
                    answer_verifier(s.answer, s.prefix_texts),
                    sch["n"],
                    sampling,
                )
                pred.append(res.hard_labels)
                cost += res.cost
        gold = [r["gold_labels"] for r in seg]
        q = label_quality(pred, gold)
        n_sol = max(1, len(seg))
        results[sch["name"]] = {
            **sch,
            **q,
            **cost.to_dict(),
            "tokens_per_solution": cost.generated_tokens / n_sol,
            "rollouts_per_solution": cost.rollouts / n_sol,
            "mean_steps": sum(len(r["steps"]) for r in seg) / n_sol,
            "trajectory_tokens": sum(len(r["token_ids"]) for r in seg),
            "step_tokens": [e - s for r in seg for s, e in zip(r["starts"], r["ends"], strict=True)],
        }
    return results
