"""Tasks of stage `label`: MC step labels for segmented solutions, one Prefect task per shard.

The work is split into `cfg.num_shards` shards (see `label_sharded`); each shard is one task,
retried `cfg.task_retries` times, whose estimates land atomically in
`checkpoints/label/<job hash>/shard-NNNN.jsonl` (an mc shard also appends every paid-for chunk
to `shard-NNNN.partial.jsonl` while it runs). Finished shards are skipped on rerun, so a killed
run redoes at most the chunk in flight, and the merged rows are byte-identical for any shard
count and to an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from prmflow import io, resume, shard
from prmflow.config import SPEED_ONLY, LabelConfig
from prmflow.io import DataError
from prmflow.label import LabelCost, answer_verifier, checkpoint, hard_label, omega_labels, stepwise_row
from prmflow.label.runner import Solution, assemble, chunk_keys, plan_prefixes, roll_out_chunk
from prmflow.label.stepwise import select_solutions
from prmflow.policy.base import Backend, SamplingConfig
from tasks import runners
from tasks.backends import cached_backend


def policy_prompt(row: dict[str, Any]) -> str:
    """The prompt the policy sampled the row from (a real problem's few-shot or chat prompt; the
    synthetic world's is the row's `prompt`): MC rollouts continue exactly that context."""
    return row.get("policy_prompt", row["prompt"])


def job_verdict(rows: list[dict[str, Any]]) -> tuple[bool, tuple[str, ...]]:
    """(real, stop strings) of a labeling job: real problems' rollouts are graded by their final
    answer only (prmflow.answers) and stop where the generation stopped. One job never mixes them."""
    real = {"problem_source" in r for r in rows}
    stops = {tuple(r.get("stop", ())) for r in rows}
    if len(real) > 1 or len(stops) > 1:
        raise ValueError("label: the segment rows mix real and synthetic problems, or prompts with different stops")
    return (real.pop() if real else False), (stops.pop() if stops else ())


def to_solutions(backend: Backend, rows: list[dict[str, Any]], answers: dict[str, str]) -> list[Solution]:
    """Segmented rows -> what the labelers need (prompt ids, step ends, prefix texts)."""
    prompt_ids: dict[str, list[int]] = {}
    out = []
    for r in rows:
        prompt = policy_prompt(r)
        if prompt not in prompt_ids:
            prompt_ids[prompt] = backend.encode(prompt)
        if r["problem_id"] not in answers:
            raise ValueError(f"segment row '{r['id']}': problem '{r['problem_id']}' is not in the problems file")
        out.append(
            Solution(
                id=r["id"],
                prompt_ids=prompt_ids[prompt],
                token_ids=r["token_ids"],
                ends=r["ends"],
                prefix_texts=[r["text"][: span[1]] for span in r["spans"]],
                answer=answers[r["problem_id"]],
                final_correct=r["final_correct"],
                finished=r["finish_reason"] == "stop",
            )
        )
    return out


# speed only: how many shards, where they run, retries, requests in flight (chunk_size is not:
# a prefix's cost is its share of its chunk's, so one work dir never mixes two chunkings)
_NOT_IN_KEY = SPEED_ONLY["label"]


def job_dir(
    cfg: LabelConfig, rows: list[dict[str, Any]], answers: dict[str, str], root: str = "checkpoints/label"
) -> Path:
    """Where the shard files of this exact job (config, policy weights, inputs) live."""
    inputs = [shard.path_fingerprint(cfg.model), rows, answers]
    return resume.job_dir(root, resume.job_key(cfg, inputs, exclude=_NOT_IN_KEY))


def _sampling(cfg: LabelConfig, stop: tuple[str, ...] = ()) -> SamplingConfig:
    return SamplingConfig(
        temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, stop=stop
    )


def _backend(cfg: LabelConfig) -> Backend:
    return cached_backend(cfg, cfg.model, cfg.batch_size)


WorkItem = tuple[str, list[int], str, str]
"""(prefix key, prefix token ids, prefix text, gold answer)"""


def _load_complete(path: Path, keys: list[str]) -> dict[str, checkpoint.Entry] | None:
    """A finished shard file's entries if it holds every key, else None."""
    if not path.is_file():
        return None
    try:
        got = checkpoint.load(path)
    except DataError:
        return None
    return got if all(k in got for k in keys) else None


@task(cache_policy=NO_CACHE, tags=["policy", "rollouts"], task_run_name="label-mc-shard-{shard_idx}")
def label_mc_shard(
    cfg: LabelConfig,
    shard_idx: int,
    chunks: list[list[WorkItem]],
    path: str,
    real: bool = False,
    stop: tuple[str, ...] = (),
) -> dict[str, int]:
    """MC estimates of one shard's chunks of prefixes, written atomically to `path` when all are done.

    Skipped if `path` already holds them. While running, every chunk is appended (fsynced) to
    `<path stem>.partial.jsonl` as soon as it is paid for, so a kill (or a retry) redoes at
    most the chunk in flight. A chunk is always rolled out whole, exactly as in an unsharded
    run, so estimates and each prefix's share of the chunk's cost are the same.
    """
    final = Path(path)
    keys = [item[0] for chunk in chunks for item in chunk]
    if _load_complete(final, keys) is not None:
        return {"shard": shard_idx, "skipped": 1, "resumed_prefixes": len(keys), "rollouts_run": 0}
    partial = final.with_name(final.stem + ".partial.jsonl")
    done = checkpoint.load(partial)
    resumed = rollouts = 0
    sampling = _sampling(cfg, stop)
    backend = None
    with tqdm(total=len(keys), desc=f"MC rollouts, shard {shard_idx}", unit="prefix") as bar:
        for chunk in chunks:
            if all(item[0] in done for item in chunk):
                resumed += len(chunk)
            else:
                backend = backend or _backend(cfg)
                new = roll_out_chunk(backend, chunk, cfg.num_rollouts, sampling, real=real)
                checkpoint.append(partial, new)
                done.update(new)
                rollouts += sum(c.rollouts for _, c in new.values())
            bar.update(len(chunk))
    checkpoint.write(final, {k: done[k] for k in keys})
    partial.unlink(missing_ok=True)
    return {"shard": shard_idx, "skipped": 0, "resumed_prefixes": resumed, "rollouts_run": rollouts}


def _omega_line(s: Solution, res: Any) -> dict[str, Any]:
    return {"id": s.id, "soft": res.soft_labels, "hard": res.hard_labels, "cost": res.cost.to_dict()}


@task(cache_policy=NO_CACHE, tags=["policy", "rollouts"], task_run_name="label-omega-shard-{shard_idx}")
def label_omega_shard(
    cfg: LabelConfig, shard_idx: int, sols: list[Solution], path: str, real: bool = False, stop: tuple[str, ...] = ()
) -> dict[str, int]:
    """OmegaPRM labels of one shard's solutions, written atomically to `path`; skipped if there.
    Each solution's binary search only ever batches its own prefixes, so results do not depend
    on the shard layout."""
    ids = [s.id for s in sols]
    if resume.load_rows(path, ids) is not None:
        return {"shard": shard_idx, "skipped": 1, "resumed_prefixes": 0, "rollouts_run": 0}
    backend, sampling = _backend(cfg), _sampling(cfg, stop)
    lines = []
    for s in tqdm(sols, desc=f"OmegaPRM binary search, shard {shard_idx}", unit="solution"):
        prefixes = [s.prompt_ids + s.token_ids[:e] for e in s.ends]
        res = omega_labels(
            backend,
            prefixes,
            s.final_correct,
            answer_verifier(s.answer, s.prefix_texts, real=real),
            cfg.num_rollouts,
            sampling,
        )
        lines.append(_omega_line(s, res))
    io.write_jsonl(path, lines)
    return {
        "shard": shard_idx,
        "skipped": 0,
        "resumed_prefixes": 0,
        "rollouts_run": sum(x["cost"]["rollouts"] for x in lines),
    }


def label_sharded(
    cfg: LabelConfig, rows: list[dict[str, Any]], answers: dict[str, str], checkpoint_root: str = "checkpoints/label"
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """TRL stepwise rows with MC (or OmegaPRM) labels, their cost, and the exact gold labels,
    computed in `cfg.num_shards` shard tasks and merged. The shards run on `cfg.task_runner`
    (tasks.runners: one after another here, or concurrently on a Ray cluster), their files under
    `cfg.shard_storage`/label if set, else `checkpoint_root`.

    mc: the prefixes to roll out are listed once for the whole job, in a fixed order, each
    once (shared EDU-tree prefixes too), and cut into chunks of `cfg.chunk_size`; each chunk
    goes to the shard of its first prefix's key (prmflow.shard). Merging gives every prefix's
    cost to the first solution that needs it, as an unsharded run does, so the rows are
    byte-identical for any shard count. omega: solutions are sharded by problem id.
    Returns (rows, run info: `resumed_prefixes` loaded from checkpoints, `rollouts_run` now,
    `shards_run`, `shards_skipped`).
    """
    rows = select_solutions(rows, cfg.max_solutions, cfg.select)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("label: segment row ids are not unique")
    wd = job_dir(cfg, rows, answers, runners.shard_root(cfg, checkpoint_root, "label"))
    paths = [shard.shard_path(wd, s) for s in range(cfg.num_shards)]
    sols = to_solutions(_backend(cfg), rows, answers)
    real, stop = job_verdict(rows)
    task_cfg = runners.for_workers(cfg, model=cfg.model)
    if cfg.method == "mc":
        todo, owner = plan_prefixes(sols, exact_last=cfg.exact_last)
        chunks = chunk_keys(list(todo), cfg.chunk_size)
        by_shard = shard.split_by_shard(range(len(chunks)), cfg.num_shards, key=lambda c: chunks[c][0])
        print(
            f"label: {len(todo)} prefixes in {len(chunks)} chunks, {cfg.num_shards} shards in {wd} "
            f"(chunks per shard {[len(x) for x in by_shard]})"
        )
        run = label_mc_shard.with_options(retries=cfg.task_retries)
        infos = runners.run_shards(
            run,
            cfg,
            "label",
            [
                {
                    "cfg": task_cfg,
                    "shard_idx": s,
                    "chunks": [[(k, *todo[k]) for k in chunks[c]] for c in cs],
                    "path": str(paths[s]),
                    "real": real,
                    "stop": stop,
                }
                for s, cs in enumerate(by_shard)
            ],
        )
        estimates: dict[str, checkpoint.Entry] = {}
        for s, cs in enumerate(by_shard):
            got = _load_complete(paths[s], [k for c in cs for k in chunks[c]])
            if got is None:
                raise RuntimeError(f"label: shard {s} at {paths[s]} is missing or incomplete after its task ran")
            estimates.update(got)
        labeled = assemble(sols, estimates, owner, exact_last=cfg.exact_last)
        results = [(lab.soft_labels, [hard_label(x) for x in lab.soft_labels], lab.cost) for lab in labeled]
    elif cfg.method == "omega":
        by_shard = shard.split_by_shard(range(len(sols)), cfg.num_shards, key=lambda i: rows[i]["problem_id"])
        run = label_omega_shard.with_options(retries=cfg.task_retries)
        infos = runners.run_shards(
            run,
            cfg,
            "label",
            [
                {
                    "cfg": task_cfg,
                    "shard_idx": s,
                    "sols": [sols[i] for i in idx],
                    "path": str(paths[s]),
                    "real": real,
                    "stop": stop,
                }
                for s, idx in enumerate(by_shard)
            ],
        )
        by_id: dict[str, dict[str, Any]] = {}
        for s, idx in enumerate(by_shard):
            lines = resume.load_rows(paths[s], [sols[i].id for i in idx])
            if lines is None:
                raise RuntimeError(f"label: shard {s} at {paths[s]} is missing or damaged after its task ran")
            by_id.update((x["id"], x) for x in lines)
        results = [(by_id[i]["soft"], by_id[i]["hard"], LabelCost(**by_id[i]["cost"])) for i in ids]
    else:
        raise ValueError(f"label.method must be 'mc' or 'omega', got '{cfg.method}'")
    out = []
    for r, (soft, hard, cost) in zip(rows, results, strict=True):
        out.append(
            stepwise_row(
                r["id"],
                r["prompt"],
                r["steps"],
                hard,
                soft,
                cost.to_dict(),
                f"{r['source']}/{cfg.method}{cfg.num_rollouts}",
                problem_id=r["problem_id"],
                gold_labels=r["gold_labels"],
                final_correct=r["final_correct"],
            )
        )
    info = {
        "resumed_prefixes": sum(i["resumed_prefixes"] for i in infos),
        "rollouts_run": sum(i["rollouts_run"] for i in infos),
        "shards_run": sum(not i["skipped"] for i in infos),
        "shards_skipped": sum(i["skipped"] for i in infos),
    }
    return out, info


@task(cache_policy=NO_CACHE, tags=["policy", "rollouts"])
def label_rows(
    cfg: LabelConfig, rows: list[dict[str, Any]], answers: dict[str, str], checkpoint_root: str = "checkpoints/label"
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`label_sharded` as one task (for callers that label inside another task, via `.fn`).

    Not cached by Prefect (DVC decides when a stage reruns); the shard files under
    `checkpoint_root` make a killed run resume where it stopped and end with the same rows.
    """
    return label_sharded(cfg, rows, answers, checkpoint_root)


def total_cost(rows: list[dict[str, Any]]) -> LabelCost:
    total = LabelCost()
    for r in rows:
        total += LabelCost(**r["cost"])
    return total
