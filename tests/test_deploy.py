"""Integration: shared datasets through a DVC remote, a local Prefect deployment, and the
`accelerate launch` path of PRM training. Each runs in a temp copy of the repo on a tiny config,
offline (dead proxies), with a throwaway MLflow sqlite store and PREFECT_HOME.

- DVC: `dvc repro` problems -> policy, `dvc push` to a local-directory remote, wipe the cache and
  the outputs, `dvc pull`: `dvc status` is clean and `dvc repro` runs nothing.
- Prefect: `prefect server start` on 127.0.0.1, a `process` work pool, `prefect deploy` of the
  `problems/cpu` deployment from prefect.yaml, `prefect deployment run` from the CLI, one worker
  (`--run-once`); the run completes and wrote data/problems/*.jsonl.
- accelerate: `python -m flows.launch train --launcher accelerate --num-processes 1 --cpu`
  trains the PRM single-process on CPU (skipped when accelerate is not importable).
- Profiles: params-gpu.yaml validates on params.yaml + params-real.yaml and holds only keys that
  differ (so does params-real.yaml on params.yaml); every deployment passes the right files.

One Prefect server serves the whole module (the DVC stages talk to it too, which saves the
ephemeral API's start-up per stage).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.slow

TINY = {
    "problems": {"n_train": 400, "n_eval": 16, "n_pool": 6, "max_steps": 3},
    "policy": {
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "vocab_size": 300,
        "steps": 20,
        "batch_size": 8,
        "warmup_steps": 5,
        "eval_max_new_tokens": 24,
        "eval_batch_size": 16,
    },
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "register_name": ""},
}
POOL = "prmflow-cpu"


def _copy_repo(dst: Path) -> None:
    for name in (
        "prmflow",
        "tasks",
        "flows",
        "dvc.yaml",
        "params.yaml",
        "params-real.yaml",
        "params-gpu.yaml",
        "prefect.yaml",
        "pyproject.toml",
    ):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _env(tmp: Path, home: Path, api_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PWD"] = str(tmp)  # prefect.yaml's `{{ $PWD }}` (subprocess cwd= does not set it)
    env["PYTHONPATH"] = str(tmp)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
    env["DO_NOT_TRACK"] = "true"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DVC_NO_ANALYTICS"] = "1"
    env["DVC_SITE_CACHE_DIR"] = str(home / "dvc-site")
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:
        env.pop("PREFECT_API_URL", None)
    # offline by construction: any outbound HTTP(S) goes to a dead proxy; only 127.0.0.1 answers
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[var] = "http://127.0.0.1:9"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("PRMFLOW_PARENT_RUN_ID", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Prefect's server and workers stop cleanly on SIGINT (not SIGTERM); kill what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME; yields (home, api_url)."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _env(home, home, None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, f"prefect server exited:\n{(home / 'server.log').read_text()[-4000:]}"
            try:
                if opener.open(f"{api_url}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"server not up:\n{(home / 'server.log').read_text()[-4000:]}"
            time.sleep(1)
        yield home, api_url
    finally:
        _stop(proc)
        log.close()


def _stage_names(out: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", out)


def test_dvc_remote_round_trip(prefect_server, tmp_path: Path):
    home, api_url = prefect_server
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    # the pipeline subset: problems -> policy
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    dvc["stages"] = {k: v for k, v in dvc["stages"].items() if k in ("problems", "policy")}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    env = _env(repo, home, api_url)
    _run(["dvc", "init", "--no-scm", "-q"], repo, env)
    _run(["dvc", "config", "core.analytics", "false"], repo, env)
    assert _stage_names(_run(["dvc", "repro"], repo, env, timeout=600)) == ["problems", "policy"]
    before = {
        p.relative_to(repo): p.read_bytes()
        for d in ("data/problems", "models/policy")
        for p in sorted((repo / d).rglob("*"))
        if p.is_file()
    }

    remote = tmp_path / "remote"
    _run(["dvc", "remote", "add", "-d", "shared", str(remote)], repo, env)
    out = _run(["dvc", "push"], repo, env)
    assert re.search(r"\d+ files? pushed", out), out
    assert any(p.is_file() for p in remote.rglob("*"))

    # a fresh machine: no cache, no DVC-cached outputs (reports/ are cache: false, kept in git)
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / "models")
    assert "deleted" in _run(["dvc", "status"], repo, env)

    _run(["dvc", "pull"], repo, env)
    after = {
        p.relative_to(repo): p.read_bytes()
        for d in ("data/problems", "models/policy")
        for p in sorted((repo / d).rglob("*"))
        if p.is_file()
    }
    assert after == before
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], repo, env)
    out = _run(["dvc", "repro"], repo, env)
    assert _stage_names(out) == [], out


def test_prefect_local_deployment(prefect_server, tmp_path: Path):
    home, api_url = prefect_server
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    env = _env(repo, home, api_url)
    prefect = [sys.executable, "-m", "prefect"]

    _run([*prefect, "work-pool", "create", POOL, "--type", "process"], repo, env)
    out = _run([*prefect, "--no-prompt", "deploy", "-n", "problems/cpu"], repo, env)
    assert "problems/cpu" in out, out
    out = _run([*prefect, "deployment", "run", "problems/cpu"], repo, env)
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert flow_run_id, out

    # one worker: polls the pool once, runs the scheduled flow run, exits when it is done
    _run([*prefect, "worker", "start", "--pool", POOL, "--run-once"], repo, env, timeout=300)
    out = _run([*prefect, "flow-run", "inspect", flow_run_id.group(1)], repo, env)
    assert "COMPLETED" in out, out

    counts = {}
    for split in ("train", "eval", "pool"):
        rows = [json.loads(x) for x in (repo / f"data/problems/{split}.jsonl").read_text().splitlines()]
        assert rows and set(rows[0]) == {"id", "problem", "answer", "solution"}
        counts[split] = len(rows)
    assert counts["eval"] == 16 and counts["pool"] == 6


GPU_PARAMS = ["params.yaml", "params-real.yaml", "params-gpu.yaml"]
"""the real GPU run: the base file, then the real-model overlay, then the GPU overlay"""
REAL_ONLY_FLOWS = {"convert", "summary"}
"""stages of the real-model DVC pipeline (real/dvc.yaml) only, with no deployment"""
NO_GPU_FLOWS = {"policy", "pipeline"}
"""the GPU run samples from a pretrained policy: no toy policy (pipeline = problems -> policy -> generate)"""
NOT_FLOWS = {"launch"}
"""flows/launch.py starts `accelerate launch -m flows.train`; it is not a flow"""


def _repeated_keys(base_files: list[str], overlay: str) -> list[str]:
    """`section.key`s of `overlay` whose value equals what `base_files` already give (an overlay
    should hold only the keys that differ)."""
    from prmflow.config import read_layered

    merged, _ = read_layered([REPO / f for f in base_files])
    values = yaml.safe_load((REPO / overlay).read_text())
    return [f"{s}.{k}" for s, kv in values.items() for k, v in kv.items() if merged[s][k] == v]


def test_overlays_hold_only_keys_that_differ(tmp_path: Path):
    assert _repeated_keys(["params.yaml"], "params-real.yaml") == []
    assert _repeated_keys(["params.yaml", "params-real.yaml"], "params-gpu.yaml") == []
    # the check itself: a value copied from the layers below is caught
    gpu = yaml.safe_load((REPO / "params-gpu.yaml").read_text())
    gpu["generate"]["n"] = yaml.safe_load((REPO / "params-real.yaml").read_text())["generate"]["n"]
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(gpu, sort_keys=False))
    assert _repeated_keys(["params.yaml", "params-real.yaml"], str(tmp_path / "gpu.yaml")) == ["generate.n"]


def test_gpu_profile_and_deployments_load():
    """params-gpu.yaml validates as an overlay on params.yaml + params-real.yaml and describes the
    real GPU run; prefect.yaml has a cpu deployment for every stage flow with params.yaml, and a
    gpu one for every stage of the GPU run with the three files."""
    from prmflow.config import load_params
    from prmflow.prm.backbone import require_policy_backbone

    p = load_params([REPO / f for f in GPU_PARAMS])
    assert p.problems.source in ("gsm8k", "math") and p.problems.source_path
    assert p.prompt.template in ("chat", "auto")
    assert p.generate.backend == p.label.backend == "vllm"
    assert p.generate.model == p.label.model == p.evaluate.policy == "Qwen/Qwen2.5-Math-7B-Instruct"
    assert p.generate.task_runner == p.label.task_runner == "ray"
    assert p.generate.ray_address == p.label.ray_address == "auto"
    assert p.generate.num_gpus == p.generate.tensor_parallel_size > 1
    # the PRM on a pretrained backbone, separate from the policy that wrote the steps
    assert p.train.backbone == "Qwen/Qwen2.5-Math-7B" and not p.train.freeze_backbone
    assert p.train.policy == p.generate.model != p.train.backbone
    with pytest.raises(ValueError, match="lm_features"):
        require_policy_backbone(p.train.backbone, p.train.policy)
    assert not p.train.lm_features and not p.active.lm_features
    assert p.train.launcher == "accelerate" and p.train.mixed_precision == "bf16"
    # bigger than the real CPU profile it overlays
    real = load_params([REPO / "params.yaml", REPO / "params-real.yaml"])
    assert p.problems.n_pool > real.problems.n_pool and p.problems.n_eval > real.problems.n_eval
    assert p.label.num_rollouts > real.label.num_rollouts and p.evaluate.bon_problems > real.evaluate.bon_problems
    assert "policy" not in yaml.safe_load((REPO / "params-gpu.yaml").read_text())

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    entries = {(d["name"], d["entrypoint"]) for d in spec["deployments"]}
    flows = {f.stem for f in (REPO / "flows").glob("*.py") if not f.stem.startswith("_")} - REAL_ONLY_FLOWS - NOT_FLOWS
    assert NO_GPU_FLOWS < flows
    expected = {"cpu": flows, "gpu": flows - NO_GPU_FLOWS}
    for name in ("cpu", "gpu"):
        assert {e.split(":")[0] for n, e in entries if n == name} == {f"flows/{f}.py" for f in expected[name]}
    for d in spec["deployments"]:
        path, fn = d["entrypoint"].split(":")
        assert re.search(rf"^def {fn}\(\s*params: str \| list\[str\]", (REPO / path).read_text(), re.M), d["entrypoint"]
        params_files = d["parameters"]["params"]
        assert params_files == ("params.yaml" if d["name"] == "cpu" else GPU_PARAMS), d["entrypoint"]
        assert d["work_pool"]["name"] == f"prmflow-{d['name']}"


def _labels(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = 3 + i, 4 + 2 * i
        good = i % 2 == 0
        s = a + b if good else a + b + 1
        rows.append(
            {
                "id": f"r{i}",
                "prompt": f"Question: Mia has {a} marbles. She finds {b} more. How many now?\nAnswer:\n",
                "completions": [f"{a} + {b} = {s}\n", f"The answer is {s}"],
                "labels": [good, good],
                "soft_labels": [1.0 if good else 0.0] * 2,
            }
        )
    return rows


@pytest.mark.parametrize("processes", [1, 2])
def test_train_through_accelerate_launch_on_cpu(prefect_server, tiny_model_dir: Path, tmp_path: Path, processes: int):
    """The PRM training stage through `accelerate launch` on the CPU: one process, and two
    data-parallel gloo processes (rank 0 runs the flow, rank 1 trains beside it)."""
    home, api_url = prefect_server
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["backbone"] = params["train"]["policy"] = str(tiny_model_dir)  # lm_features: backbone = policy
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "data/labels").mkdir(parents=True)
    (repo / "data/labels/labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _labels(8)))
    env = _env(repo, home, api_url)
    # probe: every Python process started from here records the ACCELERATE_* settings it got
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(
        "import json, os\n"
        "acc = {k: v for k, v in os.environ.items() if k.startswith('ACCELERATE_')}\n"
        "if acc and 'ACCELERATE_MIXED_PRECISION' in acc:\n"
        "    open(os.environ['PRMFLOW_TEST_ENV_DUMP'], 'w').write(json.dumps(acc))\n"
    )
    env["PRMFLOW_TEST_ENV_DUMP"] = str(repo / "launch_env.json")
    env["PYTHONPATH"] = os.pathsep.join([str(repo), str(probe), *filter(None, [os.environ.get("PYTHONPATH")])])

    out = _run(
        [
            sys.executable,
            "-m",
            "flows.launch",
            "train",
            "--launcher",
            "accelerate",
            "--num-processes",
            str(processes),
            "--cpu",
        ],
        repo,
        env,
        timeout=300,
    )
    assert "accelerate.commands.launch" in out and ("--cpu" if processes == 1 else "--multi_gpu") in out
    # the flow ran under accelerate's launcher (it exports its settings to the process)
    launched = json.loads((repo / "launch_env.json").read_text())
    assert launched["ACCELERATE_USE_CPU"].lower() == "true" and launched["ACCELERATE_MIXED_PRECISION"] == "no"
    summary = json.loads((repo / "reports/train.json").read_text())
    assert summary["steps"] == 4 and summary["examples"] == 8 and summary["processes"] == processes
    from prmflow.prm import PRM

    prm = PRM.from_pretrained(repo / "models/prm")
    assert len(prm.score("Question: Mia has 2 cats.\nAnswer:\n", ["2 + 1 = 3\n", "The answer is 3"])) == 2
