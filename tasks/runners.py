"""Where a stage's shard tasks run: in this process (`thread`) or on a Ray cluster (`ray`).

    infos = run_shards(generate_shard.with_options(retries=1), cfg, "generate",
                       [{"cfg": cfg, "shard_idx": 0, ...}, {"cfg": cfg, "shard_idx": 1, ...}])

`thread` calls the shard tasks one after another in this process, as the stages always did.
`ray` submits every shard as one Prefect task through `prefect_ray.RayTaskRunner`, each under
`prefect_ray.context.remote_options(num_cpus=..., num_gpus=..., max_retries=NODE_RETRIES)`, so
the shards run concurrently on the cluster's nodes; then it waits for all of them. Only the
coarse shard tasks go to Ray (a stage has `num_shards` of them); everything else in the flow
stays in its process.

Faults: an exception inside a shard is retried by Prefect (`task_retries`, in the Ray worker);
a shard lost with its node (raylet or worker process killed) is resubmitted by Ray on the nodes
still alive, up to NODE_RETRIES times. Shard tasks write their results to shard files that
every node reaches (`shard_storage`, else the stage's checkpoint dir), skip shards whose file is
already complete, and the driver merges the files in input order, so the stage's output is the
same bytes for either runner and any shard count.

The runner is built here from the stage's params rather than fixed on the `@flow`, so the flows
(and their Prefect deployments) stay as they are and `task_runner` is a param like any other.
Paths handed to Ray tasks are made absolute (a Ray worker's working directory is not the
driver's); workers import this checkout's code (PYTHONPATH), see the driver's offline /
telemetry settings (FORWARDED_ENV) and report to the driver's Prefect API, also when that is
the temporary server of a run without PREFECT_API_URL (on several machines, set PREFECT_API_URL
to a server every node reaches).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from prmflow.config import RunnerOptions

C = TypeVar("C", bound=RunnerOptions)

NODE_RETRIES = 3
"""Ray's `max_retries`: times a shard lost with its node (or worker process) is resubmitted"""
CONNECT_TIMEOUT = 5.0
"""seconds to wait for the Ray cluster's port before failing the stage"""
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "TOKENIZERS_PARALLELISM",
    "DO_NOT_TRACK",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "MLFLOW_DISABLE_TELEMETRY",
    "PRMFLOW_EXPERIMENT",
)
"""environment variables a shard task sees as they are in the driver (when set there); the driver's
MLflow store is added as an absolute MLFLOW_TRACKING_URI (ray_init_kwargs)"""
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def current_node() -> str:
    """The Ray node id this process runs on (a shard task on a cluster), else "local"."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return str(ray.get_runtime_context().get_node_id())
    return "local"


def check_reachable(address: str, param: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast, naming the address and the param, when nothing listens at a Ray `address`.

    `ray.init` would keep retrying an unreachable cluster for a long time; one TCP connect with
    a timeout tells the user at once. "" and `auto` (a cluster found on this machine) are left
    to Ray.

    >>> check_reachable("127.0.0.1:1", "label.ray_address", timeout=1.0)
    Traceback (most recent call last):
    ...
    ConnectionError: label.ray_address: no Ray cluster answers at '127.0.0.1:1' (Connection refused); start one with `ray start --head` or fix label.ray_address
    """
    if address in ("", "auto"):
        return
    split = urlsplit(address if "://" in address else f"ray-gcs://{address}")
    try:
        host, port = split.hostname, split.port or (10001 if split.scheme == "ray" else 6379)
    except ValueError as e:  # a port that is not a number
        raise ValueError(f"{param}: {address!r} is not host:port or ray://host:port ({e})") from None
    if not host:
        raise ValueError(f"{param}: {address!r} is not host:port or ray://host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ConnectionError(
            f"{param}: no Ray cluster answers at {address!r} ({why}); start one with `ray start --head` or fix {param}"
        ) from None


def shard_root(cfg: RunnerOptions, default_root: str | os.PathLike[str], stage: str) -> Path:
    """The directory a stage's job dirs go under: `<shard_storage>/<stage>`, else `default_root`;
    absolute under ray (the worker processes do not share the driver's working directory).

    >>> shard_root(RunnerOptions(), "checkpoints/label", "label")
    PosixPath('checkpoints/label')
    >>> shard_root(RunnerOptions(shard_storage="file:///mnt/shared/prmflow"), "checkpoints/label", "label")
    PosixPath('/mnt/shared/prmflow/label')
    """
    storage = cfg.shard_storage.removeprefix("file://")
    root = Path(storage) / stage if storage else Path(default_root)
    return root.resolve() if cfg.task_runner == "ray" else root


def for_workers(cfg: C, **path_fields: str) -> C:
    """`cfg` as a shard task on another process should see it: under ray, the local paths named
    by `path_fields` (e.g. model="models/policy") made absolute. Paths only say where the same
    files are, so nothing a shard computes changes (job hashes use the original cfg)."""
    if cfg.task_runner != "ray":
        return cfg
    changes = {k: str(Path(v).resolve()) for k, v in path_fields.items() if Path(v).exists()}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def ray_init_kwargs() -> dict[str, Any]:
    """`ray.init` keyword arguments: workers import this checkout, see FORWARDED_ENV and log to the
    driver's MLflow store (its tracking URI, relative paths made absolute)."""
    from prmflow.tracking import absolute_uri

    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env["MLFLOW_TRACKING_URI"] = absolute_uri()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"runtime_env": {"env_vars": env}, "namespace": "prmflow"}


def _ray_task_runner(cfg: RunnerOptions, section: str) -> Any:
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ImportError(
            f"{section}.task_runner is 'ray' but prefect-ray is not installed: pip install -e '.[ray]'"
        ) from None
    if cfg.ray_address == "auto":  # prefect-ray drops "auto"; ray.init(address="auto") fails without a cluster
        return RayTaskRunner(init_kwargs={**ray_init_kwargs(), "address": "auto"})
    return RayTaskRunner(address=cfg.ray_address or None, init_kwargs=ray_init_kwargs())


def _api_settings() -> dict[Any, str]:
    """Prefect settings the shard tasks need to report to this process's API. Without
    PREFECT_API_URL a flow talks to a temporary server it started itself; its URL is handed on,
    or every Ray worker would start a server of its own (tens of seconds each)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return {}
    server = SubprocessASGIServer()  # the process's one temporary server (a singleton)
    server.start()  # a no-op when it runs already (a flow started it)
    return {PREFECT_API_URL: server.api_url}


def run_shards(task: Any, cfg: RunnerOptions, section: str, calls: list[dict[str, Any]]) -> list[Any]:
    """Run `task(**kwargs)` for every kwargs in `calls` on the runner `cfg` names; results in order.

    thread: one after another in this process (the first failure stops the stage). ray: all
    submitted at once, each reserving `num_cpus` / `num_gpus`; every shard is waited for (so
    the finished ones are saved) before the first failure, if any, is raised.
    """
    if cfg.task_runner == "thread":
        return [task(**kwargs) for kwargs in calls]
    from prefect.settings import temporary_settings
    from prefect_ray.context import remote_options

    check_reachable(cfg.ray_address, f"{section}.ray_address")
    with contextlib.ExitStack() as stack:
        try:
            runner = stack.enter_context(_ray_task_runner(cfg, section))
        except ConnectionError as e:  # `auto` and no cluster on this machine
            raise ConnectionError(
                f"{section}.ray_address: no Ray cluster at {cfg.ray_address!r} ({e}); start one "
                f"with `ray start --head` or fix {section}.ray_address"
            ) from None
        stack.enter_context(temporary_settings(_api_settings()))
        stack.enter_context(remote_options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_retries=NODE_RETRIES))
        futures = [runner.submit(task, kwargs) for kwargs in calls]
        for f in futures:
            f.wait()
        return [f.result() for f in futures]


@contextlib.contextmanager
def local_cluster(
    workers: int = 2, cpus_per_worker: float = 1, memory_mb: int = 2048, object_store_mb: int = 96
) -> Iterator[Any]:
    """A real multi-node Ray cluster on this machine, for tests and benchmarks: a head node with no
    CPUs (it schedules and hosts the driver, runs no shard) and `workers` worker nodes, each its
    own raylet (ray.cluster_utils.Cluster). A killed node is declared dead in about 2 s (fast
    health checks). Yields the Cluster (`.address`, `.worker_nodes`); every process it started
    is stopped on exit, also on error."""
    from ray.cluster_utils import Cluster

    health = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 4}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "object_store_memory": object_store_mb << 20,
            "_system_config": health,
        },
    )
    try:
        for _ in range(workers):
            add_worker_node(cluster, cpus_per_worker, memory_mb, object_store_mb)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def add_worker_node(cluster: Any, cpus: float = 1, memory_mb: int = 2048, object_store_mb: int = 96) -> Any:
    """One more worker node (raylet) in a `local_cluster`."""
    return cluster.add_node(num_cpus=cpus, memory=memory_mb << 20, object_store_memory=object_store_mb << 20)
