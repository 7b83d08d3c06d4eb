"""One policy backend per process, shared by the shard tasks of a stage (and their retries)."""

from __future__ import annotations

from prmflow.policy import load_backend
from prmflow.policy.base import Backend

_BACKENDS: dict[tuple[str, str, int], Backend] = {}


def cached_backend(name: str, model: str, batch_size: int) -> Backend:
    """The backend for (backend, model, batch size), loaded once per process; at most one is kept."""
    key = (name, model, batch_size)
    if key not in _BACKENDS:
        _BACKENDS.clear()
        _BACKENDS[key] = load_backend(name, model, batch_size=batch_size)
    return _BACKENDS[key]


def clear() -> None:
    """Forget loaded backends (tests; or after the model directory changed)."""
    _BACKENDS.clear()
