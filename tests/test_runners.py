"""The runner knobs (prmflow.config.RunnerOptions, tasks.runners) without a cluster: validation
that names the param, job hashes that ignore where shards run, paths for worker processes."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from prmflow.config import GenerateConfig, LabelConfig, load_params
from prmflow.io import DataError
from tasks import runners


def _params_with(tmp_path: Path, section: str, **values) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_unknown_runner_names_file_line_and_param(tmp_path):
    path = _params_with(tmp_path, "label", task_runner="dask")
    line = next(i for i, s in enumerate(path.read_text().splitlines(), 1) if "task_runner: dask" in s)
    with pytest.raises(
        DataError,
        match=rf"params.yaml:{line}: field 'label.task_runner': task_runner must be one of "
        r"thread, ray \(label.task_runner\), got 'dask'",
    ):
        load_params(path)


def test_ray_knobs_need_the_ray_runner_and_storage_is_a_path(tmp_path):
    with pytest.raises(DataError, match=r"'generate.ray_address': ray_address is read by task_runner: ray only"):
        load_params(_params_with(tmp_path, "generate", ray_address="10.0.0.1:6379"))
    with pytest.raises(ValueError, match=r"num_gpus is read by task_runner: ray only \(label.num_gpus\)"):
        LabelConfig(num_gpus=1.0)
    with pytest.raises(ValueError, match=r"num_cpus and num_gpus must be >= 0 \(generate\)"):
        GenerateConfig(task_runner="ray", num_cpus=-1.0)
    with pytest.raises(ValueError, match=r"shard_storage must be a directory path .*'s3://bucket/x'"):
        GenerateConfig(shard_storage="s3://bucket/x")
    assert load_params(_params_with(tmp_path, "active", task_runner="ray", num_cpus=2.0)).active.num_cpus == 2.0
    with pytest.raises(DataError, match=r"field 'active': active.seeds must be distinct: \[0, 0\]"):
        load_params(_params_with(tmp_path, "active", seeds=[0, 0]))
    assert GenerateConfig(task_runner="ray", ray_address="auto", num_gpus=4.0).num_gpus == 4.0


def test_where_shards_run_is_not_part_of_the_job(tmp_path):
    from tasks.generate import job_dir

    problems = [{"id": "p1", "problem": "Q?", "answer": "1"}]
    here = job_dir(GenerateConfig(), problems, "r")
    there = job_dir(
        GenerateConfig(
            task_runner="ray", ray_address="10.0.0.1:6379", num_cpus=2.0, num_gpus=1.0, shard_storage="/mnt/x"
        ),
        problems,
        "r",
    )
    assert here == there
    assert job_dir(GenerateConfig(num_shards=3), problems, "r") == here  # nor does the shard count (same bytes)
    assert job_dir(GenerateConfig(n=3), problems, "r") != here  # a knob that matters still counts


def test_workers_get_absolute_paths_only_under_ray(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "policy").mkdir(parents=True)
    thread, ray = GenerateConfig(), GenerateConfig(task_runner="ray")
    assert runners.for_workers(thread, model=thread.model) is thread
    assert runners.for_workers(ray, model=ray.model).model == str(tmp_path / "models" / "policy")
    assert runners.for_workers(ray, model="Qwen/Qwen2.5-Math-7B").model == "models/policy"  # a hub id stays
    assert runners.shard_root(ray, "checkpoints/generate", "generate") == tmp_path / "checkpoints" / "generate"
    env = runners.ray_init_kwargs()["runtime_env"]["env_vars"]
    assert env["PYTHONPATH"].split(":")[0] == str(REPO)  # workers import this checkout
    # and log to the driver's MLflow store, wherever their working directory is
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def uri() -> str:
        return runners.ray_init_kwargs()["runtime_env"]["env_vars"]["MLFLOW_TRACKING_URI"]

    assert uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///runs/mlflow.db")  # relative: made absolute
    assert uri() == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"


def test_bad_addresses_are_named():
    with pytest.raises(ValueError, match=r"generate.ray_address: 'host:port:x' is not host:port"):
        runners.check_reachable("host:port:x", "generate.ray_address")
    runners.check_reachable("", "x")  # "" and auto are Ray's own business
    runners.check_reachable("auto", "x")


def test_runners_doctests():
    assert doctest.testmod(runners).failed == 0
