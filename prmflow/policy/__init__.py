"""Policy backends: sample completions with per-token entropy (see `base.Backend`)."""

from __future__ import annotations

from typing import Any

from prmflow.policy.base import Backend, Completion, SamplingConfig

BACKENDS = ("transformers", "vllm", "openai")


def load_backend(name: str, model: str, **kwargs: Any) -> Backend:
    """Build the backend called `name` for a local model dir or hub id (for "openai": the served
    model name, with `base_url=` and optionally `tokenizer=` in kwargs)."""
    if name == "transformers":
        from prmflow.policy.hf_backend import TransformersBackend

        return TransformersBackend.from_pretrained(model, **kwargs)
    if name == "vllm":  # needs vllm, which lives in .venv-vllm (`make vllm-env`)
        from prmflow.policy.vllm_backend import VLLMBackend

        return VLLMBackend.from_pretrained(model, **kwargs)
    if name == "openai":  # an OpenAI-compatible /v1/completions server; `model` is the served name
        from prmflow.policy.openai_backend import OpenAIBackend

        return OpenAIBackend.from_pretrained(model, **kwargs)
    raise ValueError(f"unknown backend '{name}' (available: {', '.join(BACKENDS)})")


__all__ = ["Backend", "Completion", "SamplingConfig", "load_backend", "BACKENDS"]
