"""Tasks of stage `experiments`: one arm x seed each, returning plain numbers.

Every arm reuses the pipeline's own library calls (segmentation, MC labeling, PRM training,
synthetic ProcessBench), so an arm measures what the pipeline would do with that setting.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow import experiment_report as rep
from prmflow import io, plots, tracking
from prmflow.config import ExperimentsConfig, LabelConfig, LabelQualityConfig, SegmentConfig, TrainConfig
from prmflow.evaluate.scoring import assess, score_rows
from prmflow.label import label_quality
from prmflow.prm import PRM
from prmflow.prm.train import train_prm
from tasks.label import label_rows
from tasks.label_quality import compare_schemes
from tasks.segment import segment
from tasks.train import prm_config, prm_train_config

MIN_TRAIN_STEPS = 50
"""a PRM trained on a small fraction still gets this many optimizer steps (data, not compute, is scarce)"""


def problem_subset(problems: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """n problems drawn without replacement by `seed` (order kept as in the file)."""
    if n >= len(problems):
        return list(problems)
    keep = set(random.Random(f"subset:{seed}").sample(range(len(problems)), n))
    return [p for i, p in enumerate(problems) if i in keep]


def budget_subset(rows: list[dict[str, Any]], fraction: float, seed: int) -> list[dict[str, Any]]:
    """Rows in a seeded random order, kept while their summed rollout cost fits fraction x total
    (at least one row). Returns them in file order.

    >>> rows = [{"id": str(i), "cost": {"generated_tokens": 10}} for i in range(10)]
    >>> len(budget_subset(rows, 0.3, 0)), len(budget_subset(rows, 1.0, 0)), len(budget_subset(rows, 0.001, 0))
    (3, 10, 1)
    """
    total = sum(r["cost"]["generated_tokens"] for r in rows)
    order = list(range(len(rows)))
    random.Random(f"budget:{seed}").shuffle(order)
    keep, spent = set(), 0
    for i in order:
        c = rows[i]["cost"]["generated_tokens"]
        if keep and spent + c > fraction * total + 1e-9:
            continue
        keep.add(i)
        spent += c
    return [r for i, r in enumerate(rows) if i in keep]


@task(cache_policy=NO_CACHE, tags=["policy", "rollouts"])
def label_efficiency(
    lq: LabelQualityConfig,
    samples: list[dict[str, Any]],
    tree: list[dict[str, Any]],
    answers: dict[str, str],
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Experiment 1 for one seed: every labeling scheme on the same solutions, scored vs gold."""
    results = compare_schemes.fn(replace(lq, seed=seed), samples, tree, answers)
    return {name: {k: v for k, v in r.items() if k != "step_tokens"} for name, r in results.items()}


@task(cache_policy=NO_CACHE, tags=["policy", "rollouts"])
def label_with(
    seg_cfg: SegmentConfig,
    label_cfg: LabelConfig,
    generations: list[dict[str, Any]],
    answers: dict[str, str],
    checkpoint_root: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Segment `generations` with `seg_cfg`, MC-label them with `label_cfg`: TRL rows + stats."""
    seg = segment.fn(seg_cfg, generations)
    rows, _ = label_rows.fn(label_cfg, seg["rows"], answers, checkpoint_root=checkpoint_root)
    n = max(1, len(rows))
    step_acc = label_quality([r["labels"] for r in rows], [r["gold_labels"] for r in rows])["step_acc"]
    return rows, {
        "threshold": seg["threshold"] if seg["threshold"] is not None else seg_cfg.entropy_threshold,
        "steps_per_solution": sum(len(r["labels"]) for r in rows) / n,
        "tokens_per_solution": sum(r["cost"]["generated_tokens"] for r in rows) / n,
        "rollouts_per_solution": sum(r["cost"]["rollouts"] for r in rows) / n,
        "label_step_acc": step_acc if step_acc is not None else 0.0,
        "solutions": len(rows),
    }


@task(cache_policy=NO_CACHE, tags=["train", "prm"])
def train_and_score(
    train_cfg: TrainConfig,
    rows: list[dict[str, Any]],
    pb_rows: list[dict[str, Any]],
    seed: int,
    score_batch_size: int = 32,
) -> dict[str, Any]:
    """A PRM as the `train` stage builds it (seed = `seed`), trained on `rows`, then its synthetic
    ProcessBench metrics on the test subset (threshold fitted on `calib`)."""
    prm = PRM.from_backbone(train_cfg.backbone, prm_config(train_cfg, seed))
    per_epoch = math.ceil(len(rows) / (train_cfg.batch_size * train_cfg.grad_accum))
    steps = train_cfg.steps or max(MIN_TRAIN_STEPS, math.ceil(train_cfg.epochs * per_epoch))
    loop = replace(
        prm_train_config(train_cfg),
        steps=steps,
        warmup_steps=min(train_cfg.warmup_steps, steps // 2),
        seed=seed,
        checkpoint_every=10**9,
        progress_bar=False,
    )
    with tempfile.TemporaryDirectory() as ckpt:
        summary = train_prm(prm, rows, loop, ckpt, resume=False)
    scores, _ = score_rows(prm, pb_rows, batch_size=score_batch_size)
    try:
        result = assess(pb_rows, scores, calibrate_on="calib")
    except ValueError:  # a tiny config can leave calib one-sided
        result = assess(pb_rows, scores, threshold=0.5)
    test = result["subsets"].get("test") or {"f1": 0.0, "error_acc": 0.0, "correct_acc": 0.0}
    return {
        "f1": test["f1"],
        "err_acc": test["error_acc"],
        "correct_acc": test["correct_acc"],
        "train_rows": len(rows),
        "train_steps": summary["steps"],
        "label_tokens": sum(r["cost"]["generated_tokens"] for r in rows),
    }


# --------------------------------------------------------------------------- one experiment each: its arms x seeds,
# each arm x seed an MLflow run tagged `experiment`, `arm`, `seed`; returns the report section


def run_label_efficiency(
    cfg: ExperimentsConfig,
    lq: LabelQualityConfig,
    pool: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    tree: list[dict[str, Any]],
    out: Path,
) -> dict[str, Any]:
    answers = {p["id"]: p["answer"] for p in pool}
    per_seed = {}
    for seed in cfg.seeds:
        problems = problem_subset(pool, cfg.label_problems, seed)
        per_seed[seed] = label_efficiency(
            lq, rep.by_problem(samples, problems), rep.by_problem(tree, problems), answers, seed
        )
        for scheme, r in per_seed[seed].items():
            tracking.arm_run("label_efficiency", scheme, seed, {"problems": len(problems)}, r)
    section = rep.label_efficiency(per_seed, cfg.level)
    plots.label_efficiency(section["numbers"], out / "experiments" / "label_efficiency.png")
    return section


def run_data_efficiency(
    cfg: ExperimentsConfig,
    seg_cfg: SegmentConfig,
    label_cfg: LabelConfig,
    train_cfg: TrainConfig,
    edu_rows: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    pool: list[dict[str, Any]],
    pb_rows: list[dict[str, Any]],
    out: Path,
) -> dict[str, Any]:
    answers = {p["id"]: p["answer"] for p in pool}
    static_cfg = replace(label_cfg, num_rollouts=cfg.static_rollouts)
    static_rows, static_stats = label_with(
        replace(seg_cfg, strategy="newline"), static_cfg, samples, answers, "checkpoints/experiments/label"
    )
    edu: dict[float, dict[int, dict[str, Any]]] = {f: {} for f in cfg.data_fractions}
    static: dict[int, dict[str, Any]] = {}
    for seed in cfg.seeds:
        for f in cfg.data_fractions:
            edu[f][seed] = train_and_score(train_cfg, budget_subset(edu_rows, f, seed), pb_rows, seed)
            tracking.arm_run("data_efficiency", f"edu@{f:g}", seed, {"fraction": f, "labels": "edu"}, edu[f][seed])
        static[seed] = train_and_score(train_cfg, static_rows, pb_rows, seed)
        tracking.arm_run("data_efficiency", "static@1", seed, {"fraction": 1.0, "labels": "newline_mc"}, static[seed])
    section = rep.data_efficiency(edu, static, cfg.level)
    section["numbers"]["static_labels"] = static_stats
    plots.data_efficiency(section["numbers"], cfg.data_fractions, out / "experiments" / "data_efficiency.png")
    return section


def run_threshold_ablation(
    cfg: ExperimentsConfig,
    seg_cfg: SegmentConfig,
    label_cfg: LabelConfig,
    train_cfg: TrainConfig,
    samples: list[dict[str, Any]],
    pool: list[dict[str, Any]],
    pb_rows: list[dict[str, Any]],
    out: Path,
) -> dict[str, Any]:
    answers = {p["id"]: p["answer"] for p in pool}
    arms = {f"fixed@{t:g}": replace(seg_cfg, strategy="fixed", entropy_threshold=t) for t in cfg.thresholds}
    arms["calibrated"] = replace(seg_cfg, strategy="calibrated")
    per_arm: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in arms}
    for seed in cfg.seeds:
        gens = rep.by_problem(samples, problem_subset(pool, cfg.ablation_problems, 1000 + seed))
        for arm, scfg in arms.items():
            rows, stats = label_with(
                scfg, replace(label_cfg, seed=seed), gens, answers, "checkpoints/experiments/label"
            )
            per_arm[arm][seed] = {**stats, **train_and_score(train_cfg, rows, pb_rows, seed)}
            tracking.arm_run(
                "threshold_ablation",
                arm,
                seed,
                {"strategy": scfg.strategy, "entropy_threshold": scfg.entropy_threshold},
                per_arm[arm][seed],
            )
    section = rep.threshold_ablation(per_arm, cfg.level)
    plots.threshold_ablation(section["numbers"], cfg.thresholds, out / "experiments")
    return section


def collect_active_learning(cfg: ExperimentsConfig, reports: Path) -> dict[str, Any]:
    summary = io.read_json(reports / "active" / "summary.json")
    for strat, seed, metrics in rep.active_arms(summary):
        tracking.arm_run("active_learning", strat, seed, {}, metrics)
    return rep.active_learning(summary, cfg.level)


def collect_edu_sampling(cfg: ExperimentsConfig, reports: Path) -> dict[str, Any]:
    pedu = io.read_json(reports / "eval" / "edu_sampling.json")
    for arm, i, metrics in rep.edu_sampling_arms(pedu):
        tracking.arm_run("edu_sampling", arm, i, {"n": pedu["n"]}, metrics)
    return rep.edu_sampling(pedu, cfg.level)
