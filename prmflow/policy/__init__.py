"""Policy backends: sample completions with per-token entropy (see `base.Backend`)."""

from __future__ import annotations

from typing import Any

from prmflow.policy.base import Backend, Completion, SamplingConfig

BACKENDS = ("transformers", "vllm")


def load_backend(name: str, model: str, **kwargs: Any) -> Backend:
    """Build the backend called `name` for a local model dir or hub id."""
    if name == "transformers":
        from prmflow.policy.hf_backend import TransformersBackend

        return TransformersBackend.from_pretrained(model, **kwargs)
    if name == "vllm":  # needs vllm, which lives in .venv-vllm (`make vllm-env`)
        from prmflow.policy.vllm_backend import VLLMBackend

        return VLLMBackend.from_pretrained(model, **kwargs)
    raise ValueError(f"unknown backend '{name}' (available: {', '.join(BACKENDS)})")


__all__ = ["Backend", "Completion", "SamplingConfig", "load_backend", "BACKENDS"]
