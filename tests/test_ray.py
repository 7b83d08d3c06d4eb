"""`task_runner: ray` on a real multi-node Ray cluster on this machine: a head (no CPUs) and 2 worker
nodes, each its own raylet with 1 CPU (tasks.runners.local_cluster), for the whole session.

- generate and label on the tiny config: shards on the cluster give the thread runner's bytes,
  and two shards ran at the same time (on the two worker nodes);
- a worker node's raylet killed mid-stage: its shard is retried on the surviving node, shards
  finished before the kill are not recomputed (their files untouched), the output is the same;
- an unreachable `ray_address` fails within seconds, naming the address and the param;
- stage active with one task per seed on the cluster: the thread runner's summary and curves.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

ray = pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]' (make test installs it)")
pytest.importorskip("prefect_ray", reason="prefect-ray is not installed: pip install -e '.[ray]'")

from conftest import REPO  # noqa: E402

from prmflow import io  # noqa: E402
from prmflow.config import GenerateConfig, LabelConfig, SegmentConfig  # noqa: E402
from prmflow.synth.world import generate_problems  # noqa: E402
from tasks import runners  # noqa: E402

pytestmark = pytest.mark.slow

PROBLEMS = [p.to_row() for p in generate_problems(12, seed=5)]
ANSWERS = {p["id"]: p["answer"] for p in PROBLEMS}


@pytest.fixture(scope="session")
def ray_cluster():
    """Head + 2 worker nodes on this machine; this process is the driver (on the head). Stopped
    after the session, also when a test fails."""
    with runners.local_cluster(workers=2) as cluster:
        ray.init(address=cluster.address, **runners.ray_init_kwargs())
        try:
            assert len([n for n in ray.nodes() if n["Alive"]]) == 3
            yield cluster
        finally:
            ray.shutdown()


@pytest.fixture(autouse=True, scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray worker with num_cpus=1 (OMP_NUM_THREADS=1)
    with prefect_test_harness():
        yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def fresh_backends():
    from tasks import backends

    backends.clear()
    yield
    backends.clear()


def _worker_node_ids(cluster) -> set[str]:
    return {n.node_id for n in cluster.worker_nodes}


def _gen_cfg(model, **kw) -> GenerateConfig:
    base = dict(
        model=str(model),
        n=2,
        max_new_tokens=24,
        batch_size=8,
        top_logprobs=2,
        tree_problems=3,
        tree_max_branches=2,
        tree_threshold=0.5,
        num_shards=1,
        task_retries=0,
    )
    return GenerateConfig(**{**base, **kw})


def _on_ray(cluster, **kw):
    return dict(task_runner="ray", ray_address=cluster.address, **kw)


def _generate(cfg, root, tmp_path, name):
    from tasks.generate import sample_solutions

    out = sample_solutions(cfg, PROBLEMS, str(root))
    io.write_jsonl(tmp_path / f"{name}.jsonl", out["samples"])
    io.write_jsonl(tmp_path / f"{name}.tree.jsonl", out["tree"])
    return (tmp_path / f"{name}.jsonl").read_bytes() + b"--\n" + (tmp_path / f"{name}.tree.jsonl").read_bytes(), out


@pytest.fixture(scope="module")
def thread_generation(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("thread_gen")
    return _generate(_gen_cfg(tiny_model_dir), tmp / "ckpt", tmp, "thread")


def test_generate_and_label_on_ray_give_the_thread_runners_bytes(
    ray_cluster, tiny_model_dir, tmp_path, thread_generation
):
    from tasks.label import label_sharded
    from tasks.segment import segment

    data, out = _generate(
        _gen_cfg(tiny_model_dir, num_shards=4, **_on_ray(ray_cluster)), tmp_path / "ckpt", tmp_path, "ray"
    )
    assert data == thread_generation[0]
    assert out["info"] == {"shards_run": 4, "shards_skipped": 0}
    # 2 worker nodes of 1 CPU, 4 shards of 1 CPU submitted at once: both nodes ran shards (the head none)
    assert {s["node"] for s in out["shards"]} == _worker_node_ids(ray_cluster)

    _, gen = thread_generation
    rows = segment.fn(SegmentConfig(strategy="fixed", entropy_threshold=0.5, max_len=6), gen["samples"] + gen["tree"])[
        "rows"
    ]
    base = dict(
        model=str(tiny_model_dir), num_rollouts=2, max_new_tokens=12, batch_size=16, chunk_size=4, task_retries=0
    )
    labeled = {}
    for name, kw in {"thread": {"num_shards": 1}, "ray": {"num_shards": 3, **_on_ray(ray_cluster)}}.items():
        got, info = label_sharded(LabelConfig(**base, **kw), rows, ANSWERS, str(tmp_path / f"label-{name}"))
        io.write_jsonl(tmp_path / f"{name}.labels.jsonl", got)
        labeled[name] = ((tmp_path / f"{name}.labels.jsonl").read_bytes(), info)
    assert labeled["ray"][0] == labeled["thread"][0]
    assert labeled["ray"][1]["rollouts_run"] == labeled["thread"][1]["rollouts_run"] > 0
    assert labeled["ray"][1]["shards_run"] == 3


def test_shard_storage_holds_the_shard_files(ray_cluster, tiny_model_dir, tmp_path, thread_generation):
    storage = tmp_path / "shared"
    cfg = _gen_cfg(tiny_model_dir, num_shards=2, shard_storage=str(storage), **_on_ray(ray_cluster))
    data, _ = _generate(cfg, tmp_path / "unused", tmp_path, "stored")
    assert data == thread_generation[0]
    assert len(list(storage.glob("generate/*/shard-*.jsonl"))) == 2 and not (tmp_path / "unused").exists()


def test_unreachable_ray_address_fails_fast_naming_address_and_param(tiny_model_dir, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"generate\.ray_address: no Ray cluster answers at '{address}'"):
        _generate(
            _gen_cfg(tiny_model_dir, num_shards=2, task_runner="ray", ray_address=address),
            tmp_path / "ckpt",
            tmp_path,
            "x",
        )
    assert time.monotonic() - t0 < 15
    with pytest.raises(ConnectionError, match=r"label\.ray_address: .*'ray://127\.0\.0\.1:1'"):
        runners.check_reachable("ray://127.0.0.1:1", "label.ray_address", timeout=2)


def _shard_states(since: float, n: int) -> dict[str, list[str]]:
    """State types of the last-started `generate-shard-*` task runs since `since`, by name, once
    `n` of them are Completed (the Prefect API records states a moment after they happen)."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="generate-shard-")))
            runs = [r for r in runs if r.start_time and r.start_time.timestamp() >= since]
            states = {r.name: [x.type.value for x in client.read_task_run_states(r.id)] for r in runs}
            if sum(v[-1:] == ["COMPLETED"] for v in states.values()) >= n or time.monotonic() > deadline:
                return states
            time.sleep(0.5)


def _shard_workers(node) -> set[int]:
    """Pids of `node`'s Ray worker processes executing a shard task right now: a node's workers are
    children of its raylet, and a worker titles itself `ray::<task name>` while it runs a task
    (`ray::IDLE` between tasks; prefect-ray names the Ray task after the Prefect task)."""
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (proc / "cmdline").read_bytes().split(b"\0", 1)[0]
        except (OSError, ValueError, IndexError):
            continue
        if ppid == raylet and title.startswith(b"ray::generate_shard"):
            pids.add(int(proc.name))
    return pids


def _recorded_running(client, since: float) -> set[int]:
    """Indices of the `generate-shard-*` task runs started since `since` whose Running state the
    Prefect API has recorded (and no later one yet)."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="generate-shard-")))
    return {
        int(r.name.rsplit("-", 1)[1])
        for r in runs
        if r.start_time and r.start_time.timestamp() >= since and r.state_type and r.state_type.value == "RUNNING"
    }


def test_worker_node_killed_mid_stage_retries_its_shard_on_the_survivor(ray_cluster, tiny_model_dir, tmp_path):
    # 24 problems in 6 shards (0 to 4 batches) of up to a few seconds each: long enough for the Running
    # states of both nodes' shards to be recorded while they run, so the kill can land mid-shard
    problems = [p.to_row() for p in generate_problems(24, seed=6)]
    sizes = dict(n=4, max_new_tokens=160, tree_problems=0, batch_size=8)

    def generate(cfg, root):
        from tasks.generate import sample_solutions

        out = sample_solutions(cfg, problems, str(root))
        io.write_jsonl(root / "out.jsonl", out["samples"])
        return (root / "out.jsonl").read_bytes(), out

    expected, _ = generate(_gen_cfg(tiny_model_dir, **sizes), tmp_path / "thread")
    root = tmp_path / "ckpt"
    killed: dict = {}  # the victim: the worker node killed while it ran a shard, chosen at that moment
    finished_before_kill: dict = {}
    stop = threading.Event()

    def kill_a_node_running_a_shard():
        """Once 1 to 4 shard files have landed, kill the raylet of a worker node running a shard
        whose Running state the Prefect API has recorded, so that its rerun shows Running twice.
        Which shard a worker runs is not visible, so all of them must be recorded: as many recorded
        Running shards without a file as executing workers, while no shard file landed and no
        worker started or stopped a shard in between (a shard writes its file before its worker
        takes another)."""
        from prefect import get_client

        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while not stop.is_set() and time.monotonic() < deadline and "node" not in killed:
                time.sleep(0.02)
                kill_if_every_running_shard_is_recorded(client)

    def kill_if_every_running_shard_is_recorded(client):
        files = sorted(p.name for p in root.glob("*/shard-*.jsonl"))
        if not 1 <= len(files) <= 4:
            return
        workers = {n.node_id: _shard_workers(n) for n in ray_cluster.worker_nodes}
        busy = [n for n in ray_cluster.worker_nodes if workers[n.node_id]]
        if not busy:
            return
        running = {i for i in _recorded_running(client, started) if f"shard-{i:04d}.jsonl" not in files}
        if len(running) < sum(map(len, workers.values())):
            return
        if workers != {n.node_id: _shard_workers(n) for n in ray_cluster.worker_nodes}:
            return
        finished_before_kill.update(
            {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.glob("*/shard-*.jsonl")}
        )
        if sorted(finished_before_kill) != files:
            finished_before_kill.clear()
            return
        busy[0].kill_raylet()
        killed["node"] = busy[0]

    started = time.time()  # after the thread run's shard started, before this run's
    since = started - 1
    killer = threading.Thread(target=kill_a_node_running_a_shard, daemon=True)
    killer.start()
    try:
        data, out = generate(_gen_cfg(tiny_model_dir, num_shards=6, **sizes, **_on_ray(ray_cluster)), root)
        killer.join(timeout=5)
        assert "node" in killed, "no worker node was seen running a shard with 1 to 4 shards finished"
        victim = killed["node"]
        assert data == expected  # the lost shard reran on the survivor: same bytes
        assert out["info"]["shards_run"] + out["info"]["shards_skipped"] == 6
        survivor = _worker_node_ids(ray_cluster) - {victim.node_id}
        # every shard's result came from a live worker node; those finished before the kill may
        # come from the victim (their results reached the driver in time, or were re-read, skipped)
        assert {s["node"] for s in out["shards"]} <= _worker_node_ids(ray_cluster)
        assert 1 <= len(finished_before_kill) <= 4  # the kill came mid-stage
        files = {p.name: p for p in root.glob("*/shard-*.jsonl")}
        for name, stamp in finished_before_kill.items():  # finished shards are not recomputed (or rewritten)
            assert (files[name].stat().st_ino, files[name].stat().st_mtime_ns) == stamp
        # a shard in flight on the killed node ran again (Ray resubmits it: Running twice, then Completed)
        states = _shard_states(since, 6)
        rerun = {
            int(name.rsplit("-", 1)[1])
            for name, st in states.items()
            if st.count("RUNNING") >= 2 and st[-1] == "COMPLETED"
        }
        lost = {i for i in rerun if f"shard-{i:04d}.jsonl" not in finished_before_kill}
        assert lost, states
        assert {out["shards"][i]["node"] for i in lost} <= survivor  # and ran again on the surviving node
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert victim.node_id not in alive and len(alive) == 2
    finally:  # give later users of the session's cluster their second worker node back
        stop.set()
        killer.join()
        if "node" in killed:
            ray_cluster.remove_node(killed["node"], allow_graceful=False)
            runners.add_worker_node(ray_cluster)
            ray_cluster.wait_for_nodes()


def _active(tmp_path, params, name, **runner):
    """Stage active on the tiny world of tests/test_active_loop.py (12 solutions, batches of 4: 3
    rounds; 2 seeds x 3 strategies), its loop state in a fresh relative dir; (summary, curves) bytes."""
    from flows.active import active_flow

    params["active"].update(runner)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(params))
    active_flow(
        params=f"{name}.yaml",
        segments_path="segments.jsonl",
        problems_path="pool.jsonl",
        eval_path="eval.jsonl",
        reports_dir=f"reports-{name}",
        state_root=f"ckpt-{name}",
    )
    out = tmp_path / f"reports-{name}" / "active"
    return (out / "summary.json").read_bytes(), (out / "curves.json").read_bytes()


def _without_work(summary: bytes) -> tuple[dict, int]:
    """summary.json minus what measures the work rather than its result: each strategy's
    `seconds_per_run` and `data.backbone_passes` (returned)."""
    s = json.loads(summary)
    for v in s.values():
        if isinstance(v, dict):
            v.pop("seconds_per_run", None)
    return s, s["data"].pop("backbone_passes")


def test_active_on_ray_one_task_per_seed_gives_the_thread_runners_summary_and_curves(
    ray_cluster, tiny_model_dir, tmp_path, mlflow_tmp, monkeypatch
):
    from mlflow.tracking import MlflowClient
    from test_active_flow import TINY_ACTIVE
    from test_active_loop import PROBLEMS as ACTIVE_PROBLEMS
    from test_active_loop import _evals, _pool

    monkeypatch.chdir(tmp_path)  # relative paths: a Ray worker runs elsewhere, the flow hands it absolute ones
    (tmp_path / "policy").symlink_to(tiny_model_dir)
    io.write_jsonl(tmp_path / "segments.jsonl", _pool())
    io.write_jsonl(tmp_path / "pool.jsonl", ACTIVE_PROBLEMS.values())
    io.write_jsonl(tmp_path / "eval.jsonl", _evals())
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # cache_features on: one cache per seed task
    params["active"].update({"backbone": "policy", **TINY_ACTIVE})

    thread = _active(tmp_path, params, "thread")
    ray_out = _active(tmp_path, params, "ray", **_on_ray(ray_cluster))
    assert ray_out[1] == thread[1]  # curves.json: the same bytes
    (ray_summary, ray_passes), (thread_summary, thread_passes) = _without_work(ray_out[0]), _without_work(thread[0])
    assert ray_summary == thread_summary and thread_summary["full"]["labels_spent"]["mean"] == 12.0
    # thread: the 12 distinct solutions pass through the backbone once for all 6 runs; ray: once per seed task
    assert (thread_passes, ray_passes) == (12, 24)

    # the workers logged to the driver's MLflow store: 3 runs per seed nested under the ray stage's run,
    # all of a seed on one node, the two seeds on the two worker nodes at once
    client = MlflowClient(mlflow_tmp)
    runs = client.search_runs([client.get_experiment_by_name("prmflow").experiment_id], order_by=["start_time ASC"])
    stage = [r for r in runs if r.data.tags.get("stage") == "active"][-1]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stage.info.run_id]
    assert sorted((r.data.tags["strategy"], r.data.tags["seed"]) for r in nested) == sorted(
        (s, str(k)) for s in ("full", "active", "random") for k in (0, 1)
    )
    assert all(r.info.status == "FINISHED" and r.data.metrics["active/labels_spent"] > 0 for r in nested)
    nodes = {seed: {r.data.tags["ray_node"] for r in nested if r.data.tags["seed"] == seed} for seed in ("0", "1")}
    assert all(len(n) == 1 for n in nodes.values())
    assert nodes["0"] | nodes["1"] == _worker_node_ids(ray_cluster)
