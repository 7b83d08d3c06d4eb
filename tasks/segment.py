"""Tasks of stage `segment`: completions -> steps, with exact gold labels per step."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow.config import SegmentConfig
from prmflow.edu.partition import PartitionConfig, calibrate, number_tokens, partition
from prmflow.label.quality import first_error_of, gold_step_labels


def segment_rows(
    pcfg: PartitionConfig, rows: list[dict[str, Any]], threshold: float | None
) -> tuple[list[dict[str, Any]], int]:
    """Partition every completion; returns (segmented rows, number of empty completions skipped)."""
    out, skipped = [], 0
    for r in rows:
        if not r["token_ids"]:
            skipped += 1
            continue
        try:
            seg = partition(r["text"], [tuple(o) for o in r["offsets"]], r["entropy"], pcfg, threshold=threshold)
        except ValueError as e:
            raise ValueError(f"generation '{r['id']}': {e}") from None
        # real problems have no step-level truth: no gold labels (None), never a made-up one
        gold = gold_step_labels(seg.spans, r["first_error_char"]) if r["first_error_char"] is not None else None
        out.append(
            {
                "id": r["id"],
                "problem_id": r["problem_id"],
                "prompt": r["prompt"],
                **{k: r[k] for k in ("problem_source", "policy_prompt", "stop") if k in r},
                "text": r["text"],
                "token_ids": r["token_ids"],
                "steps": seg.steps,
                "starts": seg.starts,
                "ends": seg.ends,
                "spans": [list(s) for s in seg.spans],
                "n_anchors": len(seg.anchors),
                "threshold": seg.threshold,
                "gold_labels": gold,
                "gold_first_error": first_error_of(gold) if gold is not None else None,
                "final_correct": r["final_correct"],
                "finish_reason": r["finish_reason"],
                "source": f"{pcfg.strategy}+tree" if "parent" in r else pcfg.strategy,
                **({"parent": r["parent"], "branch_pos": r["branch_pos"]} if "parent" in r else {}),
            }
        )
    return out, skipped


@task(cache_policy=NO_CACHE, tags=["cpu"])
def segment(cfg: SegmentConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Calibrate the threshold if asked, then partition every row.

    Not cached by Prefect: it is fast and DVC decides when it reruns.
    """
    threshold, calibration = None, None
    if cfg.strategy == "calibrated":
        sample = [r for r in rows if r["token_ids"]][: cfg.calibration_size]
        offsets = [[tuple(o) for o in r["offsets"]] for r in sample]
        blocked = [number_tokens(r["text"], o) for r, o in zip(sample, offsets)] if cfg.keep_numbers else None
        cal = calibrate(
            [r["entropy"] for r in sample],
            cfg.target_mean_steps,
            cfg.min_len,
            cfg.max_len,
            offsets=offsets,
            blocked=blocked,
            count=cfg.calibrate_count,
        )
        threshold, calibration = cal.tau, asdict(cal)
    segmented, skipped = segment_rows(cfg, rows, threshold)
    return {"rows": segmented, "skipped_empty": skipped, "threshold": threshold, "calibration": calibration}
