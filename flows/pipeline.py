"""The full pipeline: problems -> policy -> generate, under one parent MLflow run.

    python -m flows.pipeline [--params params.yaml]   # stage flows as Prefect subflows, in-process
    python -m flows.pipeline --dvc                    # `dvc repro` (what `make run` does): DVC
                                                      # skips up-to-date stages; every stage's
                                                      # MLflow run nests under this parent run
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

from prefect import flow

from flows.generate import generate
from flows.policy import policy
from flows.problems import problems
from prmflow import tracking
from prmflow.config import GenerateConfig, load_params, load_section
from prmflow.io import DataError


TOY_POLICY = "models/policy"
"""where stage `policy` writes the tiny from-scratch policy"""


@flow(name="pipeline", log_prints=True)
def pipeline(params: str | list[str] = "params.yaml") -> dict:
    model = load_section(params, "generate", GenerateConfig).model
    with tracking.pipeline_run("pipeline"):
        counts = problems(params=params)
        if Path(model) == Path(TOY_POLICY):
            policy_stats = policy(params=params, model_dir=TOY_POLICY)
        else:  # a pretrained policy: there is nothing to train
            policy_stats = {"skipped": f"generate.model is {model!r}, not the toy policy {TOY_POLICY!r}"}
            print(f"pipeline: policy stage skipped ({policy_stats['skipped']})")
        gen_stats = generate(params=params)
    return {"problems": counts, "policy": policy_stats, "generate": gen_stats}


def peak_child_rss_mib() -> float:
    """Peak resident set size of the largest finished child process (stages run as children of
    `dvc repro`, which is ours), in MiB: Linux reports ru_maxrss in KiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_dvc(targets: list[str]) -> int:
    """`dvc repro` with every stage's MLflow run nested under one parent run; logs the peak RSS
    of any stage process (`pipeline/peak_rss_mib`)."""
    with tracking.pipeline_run("pipeline (dvc repro)") as run:
        env = dict(os.environ, **{tracking.PARENT_ENV: run.run_id})
        rc = subprocess.call(["dvc", "repro", *targets], env=env)
        run.tags({"dvc_returncode": str(rc)})
        run.metrics({"pipeline/peak_rss_mib": peak_child_rss_mib()})
        print(f"pipeline: peak RSS of any stage process {peak_child_rss_mib():.0f} MiB")
        if rc:
            raise SystemExit(rc)  # marks the parent run FAILED
    return rc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the full prmflow pipeline.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dvc", action="store_true", help="run via `dvc repro` (skips up-to-date stages)")
    parser.add_argument("targets", nargs="*", help="dvc repro targets (with --dvc)")
    args = parser.parse_args()
    try:
        load_params(args.params)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.dvc:
        sys.exit(run_dvc(args.targets))
    pipeline(params=args.params)
