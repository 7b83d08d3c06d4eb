"""PNG plots a person looks at. Each function takes plain data and writes one PNG atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prmflow.io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png", metadata={"Software": None})
    plt.close(fig)


def loss_curve(losses: Sequence[float], path: str | os.PathLike[str], title: str = "training loss") -> None:
    """Raw per-step loss and a moving average."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, alpha=0.35, lw=0.8, label="per step")
    k = max(1, len(losses) // 50)
    if len(losses) >= k:
        avg = [sum(losses[i : i + k]) / k for i in range(len(losses) - k + 1)]
        ax.plot(range(k - 1, len(losses)), avg, lw=1.8, label=f"mean of {k}")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=title, yscale="log")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def first_error_hist(hist: Mapping[str, int], path: str | os.PathLike[str], title: str) -> None:
    """Bar chart of first-error positions; -1 (no error) drawn in green."""
    keys = sorted(hist, key=int)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([str(k) if k != "-1" else "none" for k in keys], [hist[k] for k in keys],
           color=["tab:green" if k == "-1" else "tab:red" for k in keys])
    ax.set(xlabel="first wrong step (0-based)", ylabel="solutions", title=title)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def entropy_hist(values: Sequence[float], path: str | os.PathLike[str], title: str,
                 threshold: float | None = None) -> None:
    """Histogram of per-token entropies (log count), with an optional threshold line."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=60, color="tab:blue", alpha=0.8)
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:g}")
        ax.legend()
    ax.set(xlabel="token entropy (nats)", ylabel="tokens", title=title, yscale="log")
    ax.grid(alpha=0.3)
    _save(fig, path)


def histogram(values: Sequence[float], path: str | os.PathLike[str], xlabel: str, title: str) -> None:
    """Integer-friendly histogram of one distribution."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if values:
        lo, hi = min(values), max(values)
        bins = [x - 0.5 for x in range(int(lo), int(hi) + 2)] if hi - lo <= 60 else 60
        ax.hist(values, bins=bins, color="tab:purple", alpha=0.85)
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)
