"""Stage `summary` (real-model profile): the run's headline numbers in one file.

    python -m flows.summary [--reports-dir reports/real]

Reads the stage reports under `reports_dir` (generate.json, segment.json, labeling/label.json,
train.json, eval/bon.json) and every stage's run info (runinfo/*.json: wall time, peak RSS), and
writes summary.json (solve rate, truncated fraction, label class balance, the Best-of-N table,
`wall_s`, `peak_rss_mib`) and summary.png (time and memory per stage). A degenerate run
(prmflow.summaries) fails this stage too, after summary.json is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.summaries import real_summary

STAGES = ("convert", "problems", "generate", "segment", "label", "train", "evaluate")
REPORTS = {
    "generate": "generate.json",
    "segment": "segment.json",
    "label": "labeling/label.json",
    "train": "train.json",
    "bon": "eval/bon.json",
}


@flow(name="summary", log_prints=True)
def summary_flow(params: str | list[str] = "params.yaml", reports_dir: str = "reports/real") -> dict:
    root = Path(reports_dir)
    with tracking.stage_run("summary") as run:
        reports = {k: json.loads((root / f).read_text()) for k, f in REPORTS.items() if (root / f).is_file()}
        run_info = {
            s: json.loads((root / "runinfo" / f"{s}.json").read_text())
            for s in STAGES
            if (root / "runinfo" / f"{s}.json").is_file()
        }
        summary = real_summary(reports, run_info)
        io.write_json(root / "summary.json", summary)
        plots.stage_costs(
            summary["wall_s_by_stage"],
            summary["peak_rss_mib_by_stage"],
            root / "summary.png",
            f"real profile: {summary['wall_s'] / 60:.1f} min, peak RSS {summary['peak_rss_mib']:.0f} MiB",
        )
        run.metrics(
            {
                "summary/solve_rate": summary["solve_rate"],
                "summary/wall_s": summary["wall_s"],
                "summary/peak_rss_mib": summary["peak_rss_mib"],
                "summary/label_frac_true": summary["labels"]["frac_true"],
            }
        )
        run.artifact(root / "summary.png", "plots")
        print(f"summary: {json.dumps(summary, indent=1)}")
        run.flag_degenerate("summary", summary["degenerate"])
    return summary


if __name__ == "__main__":
    from flows._cli import main

    main(summary_flow, __doc__)
