"""PNG plots a person looks at. Each function takes plain data and writes one PNG atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from prmflow.io import atomic_path


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
    ax.bar(
        [str(k) if k != "-1" else "none" for k in keys],
        [hist[k] for k in keys],
        color=["tab:green" if k == "-1" else "tab:red" for k in keys],
    )
    ax.set(xlabel="first wrong step (0-based)", ylabel="solutions", title=title)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def entropy_hist(
    values: Sequence[float], path: str | os.PathLike[str], title: str, threshold: float | None = None
) -> None:
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


def label_balance(balance: Mapping[str, Sequence[float]], path: str | os.PathLike[str], title: str) -> None:
    """Fraction of steps labeled right at each step position (bars), and how many steps there are."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(balance["steps"]))
    ax.bar(xs, balance["frac_true"], color="tab:green", alpha=0.8)
    for x, n in zip(xs, balance["steps"]):
        ax.annotate(f"{n:g}", (x, 0), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    ax.set(
        xlabel="step position (0-based; the number = steps there)",
        ylabel="fraction labeled right",
        ylim=(0, 1.05),
        title=title,
    )
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def pareto(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Label accuracy vs generated rollout tokens per solution, one curve per scheme family."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    families: dict[str, list[tuple[float, float, float, str]]] = {}
    for name, r in results.items():
        fam = name.rstrip("0123456789")
        families.setdefault(fam, []).append(
            (float(r["tokens_per_solution"]), float(r["step_acc"] or 0), float(r["first_error_acc"] or 0), name)
        )
    for fam, pts in sorted(families.items()):
        pts.sort()
        for ax, idx in ((axes[0], 1), (axes[1], 2)):
            ax.plot([p[0] for p in pts], [p[idx] for p in pts], "o-", label=fam)
            for p in pts:
                ax.annotate(p[3], (p[0], p[idx]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set(
        xlabel="generated rollout tokens per solution",
        ylabel="step label accuracy vs gold",
        title="step accuracy vs cost",
    )
    axes[1].set(
        xlabel="generated rollout tokens per solution",
        ylabel="first-error accuracy vs gold",
        title="first-error accuracy vs cost",
    )
    for ax in axes:
        ax.set_xscale("symlog")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, path)


def step_lengths(step_tokens: Mapping[str, Sequence[int]], path: str | os.PathLike[str]) -> None:
    """Step length distributions (tokens) of each scheme, as box plots."""
    names = list(step_tokens)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 3.8))
    ax.boxplot([list(step_tokens[n]) or [0] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="tokens per step", title="step lengths by scheme")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def f1_vs_threshold(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], chosen: Mapping[str, float], path: str | os.PathLike[str]
) -> None:
    """ProcessBench F1 (and its two accuracies) against the threshold, one panel per scorer."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8), squeeze=False)
    for ax, (name, pts) in zip(axes[0], curves.items()):
        xs = [float(p["threshold"]) for p in pts]
        for key, style in (("f1", "-"), ("error_acc", "--"), ("correct_acc", ":")):
            ax.plot(xs, [float(p[key]) if p[key] is not None else float("nan") for p in pts], style, label=key)
        if name in chosen:
            ax.axvline(chosen[name], color="grey", lw=0.8, label=f"chosen {chosen[name]:.2f}")
        ax.set(xlabel="threshold", ylabel="metric on test subset", title=name, ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def bon_curves(bon: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Best-of-N accuracy against N (log2 axis), one line per selection method."""
    ns = list(bon["ns"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, accs in bon["accuracy"].items():
        style = ":" if method in ("oracle", "first") else "-"
        ax.plot(ns, accs, style, marker="o", ms=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="N (solutions sampled per problem)",
        ylabel="accuracy",
        title=f"Best-of-N on {bon['n_problems']} held-out problems",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def accuracy_vs_tokens(pedu: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Accuracy against total generated tokens for standard vs EDU-guided sampling (per seed)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arm, color in (("standard", "tab:blue"), ("p_edu", "tab:orange")):
        vals = pedu[arm]
        for key, marker in (("acc_prm", "o"), ("acc_majority", "s")):
            ax.scatter(
                vals["tokens"]["per_seed"],
                vals[key]["per_seed"],
                color=color,
                marker=marker,
                label=f"{arm} ({key.removeprefix('acc_')} pick)",
                alpha=0.8,
            )
    ax.set(
        xlabel="generated tokens (all problems)",
        ylabel="accuracy",
        title=f"EDU-guided vs standard sampling, N={pedu['n']}, one point per seed",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def active_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | os.PathLike[str],
    targets: Mapping[str, float] | None = None,
    title: str = "ProcessBench F1 vs labels spent",
) -> None:
    """ActPRM: F1 against labels spent, one mean line and min-max band per strategy, optional target lines.

    `curves[strategy]` is `prmflow.active.mean_curve` output (labels_spent, f1_mean, f1_min, f1_max).
    """
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"active": "tab:red", "random": "tab:blue", "full": "tab:gray"}
    for name, pts in curves.items():
        if not pts:
            continue
        x = [p["labels_spent"] for p in pts]
        color = colors.get(name)
        ax.plot(x, [p["f1_mean"] for p in pts], "o-", ms=3, color=color, label=name)
        ax.fill_between(x, [p["f1_min"] for p in pts], [p["f1_max"] for p in pts], color=color, alpha=0.15, lw=0)
    for label, y in (targets or {}).items():
        ax.axhline(y, color="black", ls=":", lw=1)
        ax.annotate(label, (0, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set(
        xlabel="labels spent (solutions sent to the labeler)", ylabel="F1 (synthetic ProcessBench, test)", title=title
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="mean, band = min-max over seeds", title_fontsize=7)
    _save(fig, path)


def _ci_err(ci: Mapping[str, Any]) -> list[list[float]] | None:
    """matplotlib's asymmetric error bar [[below], [above]] of a prmflow.stats CI (None: one seed)."""
    if ci.get("lo") is None:
        return None
    return [[ci["mean"] - ci["lo"]], [ci["hi"] - ci["mean"]]]


def _finish_ci(
    fig: plt.Figure, ax: plt.Axes, path: str | os.PathLike[str], xlabel: str, ylabel: str, title: str, logx: bool
) -> None:
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def ci_lines(
    series: Mapping[str, Sequence[tuple[float, Mapping[str, Any]]]],
    path: str | os.PathLike[str],
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    points: Mapping[str, tuple[float, Mapping[str, Any]]] | None = None,
    hline: float | None = None,
) -> None:
    """One line per series through (x, mean) with a shaded CI band; `points` are single arms
    drawn as a marker with an error bar (e.g. a baseline at one budget); `hline` a dashed
    reference level (e.g. 0 for differences). CI dicts: prmflow.stats."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if hline is not None:
        ax.axhline(hline, color="black", ls="--", lw=1)
    for name, pts in series.items():
        pts = sorted(pts, key=lambda p: p[0])
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1]["mean"] for p in pts], marker="o", label=name)
        if all(p[1].get("lo") is not None for p in pts):
            ax.fill_between(xs, [p[1]["lo"] for p in pts], [p[1]["hi"] for p in pts], alpha=0.2)
    for name, (x, ci) in (points or {}).items():
        ax.errorbar([x], [ci["mean"]], yerr=_ci_err(ci), marker="s", ms=7, capsize=4, ls="none", label=name)
    _finish_ci(fig, ax, path, xlabel, ylabel, title, logx)


def ci_scatter(
    points: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
    path: str | os.PathLike[str],
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
) -> None:
    """One labelled marker per arm at (x mean, y mean) with CI error bars on both axes."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, (x, y) in points.items():
        ax.errorbar(
            [x["mean"]], [y["mean"]], xerr=_ci_err(x), yerr=_ci_err(y), marker="o", capsize=3, ls="none", label=name
        )
    _finish_ci(fig, ax, path, xlabel, ylabel, title, logx)


def stage_costs(
    wall_s: Mapping[str, float], peak_rss_mib: Mapping[str, float], path: str | os.PathLike[str], title: str
) -> None:
    """Two bar charts side by side: wall time and peak RSS of each stage, in pipeline order."""
    stages = list(wall_s)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.barh(stages, [wall_s[s] / 60 for s in stages], color="tab:blue")
    ax1.set_xlabel("wall time (min)")
    ax1.invert_yaxis()
    ax2.barh(stages, [peak_rss_mib[s] / 1024 for s in stages], color="tab:orange")
    ax2.set_xlabel("peak RSS (GiB)")
    ax2.invert_yaxis()
    fig.suptitle(title)
    _save(fig, path)


# --------------------------------------------------------------------------- experiment suite sections
# `numbers` is a section's `numbers` (prmflow.experiment_report): arm -> {metric: CI dict}


def scale_ci(ci: Mapping[str, Any], k: float) -> dict[str, Any]:
    """A CI dict with its float `mean`, `lo` and `hi` times k (to share an axis); the rest as is.

    >>> scale_ci({"mean": 200.0, "lo": 100.0, "hi": None, "n": 3}, 0.01)
    {'mean': 2.0, 'lo': 1.0, 'hi': None, 'n': 3}
    """
    return {key: (v * k if isinstance(v, float) and key in ("mean", "lo", "hi") else v) for key, v in ci.items()}


def label_efficiency(numbers: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | os.PathLike[str]) -> None:
    """Experiment 1: first-error accuracy against rollout tokens per solution, one marker per scheme."""
    ci_scatter(
        {s: (n["tokens_per_solution"], n["first_error_acc"]) for s, n in numbers.items()},
        path,
        "rollout tokens per solution",
        "first-error accuracy vs gold",
        "label quality vs cost (mean, 95% CI over seeds)",
        logx=True,
    )


def data_efficiency(
    numbers: Mapping[str, Mapping[str, Mapping[str, Any]]], fractions: Sequence[float], path: str | os.PathLike[str]
) -> None:
    """Experiment 2: PRM F1 against the fraction of the EDU rollout budget, static newline MC at 100%."""
    full_tokens = numbers[f"edu@{max(fractions):g}"]["label_tokens"]["mean"]
    ci_lines(
        {"EDU labels": [(f, numbers[f"edu@{f:g}"]["f1"]) for f in sorted(dict.fromkeys(fractions))]},
        path,
        "fraction of the EDU rollout budget",
        "synthetic ProcessBench F1",
        f"PRM F1 vs label budget (100% = {full_tokens:.0f} tokens)",
        logx=True,
        points={"static newline MC, 100%": (1.0, numbers["static@1"]["f1"])},
    )


def threshold_ablation(
    numbers: Mapping[str, Mapping[str, Mapping[str, Any]]], thresholds: Sequence[float], out_dir: str | os.PathLike[str]
) -> None:
    """Experiment 3: threshold_f1.png (PRM F1) and threshold_cost.png (steps and label tokens per
    solution) against the fixed entropy thresholds, the calibrated strategy as a marker."""
    fixed = [(t, numbers[f"fixed@{t:g}"]) for t in thresholds]
    cal = numbers["calibrated"]
    ci_lines(
        {"fixed threshold": [(t, n["f1"]) for t, n in fixed]},
        os.path.join(out_dir, "threshold_f1.png"),
        "entropy threshold (nats)",
        "synthetic ProcessBench F1",
        "PRM F1 vs entropy threshold",
        logx=True,
        points={"calibrated": (cal["threshold"]["mean"], cal["f1"])},
    )
    ci_lines(
        {
            "steps / solution": [(t, n["steps_per_solution"]) for t, n in fixed],
            "label tokens / solution / 100": [(t, scale_ci(n["tokens_per_solution"], 0.01)) for t, n in fixed],
        },
        os.path.join(out_dir, "threshold_cost.png"),
        "entropy threshold (nats)",
        "per solution",
        "segmentation and label cost vs threshold",
        logx=True,
        points={"calibrated: steps": (cal["threshold"]["mean"], cal["steps_per_solution"])},
    )
