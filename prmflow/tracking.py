"""MLflow tracking: the only module of the library that imports mlflow.

- Where: `MLFLOW_TRACKING_URI` if set, else `sqlite:///<cwd>/mlflow.db` with artifacts in
  `<cwd>/mlartifacts` (absolute paths, so `dvc exp run --temp` copies still log to one place
  when the URI is exported absolute).
- Grouping: one run per stage. A pipeline execution opens a parent run and exports its id in
  `PRMFLOW_PARENT_RUN_ID`, so stage processes started by `dvc repro` nest under it.
- Threads: MLflow's active run is per thread, and Prefect may run tasks in worker threads, so
  everything logs through `RunLogger(run_id)` (an `MlflowClient` bound to one run id).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from mlflow.tracking import MlflowClient

from prmflow.summaries import DegenerateRun, degenerate_message

if TYPE_CHECKING:
    from mlflow.entities import Experiment

EXPERIMENT = os.environ.get("PRMFLOW_EXPERIMENT", "prmflow")
PARENT_ENV = "PRMFLOW_PARENT_RUN_ID"
# keys whose values are never logged (API keys and the like), matched case-insensitively
SECRET_MARKERS = ("key", "token", "secret", "password")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def absolute_uri(uri: str | None = None) -> str:
    """`uri` (default: this process's `tracking_uri()`) with a relative sqlite or file path made
    absolute, so a process with another working directory (a Ray worker) logs to the same store.

    >>> absolute_uri("http://127.0.0.1:5000")
    'http://127.0.0.1:5000'
    >>> absolute_uri("sqlite:////tmp/mlflow.db")
    'sqlite:////tmp/mlflow.db'
    >>> absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    True
    >>> absolute_uri("mlruns") == str(Path.cwd().resolve() / "mlruns")
    True
    """
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    if ":" not in uri:  # a plain directory (MLflow's file store)
        return str(Path(uri).resolve())
    return uri


@contextlib.contextmanager
def using(uri: str) -> Iterator[None]:
    """Point this process's MLflow calls (`stage_run`, `RunLogger`) at `uri` for the block: a task on
    a Ray worker logs to the driver's store, whatever the worker's environment says."""
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def setup(experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the store and make sure the experiment exists. Returns its id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(experiment, artifact_location=artifacts)
    except mlflow.exceptions.MlflowException:  # created concurrently by another stage
        return cast("Experiment", client.get_experiment_by_name(experiment)).experiment_id  # it exists now


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dataclass or nested mapping -> {"a.b": value}, with secret-looking keys dropped."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if any(m in str(k).lower() for m in SECRET_MARKERS) and not str(k).lower().endswith(("_env", "tokens")):
            continue
        if isinstance(v, Mapping) or (is_dataclass(v) and not isinstance(v, type)):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


class RunLogger:
    """Thread-safe logging into one MLflow run, by id."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.client = MlflowClient(tracking_uri())

    def params(self, cfg: Any, prefix: str = "") -> None:
        for k, v in flatten(cfg, prefix).items():
            self.client.log_param(self.run_id, k, v)

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        for k, v in values.items():
            self.client.log_metric(self.run_id, k, float(v), step=step or 0)

    def tags(self, values: Mapping[str, str]) -> None:
        for k, v in values.items():
            self.client.set_tag(self.run_id, k, v)

    def flag_degenerate(self, stage: str, problems: Sequence[str | None]) -> None:
        """Fail loudly on a degenerate real-data run (prmflow.summaries): print the reason, tag the
        run with it (`degenerate`), and raise `DegenerateRun`, which ends the run FAILED. The
        stage's outputs are already written by then, so nothing is lost for a look."""
        message = degenerate_message(stage, problems)
        if message is None:
            return
        self.tags({"degenerate": message})
        self.metrics({f"{stage}/degenerate": 1.0})
        print(f"\n{'!' * 100}\n{message}\n{'!' * 100}\n", flush=True)
        raise DegenerateRun(message)

    def artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)


@contextlib.contextmanager
def stage_run(stage: str, cfg: Any = None, *, parent_run_id: str | None = None) -> Iterator[RunLogger]:
    """One MLflow run for one stage, nested under the pipeline's parent run when there is one.

    Tags: `stage`, git `commit`, and DVC's `DVC_EXP_NAME` / `DVC_EXP_BASELINE_REV` when set.
    The run ends FAILED if the body raises.
    """
    exp_id = setup()
    client = MlflowClient(tracking_uri())
    parent = parent_run_id or os.environ.get(PARENT_ENV)
    tags = {"stage": stage, "mlflow.runName": stage}
    if parent:
        tags["mlflow.parentRunId"] = parent
    if commit := _git_commit():
        tags["commit"] = commit
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    run = client.create_run(exp_id, tags=tags, run_name=stage)
    logger = RunLogger(run.info.run_id)
    if cfg is not None:
        logger.params(cfg)
    try:
        yield logger
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


@contextlib.contextmanager
def pipeline_run(name: str = "pipeline") -> Iterator[RunLogger]:
    """A parent run; its id is exported in PRMFLOW_PARENT_RUN_ID for stages and subprocesses."""
    with stage_run(name, parent_run_id=None) as logger:
        old = os.environ.get(PARENT_ENV)
        os.environ[PARENT_ENV] = logger.run_id
        try:
            yield logger
        finally:
            if old is None:
                os.environ.pop(PARENT_ENV, None)
            else:
                os.environ[PARENT_ENV] = old


def arm_run(
    experiment: str,
    arm: str,
    seed: int,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    parent_run_id: str | None = None,
) -> str:
    """One finished run per experiment arm x seed, tagged `experiment`, `arm` and `seed`, so the
    MLflow UI's compare view (filter `tags.experiment = '...'`) shows the report's table. Returns its id."""
    exp_id = setup()
    client = MlflowClient(tracking_uri())
    tags = {
        "stage": "experiments",
        "experiment": experiment,
        "arm": arm,
        "seed": str(seed),
        "mlflow.runName": f"{experiment}/{arm}/seed{seed}",
    }
    parent = parent_run_id or os.environ.get(PARENT_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, tags=tags, run_name=tags["mlflow.runName"])
    logger = RunLogger(run.info.run_id)
    logger.params({"experiment": experiment, "arm": arm, "seed": seed, **params})
    logger.metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def register_model(run_id: str, artifact_path: str, name: str) -> str:
    """Register a run's logged model directory in the MLflow model registry; returns the version.

    MLflow 3's `register_model("runs:/...")` rejects plain directories, so the version is created
    from the run's artifact URI (shared/STACK.md).
    """
    client = MlflowClient(tracking_uri())
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass  # already registered
    run = client.get_run(run_id)
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id)
    return str(mv.version)
