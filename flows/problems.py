"""Stage `problems`: sample synthetic word problems (or load GSM8K/MATH) into train/eval/pool.

    python -m flows.problems [--params params.yaml]

Outputs data/problems/{train,eval,pool}.jsonl, rows {"id", "problem", "answer", "solution"}.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, tracking
from prmflow.config import ProblemsConfig, load_section
from tasks.problems import sample_problems


@flow(name="problems", log_prints=True)
def problems(params: str | list[str] = "params.yaml", out_dir: str = "data/problems") -> dict[str, int]:
    cfg = load_section(params, "problems", ProblemsConfig)
    with tracking.stage_run("problems", cfg) as run:
        splits = sample_problems(cfg)
        counts = {}
        for name in ("train", "eval", "pool"):
            counts[name] = io.write_jsonl(Path(out_dir) / f"{name}.jsonl", splits[name])
        run.metrics(
            {f"problems/n_{k}": v for k, v in counts.items()} | {"problems/dropped_overlap": splits["dropped_overlap"]}
        )
        print(f"problems: {counts} (dropped {splits['dropped_overlap']} overlapping with train)")
    return counts


if __name__ == "__main__":
    from flows._cli import main

    main(problems, __doc__)
