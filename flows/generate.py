"""Stage `generate`: sample n solutions per pool problem, recording every token's entropy.

    python -m flows.generate [--params params.yaml]

Outputs data/generations/generations.jsonl, one row per completion: `id`, `problem_id`,
`sample_idx`, `prompt`, `text`, `token_ids`, `offsets`, `entropy` (nats, eq. 1 of
prmflow.edu.entropy), `top_logprobs`, `finish_reason`, plus the exact checker's `first_error` and
`final_correct`. EDU trees (prmflow.edu.tree) grown from sample 0 of the first
`generate.tree_problems` problems go to data/generations/tree.jsonl, one row per branch, same
fields plus `parent`, `branch_pos`, `depth`, `suffix_tokens`. Summary in reports/generate.json, entropy histogram in reports/generate/.

Problems are sampled in `generate.num_shards` shards (one retried Prefect task each, saved
under checkpoints/generate/), so a killed run resumes with only the unfinished shards; the
artifacts are byte-identical for any shard count (tasks.generate).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.config import GenerateConfig, load_section
from prmflow.prompts import PromptConfig, read_examples
from prmflow.summaries import generate_stats, is_real, solve_rate_problem, token_entropies
from tasks.generate import sample_solutions


@flow(name="generate", log_prints=True)
def generate(
    params: str | list[str] = "params.yaml",
    problems_path: str = "data/problems/pool.jsonl",
    out_path: str = "data/generations/generations.jsonl",
    reports_dir: str = "reports",
    work_root: str = "checkpoints/generate",
    fewshot_path: str = "data/problems/train.jsonl",
) -> dict:
    cfg = load_section(params, "generate", GenerateConfig)
    prompt_cfg = load_section(params, "prompt", PromptConfig)
    reports = Path(reports_dir)
    with tracking.stage_run("generate", cfg) as run:
        problems = io.read_jsonl(problems_path)
        # ~60 bytes per generated token (id, offsets, entropy, top-k logprobs), trees included
        n_seqs = len(problems) * cfg.n + min(cfg.tree_problems, len(problems)) * cfg.tree_max_branches
        io.ensure_free_space(out_path, n_seqs * cfg.max_new_tokens * (60 + 20 * cfg.top_logprobs), "generations")
        examples = read_examples(fewshot_path, prompt_cfg)
        run.params(prompt_cfg, "prompt.")
        out = sample_solutions(cfg, problems, work_root, prompt_cfg, examples)
        rows, tree_rows = out["samples"], out["tree"]
        io.write_jsonl(out_path, rows)
        io.write_jsonl(Path(out_path).with_name("tree.jsonl"), tree_rows)
        stats = generate_stats(rows, tree_rows, len(problems))
        problem = solve_rate_problem(stats["solve_rate"], len(rows)) if is_real(problems) else None
        io.write_json(reports / "generate.json", stats)
        ents = token_entropies(rows)
        plots.entropy_hist(
            ents,
            reports / "generate" / "entropy.png",
            f"token entropy over {len(ents)} generated tokens",
            threshold=1.0,
        )
        run.metrics({f"generate/{k}": v for k, v in stats.items()})
        run.metrics({f"generate/run_{k}": v for k, v in out["info"].items()})  # this process only
        run.artifact(reports / "generate", "plots")
        print(f"generate: {stats}")
        print(
            f"generate: {out['info']['shards_run']} shards run now, {out['info']['shards_skipped']} resumed from checkpoint"
        )
        run.flag_degenerate("generate", [problem])  # real data: tags the run and fails the stage
    return stats


if __name__ == "__main__":
    from flows._cli import main

    main(generate, __doc__)
