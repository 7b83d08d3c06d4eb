"""Stage `segment`: cut each completion into steps where the policy's entropy is high.

    python -m flows.segment [--params params.yaml]

EDU-PRM (arXiv 2503.22233) puts a step boundary before every token whose entropy exceeds a
threshold (prmflow.edu.partition); `newline` and `chunk` are the static baselines. Each step also
gets its exact gold label from the synthetic checker: a step is right iff its prefix contains
no error. Outputs data/segments/segments.jsonl, reports/segment.json and PNG plots (entropy
histogram with the threshold, steps per solution, step lengths).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.config import SegmentConfig, load_section
from prmflow.summaries import calibration_warning, numeric, segment_stats, step_lengths, token_entropies
from tasks.segment import segment


@flow(name="segment", log_prints=True)
def segment_flow(
    params: str | list[str] = "params.yaml",
    generations_dir: str = "data/generations",
    out_path: str = "data/segments/segments.jsonl",
    reports_dir: str = "reports",
) -> dict:
    cfg = load_section(params, "segment", SegmentConfig)
    reports = Path(reports_dir)
    with tracking.stage_run("segment", cfg) as run:
        rows = io.read_jsonl(Path(generations_dir) / "generations.jsonl")
        tree_path = Path(generations_dir) / "tree.jsonl"
        if cfg.include_tree and tree_path.is_file():
            rows += io.read_jsonl(tree_path, allow_empty=True)
        io.ensure_free_space(out_path, sum(len(r["text"]) * 4 + len(r["token_ids"]) * 8 for r in rows), "segments")
        out = segment(cfg, rows)
        seg = out["rows"]
        io.write_jsonl(out_path, seg)

        stats = segment_stats(
            seg,
            out["skipped_empty"],
            out["threshold"] if out["threshold"] is not None else cfg.entropy_threshold,
            out["calibration"],
        )
        if warning := calibration_warning(out["calibration"]):
            run.tags({"segment/calibration_warning": warning})
            print(f"segment: WARNING: {warning}")
        io.write_json(reports / "segment.json", stats)

        n_steps, lengths = step_lengths(seg)
        ents = token_entropies(rows)
        threshold = stats["threshold"] if cfg.strategy in ("fixed", "calibrated") else None
        plots.entropy_hist(
            ents,
            reports / "segment" / "entropy.png",
            f"token entropy ({len(ents)} tokens), strategy {cfg.strategy}",
            threshold=threshold,
        )
        plots.histogram(
            n_steps,
            reports / "segment" / "steps_per_solution.png",
            "steps per solution",
            f"{cfg.strategy}: {stats['mean_steps']:.2f} steps per solution on average",
        )
        plots.histogram(
            lengths,
            reports / "segment" / "step_tokens.png",
            "tokens per step",
            f"{cfg.strategy}: step lengths (min_len {cfg.min_len}, max_len {cfg.max_len})",
        )
        run.metrics(numeric(stats, "segment/"))
        run.artifact(reports / "segment", "plots")
        print(f"segment: {stats}")
    return stats


if __name__ == "__main__":
    from flows._cli import main

    main(segment_flow, __doc__)
