"""The full default pipeline: every stage of dvc.yaml, in DAG order, under one parent MLflow run.

    python -m flows.pipeline [--params params.yaml]   # the stage flows as Prefect subflows, in-process:
                                                      # problems -> policy -> generate -> segment -> label
                                                      # -> label_quality -> train -> evaluate -> active
                                                      # -> results (reports/RESULTS.md)
    python -m flows.pipeline --dvc [real/dvc.yaml]    # `dvc repro` (what `make run` / `make run-real` do):
                                                      # DVC skips up-to-date stages; every stage's MLflow
                                                      # run nests under this parent run

In-process, every stage reads and writes its default paths (those of dvc.yaml) and reruns from
scratch apart from its own checkpoints. The toy policy is trained only when `generate.model` is
models/policy: a pretrained policy has nothing to train.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from flows.active import active_flow
from flows.evaluate import evaluate_flow
from flows.generate import generate
from flows.label import label_flow
from flows.label_quality import label_quality_flow
from flows.policy import policy
from flows.problems import problems
from flows.results import results_flow
from flows.segment import segment_flow
from flows.train import train_flow
from prmflow import tracking
from prmflow.config import GenerateConfig, load_params, load_section
from prmflow.io import DataError

TOY_POLICY = "models/policy"
"""where stage `policy` writes the tiny from-scratch policy"""


@flow(name="pipeline", log_prints=True)
def pipeline(params: str | list[str] = "params.yaml") -> dict[str, Any]:
    """Every default stage as a subflow, in DAG order; returns each stage's result by name."""
    model = load_section(params, "generate", GenerateConfig).model
    out: dict[str, Any] = {}
    with tracking.pipeline_run("pipeline"):
        out["problems"] = problems(params=params)
        if Path(model) == Path(TOY_POLICY):
            out["policy"] = policy(params=params, model_dir=TOY_POLICY)
        else:  # a pretrained policy: there is nothing to train
            out["policy"] = {"skipped": f"generate.model is {model!r}, not the toy policy {TOY_POLICY!r}"}
            print(f"pipeline: policy stage skipped ({out['policy']['skipped']})")
        out["generate"] = generate(params=params)
        out["segment"] = segment_flow(params=params)
        out["label"] = label_flow(params=params)
        out["label_quality"] = label_quality_flow(params=params)
        out["train"] = train_flow(params=params)
        out["evaluate"] = evaluate_flow(params=params)
        out["active"] = active_flow(params=params)
        out["results"] = results_flow(params=params)
    return out


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
