"""Shared fixtures. Everything runs offline: tiny models and tokenizers are built here."""

from __future__ import annotations

import os

# before any HF / MLflow / Prefect import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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
