"""Tasks of stage `generate`: sample solutions with per-token entropy."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from prmflow.config import GenerateConfig
from prmflow.edu_tree import TreeConfig, grow_tree
from prmflow.policy.hf_backend import token_offsets
from prmflow.policy import load_backend
from prmflow.policy.base import SamplingConfig, derive_seed
from prmflow.policy.evaluate import grade
from prmflow.synth import format_prompt


def problem_seed(seed: int, problem_id: str) -> int:
    """A sampling seed that depends only on (seed, problem id), not on batch or shard layout."""
    return derive_seed(seed, problem_id)


def _row(p: dict[str, Any], rid: str, completion_row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    g = grade(p, completion_row["text"])
    return {
        "id": rid,
        "problem_id": p["id"],
        "prompt": format_prompt(p["problem"]),
        **completion_row,
        **extra,
        # exact ground truth from the synthetic checker (for measuring label quality)
        "first_error": g.first_error,
        "first_error_char": g.first_error_char,
        "final_correct": g.final_correct,
    }


@task(cache_policy=NO_CACHE, tags=["policy"])
def sample_solutions(cfg: GenerateConfig, problems: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """n completions per problem (ids `<problem id>/<j>`), plus EDU trees for the first
    `cfg.tree_problems` problems (branch rows `<problem id>/t<node>`; node 0 is sample 0).

    Not cached by Prefect: DVC reruns this stage only when its inputs change.
    """
    backend = load_backend(cfg.backend, cfg.model, batch_size=cfg.batch_size, show_progress=True)
    top = max(cfg.top_logprobs, cfg.tree_top_k if cfg.tree_problems else 0)
    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              seed=cfg.seed, top_logprobs=top)
    seeds = [problem_seed(cfg.seed, p["id"]) for p in problems]
    completions = backend.generate([format_prompt(p["problem"]) for p in problems], cfg.n, sampling, seeds=seeds)
    rows = []
    for p, samples in zip(problems, completions, strict=True):
        for j, c in enumerate(samples):
            row = c.to_row(cfg.decimals)
            row["top_logprobs"] = [t[: cfg.top_logprobs] for t in row["top_logprobs"]]
            rows.append(_row(p, f"{p['id']}/{j}", row, sample_idx=j))

    tree_rows = []
    backend.show_progress = False  # trees make many small calls; one bar for all of them below
    tree_cfg = TreeConfig(entropy_threshold=cfg.tree_threshold, top_k=cfg.tree_top_k,
                          max_branches=cfg.tree_max_branches, max_depth=cfg.tree_max_depth)
    for p, samples, seed in tqdm(list(zip(problems, completions, seeds))[: cfg.tree_problems], desc="EDU trees"):
        prompt_ids = backend.encode(format_prompt(p["problem"]))
        tree = grow_tree(backend, prompt_ids, samples[0], tree_cfg, sampling, seed)
        for k, node in enumerate(tree.nodes[1:], start=1):
            ids = tree.full_tokens(k)
            text, offsets = token_offsets(backend.tokenizer, ids)
            row = {"text": text, "token_ids": ids, "offsets": [list(o) for o in offsets],
                   "entropy": [round(h, cfg.decimals) for h in tree.full_entropy(k)], "top_logprobs": [],
                   "finish_reason": node.finish_reason}
            parent_id = f"{p['id']}/0" if node.parent == 0 else f"{p['id']}/t{node.parent}"
            tree_rows.append(_row(p, f"{p['id']}/t{k}", row, parent=parent_id, branch_pos=node.branch_pos,
                                  depth=node.depth, suffix_tokens=len(node.token_ids)))
    return {"samples": rows, "tree": tree_rows}
