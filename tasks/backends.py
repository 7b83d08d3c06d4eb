"""One policy backend per process, shared by the shard tasks of a stage (and their retries)."""

from __future__ import annotations

import json

from prmflow.config import EngineOptions
from prmflow.policy import load_backend
from prmflow.policy.base import Backend

_BACKENDS: dict[tuple[str, str, int, str], Backend] = {}


def cached_backend(engine: EngineOptions, model: str, batch_size: int) -> Backend:
    """The backend `engine` describes, for (model, batch size), loaded once per process; at most
    one is kept."""
    kwargs = engine.backend_kwargs()
    key = (engine.backend, model, batch_size, json.dumps(kwargs, sort_keys=True))
    if key not in _BACKENDS:
        _BACKENDS.clear()
        _BACKENDS[key] = load_backend(engine.backend, model, batch_size=batch_size, **kwargs)
    return _BACKENDS[key]


def clear() -> None:
    """Forget loaded backends (tests; or after the model directory changed)."""
    _BACKENDS.clear()
