"""The whole default DAG on a tiny profile, in seconds: `make smoke`.

    python -m tools.smoke [--dir DIR] [--digests FILE]

Copies the repo's code and DVC files into DIR (default: a fresh temp dir), writes params.yaml
there as params.yaml + the overlay params-smoke.yaml, and runs `python -m flows.pipeline --dvc`
(`dvc repro` of every default stage, MLflow runs nested under one parent) offline. It prints the
wall time and the md5 of every file the stages wrote under data/, models/ and reports/, and with
`--digests` writes them as JSON: two checkouts that should behave alike must print the same md5s.
tests/test_pipeline.py builds its tiny repo with the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from prmflow.config import read_layered
from prmflow.io import write_json

ROOT = Path(__file__).resolve().parents[1]
CODE = ("prmflow", "tasks", "flows", "experiments", "dvc.yaml", "params.yaml", "pyproject.toml")
OUTPUTS = ("data", "models", "reports")


def copy_repo(dst: Path, src: Path = ROOT) -> None:
    """The code, DVC files and params.yaml of `src` (no data, models, checkpoints or MLflow store) into `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src / name, dst / name)


def write_params(dst: Path, src: Path = ROOT, overlay: str = "params-smoke.yaml") -> None:
    """`dst/params.yaml` = src's params.yaml with the overlay's keys (each must exist in the base)."""
    merged, _ = read_layered([src / "params.yaml", src / overlay])
    (dst / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))


def env_for(repo: Path) -> dict[str, str]:
    """An offline environment for stage processes in `repo`: its own MLflow store, no hub, and
    every outbound HTTP(S) sent to a dead proxy (only the local Prefect API is reachable)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    env["PYTHONPATH"] = str(repo)
    env["DVC_NO_ANALYTICS"] = "1"
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[var] = "http://127.0.0.1:9"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("PRMFLOW_PARENT_RUN_ID", None)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    """Run `cmd`; its stdout + stderr, or an AssertionError with their tails when it fails."""
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p.stdout + p.stderr


@contextlib.contextmanager
def prefect_server(home: Path, env: dict[str, str], timeout: float = 120) -> Iterator[str]:
    """A Prefect API server for the stages of one run (its database under `home`); yields its URL.

    Each stage process would otherwise start a temporary server of its own (10-17 s each)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    server_env = {**env, "PREFECT_HOME": str(home)}
    server_env.pop("PREFECT_API_URL", None)
    log = open(home.parent / "prefect-server.log", "w")  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start (see {log.name})")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def build(dst: Path) -> str:
    """Copy, write the smoke params, `dvc init --no-scm`, and run every default stage (all of them
    reporting to one Prefect server of this run)."""
    copy_repo(dst)
    write_params(dst)
    env = env_for(dst)
    run(["dvc", "init", "--no-scm", "-q"], dst, env)
    run(["dvc", "config", "core.analytics", "false"], dst, env)
    (dst / ".prefect").mkdir(exist_ok=True)
    with prefect_server(dst / ".prefect", env) as url:
        return run([sys.executable, "-m", "flows.pipeline", "--dvc"], dst, {**env, "PREFECT_API_URL": url})


def digests(repo: Path) -> dict[str, str]:
    """md5 of every file under the stage output folders, by path relative to `repo`."""
    return {
        str(p.relative_to(repo)): hashlib.md5(p.read_bytes()).hexdigest()
        for d in OUTPUTS
        for p in sorted((repo / d).rglob("*"))
        if p.is_file()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="where to build the smoke repo (default: a new temp dir)")
    ap.add_argument("--digests", type=Path, help="also write {path: md5} of the outputs here as JSON")
    args = ap.parse_args(argv)
    dst = (args.dir or Path(tempfile.mkdtemp(prefix="prmflow-smoke-"))).resolve()
    if dst.exists() and any(dst.iterdir()):
        sys.exit(f"error: --dir {dst} is not empty; give a new or empty folder")
    t0 = time.perf_counter()
    out = build(dst)
    wall = time.perf_counter() - t0
    stages = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]
    found = digests(dst)
    for path, md5 in found.items():
        print(f"{md5}  {path}")
    print(f"smoke: {len(stages)} stages ({', '.join(stages)}) in {wall:.0f} s; outputs in {dst}")
    if args.digests:
        write_json(args.digests, {"wall_s": round(wall, 1), "stages": stages, "md5": found})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
