"""Tasks of stage `generate`: sample solutions with per-token entropy, one Prefect task per shard.

Pool problems are split into `cfg.num_shards` shards by a stable hash of ids (prmflow.shard).
Each shard is one task (retried `cfg.task_retries` times) that writes its problems' samples and
EDU-tree branches atomically to `checkpoints/generate/<job hash>/shard-NNNN.jsonl`, one line per
problem; a shard whose file is already there (and holds exactly its problems) is skipped, so a
killed run redoes only the shards that were in flight. `sample_solutions` merges the shard files
back in input order. The merged rows do not depend on the shard count, bit for bit: a sample's
random stream depends only on (seed, problem id), and the prompt batches are planned once for
the whole job (`plan_batches`, as one backend call would cut them) and shards take whole
batches (by a hash of each batch's first problem id), so no float depends on the shard layout
(a row's entropies do depend, in the last bits, on which prompts share its batch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from prmflow import io, resume, shard
from prmflow.answers import is_real
from prmflow.config import SPEED_ONLY, GenerateConfig
from prmflow.edu.tree import TreeConfig, grow_tree
from prmflow.policy.base import Backend, SamplingConfig, derive_seed
from prmflow.policy.evaluate import grade
from prmflow.policy.hf_backend import token_offsets
from prmflow.prompts import Prompt, PromptConfig, build_prompt
from prmflow.synth import format_prompt
from tasks import runners
from tasks.backends import cached_backend


def problem_seed(seed: int, problem_id: str) -> int:
    """A sampling seed that depends only on (seed, problem id), not on batch or shard layout."""
    return derive_seed(seed, problem_id)


def _row(p: dict[str, Any], rid: str, completion_row: dict[str, Any], prompt: Prompt, **extra: Any) -> dict[str, Any]:
    """One generation row. `prompt` is what the PRM sees (the problem in the synthetic format);
    a real problem's row also keeps the policy's own prompt and stop strings, which MC rollouts
    continue from (`policy_prompt`, `stop`), and its `problem_source`."""
    g = grade(p, completion_row["text"])
    real = (
        {"problem_source": p["source"], "policy_prompt": prompt.text, "stop": list(prompt.stop)} if is_real(p) else {}
    )
    return {
        "id": rid,
        "problem_id": p["id"],
        "prompt": format_prompt(p["problem"]),
        **real,
        **completion_row,
        **extra,
        # exact ground truth from the synthetic checker (for measuring label quality); real
        # problems have none (None), only the verified final answer
        "first_error": g.first_error,
        "first_error_char": g.first_error_char,
        "final_correct": g.final_correct,
    }


def prompts_for(
    backend: Backend, problems: list[dict[str, Any]], prompt_cfg: PromptConfig, examples: list[dict[str, Any]]
) -> dict[str, Prompt]:
    """The policy prompt of every problem, by id (prmflow.prompts; `synthetic` = format_prompt)."""
    tokenizer = getattr(backend, "tokenizer", None)
    return {p["id"]: build_prompt(p["problem"], prompt_cfg, tokenizer, examples) for p in problems}


def common_stop(prompts: Iterable[Prompt]) -> tuple[str, ...]:
    """The stop strings every prompt shares (one sampling config serves a whole job)."""
    stops = {pr.stop for pr in prompts}
    if len(stops) > 1:
        raise ValueError(f"prompts of one job have different stop strings: {sorted(stops)}")
    return stops.pop() if stops else ()


def _backend(cfg: GenerateConfig) -> Backend:
    return cached_backend(cfg, cfg.model, cfg.batch_size)


# speed only: how many shards, where they run, retries, requests in flight (same bytes for any)
_NOT_IN_KEY = SPEED_ONLY["generate"]


def job_dir(
    cfg: GenerateConfig,
    problems: list[dict[str, Any]],
    root: str = "checkpoints/generate",
    prompt_cfg: PromptConfig = PromptConfig(),
    examples: list[dict[str, Any]] | None = None,
) -> Path:
    """Where the shard files of this exact job (config, policy weights, problems, prompts) live.
    The default synthetic prompt adds nothing to the key."""
    inputs: list[Any] = [shard.path_fingerprint(cfg.model), problems]
    if prompt_cfg != PromptConfig():
        inputs += [asdict(prompt_cfg), [e["id"] for e in (examples or [])[: prompt_cfg.few_shot]]]
    return resume.job_dir(root, resume.job_key(cfg, inputs, exclude=_NOT_IN_KEY))


def sample_problems(
    backend: Backend,
    cfg: GenerateConfig,
    batches: list[list[dict[str, Any]]],
    tree_ids: set[str],
    prompt_cfg: PromptConfig = PromptConfig(),
    examples: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per problem (batch order): `{"problem_id", "samples": [n rows], "tree": [branch rows]}`.

    Each batch is one backend call, so it is batched exactly as given. Sample rows have ids
    `<problem id>/<j>`; problems in `tree_ids` also get an EDU tree grown from sample 0
    (branch rows `<problem id>/t<node>`; node 0 is sample 0).
    """
    top = max(cfg.top_logprobs, cfg.tree_top_k if cfg.tree_problems else 0)
    problems = [p for b in batches for p in b]
    prompts = prompts_for(backend, problems, prompt_cfg, examples or [])
    sampling = SamplingConfig(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        top_logprobs=top,
        stop=common_stop(prompts.values()),
    )
    seeds = [problem_seed(cfg.seed, p["id"]) for p in problems]
    backend.show_progress = False  # type: ignore[attr-defined]
    completions = []
    for b in tqdm(batches, desc="generate", unit="batch"):
        completions += backend.generate(
            [prompts[p["id"]].text for p in b], cfg.n, sampling, seeds=[problem_seed(cfg.seed, p["id"]) for p in b]
        )
    out = []
    for p, samples in zip(problems, completions, strict=True):
        rows = []
        for j, c in enumerate(samples):
            row = c.to_row(cfg.decimals)
            row["top_logprobs"] = [t[: cfg.top_logprobs] for t in row["top_logprobs"]]
            rows.append(_row(p, f"{p['id']}/{j}", row, prompts[p["id"]], sample_idx=j))
        out.append({"problem_id": p["id"], "samples": rows, "tree": []})

    tree_cfg = TreeConfig(
        entropy_threshold=cfg.tree_threshold,
        top_k=cfg.tree_top_k,
        max_branches=cfg.tree_max_branches,
        max_depth=cfg.tree_max_depth,
    )
    todo = [
        (p, samples, seed, rec)
        for p, samples, seed, rec in zip(problems, completions, seeds, out)
        if p["id"] in tree_ids
    ]
    for p, samples, seed, rec in tqdm(todo, desc="EDU trees", disable=not todo):
        prompt_ids = backend.encode(prompts[p["id"]].text)
        tree = grow_tree(backend, prompt_ids, samples[0], tree_cfg, sampling, seed)
        for k, node in enumerate(tree.nodes[1:], start=1):
            ids = tree.full_tokens(k)
            text, offsets = token_offsets(backend.tokenizer, ids)
            row = {
                "text": text,
                "token_ids": ids,
                "offsets": [list(o) for o in offsets],
                "entropy": [round(h, cfg.decimals) for h in tree.full_entropy(k)],
                "top_logprobs": [],
                "finish_reason": node.finish_reason,
            }
            parent_id = f"{p['id']}/0" if node.parent == 0 else f"{p['id']}/t{node.parent}"
            rec["tree"].append(
                _row(
                    p,
                    f"{p['id']}/t{k}",
                    row,
                    prompts[p["id"]],
                    parent=parent_id,
                    branch_pos=node.branch_pos,
                    depth=node.depth,
                    suffix_tokens=len(node.token_ids),
                )
            )
    return out


def plan_batches(
    cfg: GenerateConfig,
    problems: list[dict[str, Any]],
    wd: Path,
    prompt_cfg: PromptConfig = PromptConfig(),
    examples: list[dict[str, Any]] | None = None,
) -> list[list[dict[str, Any]]]:
    """The prompt batches of the whole job, exactly as the backend would cut them for one call
    over all problems (by prompt length, `batch_size // n` prompts each). Shards take whole
    batches, so every batch, and thus every float, is the same for any shard count. The plan
    is saved next to the shards, so a resumed run needs no tokenizer to find what is done."""
    plan_path = wd / "batches.json"
    ids = [p["id"] for p in problems]
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        if sorted(i for b in plan for i in b) == sorted(ids):
            by_id = {p["id"]: p for p in problems}
            return [[by_id[i] for i in b] for b in plan]
    backend = _backend(cfg)
    prompts = prompts_for(backend, problems, prompt_cfg, examples or [])
    lens = [len(backend.encode(prompts[p["id"]].text)) for p in problems]
    order = sorted(range(len(problems)), key=lambda i: (lens[i], i))
    per_batch = max(1, cfg.batch_size // cfg.n) if cfg.batch_size >= cfg.n else 1
    batches = [[problems[i] for i in order[k : k + per_batch]] for k in range(0, len(order), per_batch)]
    io.write_json(plan_path, [[p["id"] for p in b] for b in batches])
    return batches


@task(cache_policy=NO_CACHE, tags=["policy"], task_run_name="generate-shard-{shard_idx}")
def generate_shard(
    cfg: GenerateConfig,
    shard_idx: int,
    batches: list[list[dict[str, Any]]],
    tree_ids: list[str],
    path: str,
    prompt_cfg: PromptConfig = PromptConfig(),
    examples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Sample one shard's problems and write them atomically to `path`; skip if already there.

    Not cached by Prefect: the shard file is this task's persisted result (DVC decides when the
    stage reruns, the work dir's job key when a shard can be reused).
    """
    ids = [p["id"] for b in batches for p in b]
    where = {"shard": shard_idx, "problems": len(ids), "node": runners.current_node()}
    if resume.load_rows(path, ids, "problem_id") is not None:
        return {**where, "skipped": True}
    recs = sample_problems(_backend(cfg), cfg, batches, set(tree_ids), prompt_cfg, examples) if ids else []
    io.write_jsonl(path, recs)
    return {**where, "skipped": False}


def sample_solutions(
    cfg: GenerateConfig,
    problems: list[dict[str, Any]],
    work_root: str = "checkpoints/generate",
    prompt_cfg: PromptConfig = PromptConfig(),
    examples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """n completions per problem plus EDU trees for the first `cfg.tree_problems` problems,
    computed shard by shard and merged in input order. The shards run on `cfg.task_runner`
    (tasks.runners): one after another in this process (one model load), or concurrently on a
    Ray cluster (one model load per worker process), with their files under
    `cfg.shard_storage`/generate if set, else `work_root`.

    Returns `samples`, `tree` (rows as in the artifacts), `info` (`shards_run`, `shards_skipped`)
    and `shards` (per shard: `skipped`, `problems` and the Ray `node` that ran it, or "local").
    """
    ids = [p["id"] for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("generate: problem ids are not unique")
    wd = job_dir(cfg, problems, runners.shard_root(cfg, work_root, "generate"), prompt_cfg, examples)
    paths = [shard.shard_path(wd, s) for s in range(cfg.num_shards)]
    tree_ids = {p["id"] for p in problems[: cfg.tree_problems]}
    batches = plan_batches(cfg, problems, wd, prompt_cfg, examples)
    by_shard = shard.split_by_shard(batches, cfg.num_shards, key=lambda b: b[0]["id"])
    shard_ids = [[p["id"] for b in bs for p in b] for bs in by_shard]
    print(
        f"generate: {len(batches)} batches, {cfg.num_shards} shards in {wd} "
        f"(problems per shard {[len(x) for x in shard_ids]})"
    )
    run = generate_shard.with_options(retries=cfg.task_retries)
    task_cfg = runners.for_workers(cfg, model=cfg.model)
    infos = runners.run_shards(
        run,
        cfg,
        "generate",
        [
            {
                "cfg": task_cfg,
                "shard_idx": s,
                "batches": bs,
                "tree_ids": sorted(tree_ids & set(shard_ids[s])),
                "path": str(paths[s]),
                "prompt_cfg": prompt_cfg,
                "examples": examples,
            }
            for s, bs in enumerate(by_shard)
        ],
    )
    by_id: dict[str, dict[str, Any]] = {}
    for s in range(cfg.num_shards):
        recs = resume.load_rows(paths[s], shard_ids[s], "problem_id")
        if recs is None:
            raise RuntimeError(f"generate: shard {s} at {paths[s]} is missing or damaged after its task ran")
        by_id.update((r["problem_id"], r) for r in recs)
    rows = [r for p in problems for r in by_id[p["id"]]["samples"]]
    tree_rows = [r for p in problems[: cfg.tree_problems] for r in by_id[p["id"]]["tree"]]
    info = {"shards_run": sum(not i["skipped"] for i in infos), "shards_skipped": sum(i["skipped"] for i in infos)}
    return {"samples": rows, "tree": tree_rows, "info": info, "shards": infos}
