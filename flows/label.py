"""Stage `label`: Monte-Carlo labels for every step prefix, with their query cost and quality.

    python -m flows.label [--params params.yaml]

Each step prefix is rolled out N times by the policy; its soft label is the fraction of
rollouts reaching the right answer and its hard label is soft > 0 (Math-Shepherd,
prmflow.label.mc), or OmegaPRM's binary search finds the first error with fewer rollouts.
Because the synthetic checker knows the truth, the labels are scored against exact gold labels.
Outputs data/labels/labels.jsonl (TRL stepwise: `prompt`, `completions`, `labels`, plus
`soft_labels`, `cost`, `source`, `gold_labels`) and reports/labeling/label.json.
The work runs in `label.num_shards` shards (one retried Prefect task each, saved under
checkpoints/label/); a killed run resumes with at most one chunk redone, and the artifact is
byte-identical for any shard count (tasks.label).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.config import LabelConfig, load_section
from prmflow.summaries import is_real, label_balance, label_balance_problem, label_stats, numeric
from tasks.label import label_sharded, total_cost


@flow(name="label", log_prints=True)
def label_flow(
    params: str | list[str] = "params.yaml",
    segments_path: str = "data/segments/segments.jsonl",
    problems_path: str = "data/problems/pool.jsonl",
    out_path: str = "data/labels/labels.jsonl",
    reports_dir: str = "reports",
    checkpoint_root: str = "checkpoints/label",
) -> dict:
    cfg = load_section(params, "label", LabelConfig)
    with tracking.stage_run("label", cfg) as run:
        rows = io.read_jsonl(segments_path)
        io.ensure_free_space(out_path, Path(segments_path).stat().st_size, "labels")  # smaller than the segments
        problems = io.read_jsonl(problems_path)
        answers = {p["id"]: p["answer"] for p in problems}
        labeled, info = label_sharded(cfg, rows, answers, checkpoint_root)
        io.write_jsonl(out_path, labeled)

        stats = label_stats(labeled, total_cost(labeled).to_dict())
        io.write_json(Path(reports_dir) / "labeling" / "label.json", stats)
        plots.label_balance(
            label_balance(labeled),
            Path(reports_dir) / "labeling" / "labels.png",
            f"label: {len(labeled)} solutions, {stats['frac_labels_true']:.1%} of steps right",
        )
        run.metrics(numeric(stats, "label/"))
        run.metrics({f"label/run_{k}": v for k, v in info.items()})  # this process only, not the artifact
        print(f"label: {stats}")
        print(
            f"label: {info['rollouts_run']} rollouts run now, {info['resumed_prefixes']} prefixes resumed from checkpoint"
        )
        print(f"label: {info['shards_run']} shards run now, {info['shards_skipped']} resumed from checkpoint")
        if is_real(problems):  # all-one-class labels train a constant PRM: fail loudly
            run.flag_degenerate("label", [label_balance_problem([r["labels"] for r in labeled])])
    return stats


if __name__ == "__main__":
    from flows._cli import main

    main(label_flow, __doc__)
