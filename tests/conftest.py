"""Shared fixtures. Everything runs offline: tiny models and tokenizers are built here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

# before any HF / MLflow / Prefect import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = [
    "Question: Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?\nAnswer:\n"
    "23 + 14 = 37\nThe answer is 37",
    "Question: Leo has 6 cards. Then his cards become 3 times as many. How many cards does Leo have now?\nAnswer:\n"
    "6 * 3 = 18\nThe answer is 18",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama + local BPE tokenizer, saved with save_pretrained."""
    from prmflow.policy.tiny import build_model, build_tokenizer

    out = tmp_path_factory.mktemp("tiny_model")
    tok = build_tokenizer(CORPUS, 300)
    model = build_model("llama", len(tok), 64, 2, 4, 256, tok.pad_token_id, tok.eos_token_id, seed=0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture()
def mlflow_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow at a throwaway sqlite store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


# --------------------------------------------------------------------------- vLLM (its own venv)

VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
VLLM_K = 20  # top-k logprobs behind the entropy estimate (vLLM's default max_logprobs)
VLLM_PROMPTS = [
    "Question: Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?\nAnswer:\n",
    "Question: Leo has 6 cards. Then his cards become 3 times as many. How many cards does Leo have now?\nAnswer:\n",
    "Question: Leo has 9 cards.\nAnswer:\n",
    "Question:",
]
VLLM_MAX_NEW = 24
VLLM_SEEDS = [101, 102, 103, 104]


def vllm_missing() -> str | None:
    """Why the vLLM tests cannot run here (.venv-vllm absent or without vllm), or None."""
    import subprocess

    if not VLLM_PY.exists():
        return f"{VLLM_PY.relative_to(REPO)} not found; run `make vllm-env` to create the vLLM environment"
    probe = subprocess.run(
        [str(VLLM_PY), "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return f"vllm is not importable by {VLLM_PY.relative_to(REPO)}; run `make vllm-env`"
    return None


@contextlib.contextmanager
def vllm_server_process(
    model_dir: Path, served_model_name: str, api_key: str, log_path: Path, env: dict[str, str], **argv_kw: Any
) -> Iterator[str]:
    """A real vLLM OpenAI-compatible server (in .venv-vllm) on a free 127.0.0.1 port that wants
    `api_key`; yields its base URL once /v1/models answers, kills its process group on exit."""
    import signal
    import socket
    import subprocess
    import time

    import httpx

    from prmflow.policy.openai_backend import vllm_server_argv

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = vllm_server_argv(
        str(model_dir), port=port, served_model_name=served_model_name, python=str(VLLM_PY), **argv_kw
    )
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv,
            env={**env, "VLLM_API_KEY": api_key},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 150
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if (
                    httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not up after 150 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def vllm_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test corpus' tiny Llama with head_dim 32 (vLLM's CPU attention has no kernel for 16),
    briefly trained so its distributions are neither uniform nor degenerate; skips without vLLM."""
    reason = vllm_missing()
    if reason:
        pytest.skip(reason)
    from prmflow.policy.tiny import build_model, build_tokenizer, make_examples, train_lm

    out = tmp_path_factory.mktemp("vllm_tiny") / "model"
    tok = build_tokenizer(CORPUS, 300)
    model = build_model("llama", len(tok), 64, 2, 2, 256, tok.pad_token_id, tok.eos_token_id, seed=0)
    prompts = [c.split("Answer:\n")[0] + "Answer:\n" for c in CORPUS]
    sols = [c.split("Answer:\n")[1] for c in CORPUS]
    train_lm(
        model,
        make_examples(tok, prompts, sols, 256),
        steps=40,
        batch_size=8,
        lr=3e-3,
        warmup_steps=5,
        weight_decay=0.0,
        pad_id=tok.pad_token_id,
        seed=0,
    )
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (no OpenMP spin contention on a busy machine); a
    module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
