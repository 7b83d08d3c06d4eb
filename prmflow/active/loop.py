r"""Pool-based active learning of an ensemble PRM (ActPRM, arXiv 2504.10559, Algorithm 1).

The unlabeled pool is streamed once, in a seeded order, in batches B_1, B_2, ... of
`batch_size` solutions; a ragged last batch (fewer than `batch_size`) joins the one before it,
because `grad_steps` full optimizer steps on a handful of solutions overfit them (on the default
world full labeling's F1 fell from about 0.83 to 0.76 in a last round of 9). Round t:

    1. score B_t with the ensemble (one forward pass, no grad): P_i of shape (num_heads, num_steps)
    2. select S_t from B_t by `strategy`:
         active   S_t = {i in B_t : not confident(P_i)}           (prmflow.active.uncertainty)
         random   S_t = n_t solutions of B_t drawn uniformly (seeded by seed and t), where
                  n_t = counts[t] when a schedule is given (the experiment passes the active
                  run's |S_t| for the same seed, so both spend exactly the same labels in every
                  round), else round(select_fraction * |B_t|)
         full     S_t = B_t
    3. label S_t (the labeler may return unlabeled: paid for, counted, never trained on)
    4. `grad_steps` AdamW steps on the labeled part L_t of S_t only, each on the loss of
       `prmflow.prm.model.step_loss` over L_t (ActPRM: confident samples are left out of the
       loss); no step when L_t is empty. The rate of round t of T (`prmflow.schedule.lr_at`) is

           constant   lr
           linear     lr * (1 - (1 - lr_final) * u)                      u = (t - 1) / (T - 1)
           cosine     lr * (lr_final + (1 - lr_final) * (1 + cos(pi * u)) / 2)

       so the first round trains at lr and the last at lr * lr_final. The schedule runs over
       rounds, not labels: every strategy streams the same T batches and so gets the same rates.
    5. every `eval_every` rounds (and after the last one): synthetic-ProcessBench F1 on the
       `test` subset at the threshold calibrated on `calib` (`prmflow.evaluate.scoring.assess`)

labels_spent after round t is sum_{s <= t} |S_s|, the budget axis of the F1 curves.

With a frozen backbone (`cache_features`), steps 1, 4 and 5 run on head inputs computed once
per solution (`prmflow.active.features`): the same arithmetic, one backbone pass per solution.

Crash safety: the labels of round t are written to run_dir/labels/round-{t:05d}.json after every
solution labeled (atomic rewrite), and the PRM, the AdamW state and the history to
run_dir/checkpoint/ every `checkpoint_every` rounds (atomic). A rerun with the same config
resumes from the checkpoint and replays later rounds with the saved selections and labels, so
no solution is sent to the labeler twice. Each round reseeds torch from (seed, t), so a resumed
run ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from prmflow.active.features import CachedHeads, FeatureCache
from prmflow.active.labelers import Labeler, LabelerCost
from prmflow.active.uncertainty import solution_uncertainty
from prmflow.evaluate.scoring import StepScorer, assess, score_rows
from prmflow.label.quality import first_error_of
from prmflow.options import ActiveLoopOptions
from prmflow.prm import PRM, accumulate_grads, prepare_examples
from prmflow.resume import job_key, load_checkpoint, load_state, save_checkpoint, save_state
from prmflow.schedule import lr_at

STRATEGIES = ("active", "random", "full")
LOOP_VERSION = 2
"""bumped when the same config would buy or train differently (2: the ragged last batch joins the
one before it), so saved rounds and checkpoints of an older loop are never resumed"""


@dataclass(frozen=True)
class LoopConfig(ActiveLoopOptions):
    """One pool-based active learning run (the loop's knobs: prmflow.options.ActiveLoopOptions)."""

    strategy: str = "active"
    """`active` (ActPRM: label the non-confident) | `random` | `full` (label everything)"""
    seed: int = 0
    """pool order, random selection and per-round torch seeds"""
    max_grad_norm: float = 1.0
    """gradient clipping (0 = none)"""
    eval_threshold: float = 0.5
    """threshold used when the calib subset cannot calibrate one (a class missing)"""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        self.check_loop()


def pool_order(ids: Sequence[str], seed: int) -> list[int]:
    """The seeded order in which the pool is streamed: a permutation of range(len(ids)).

    Depends only on the set of ids and the seed, not on the order of the input rows.
    """
    idx = sorted(range(len(ids)), key=lambda i: ids[i])
    random.Random(seed).shuffle(idx)
    return idx


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each round's batch over a pool of n: batch_size each, a ragged tail joined
    to the batch before it.

    >>> batch_bounds(10, 4), batch_bounds(8, 4), batch_bounds(3, 4), batch_bounds(0, 4)
    ([(0, 4), (4, 10)], [(0, 4), (4, 8)], [(0, 3)], [])
    """
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < batch_size:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def select(strategy: str, confident: Sequence[bool], n_random: int, rng: random.Random) -> list[int]:
    """Indices of the batch to label (step 2 of the module docstring), ascending.

    >>> select("active", [True, False, False, True], 0, random.Random(0))
    [1, 2]
    >>> select("full", [True, False], 0, random.Random(0)), len(select("random", [True] * 5, 2, random.Random(0)))
    ([0, 1], 2)
    """
    if strategy == "active":
        return [i for i, c in enumerate(confident) if not c]
    if strategy == "full":
        return list(range(len(confident)))
    return sorted(rng.sample(range(len(confident)), min(n_random, len(confident))))


def processbench_f1(
    prm: StepScorer, rows: Sequence[Mapping[str, Any]], batch_size: int = 32, fallback_threshold: float = 0.5
) -> dict[str, Any]:
    """error_acc, correct_acc, f1 on subset `test` at the threshold calibrated on `calib`."""
    scores, _ = score_rows(prm, rows, batch_size=batch_size)
    try:
        res = assess(rows, scores, calibrate_on="calib")
    except ValueError:  # calib lacks correct or erroneous rows
        res = {**assess(rows, scores, threshold=fallback_threshold), "threshold_mode": f"fixed {fallback_threshold}"}
    m = res["subsets"].get("test") or {}
    return {
        "f1": m.get("f1"),
        "error_acc": m.get("error_acc"),
        "correct_acc": m.get("correct_acc"),
        "threshold": res["threshold"],
        "threshold_mode": res["threshold_mode"],
    }


def run_active_learning(
    prm: PRM,
    pool: Sequence[Mapping[str, Any]],
    problems: Mapping[str, Mapping[str, Any]],
    labeler: Labeler,
    cfg: LoopConfig,
    run_dir: str | Path,
    *,
    eval_rows: Sequence[Mapping[str, Any]] | None = None,
    counts: Sequence[int] | None = None,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    feature_cache: FeatureCache | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the loop of the module docstring on `prm` in place; returns the history.

    `pool` rows need `id`, `problem_id`, `prompt`, `steps` (`gold_labels` if present feeds the
    `pseudo_label_acc` diagnostic); `problems` maps problem_id to the row the labeler reads.
    `on_round(t, record)` runs after round t is saved. Every record has `round`, `labels_spent`,
    `labeled`, `unlabeled`, `selected`, `selected_fraction`, `confident_fraction`, `cost`, ...;
    evaluated ones (round 0 = before training, when `eval_rows` is given) also `f1`.
    With `cfg.cache_features` the heads are scored and trained on head inputs kept in
    `feature_cache` (a fresh one if None; share one across runs on the same backbone).
    `progress` shows a tqdm bar over the rounds.
    """
    run_dir = Path(run_dir)
    if cfg.cache_features:
        cached = CachedHeads(prm, feature_cache)
        model: Any = cached
        grads: Callable[[Sequence[Any], int], float] = cached.accumulate_grads
    else:
        model = prm
        grads = functools.partial(accumulate_grads, prm)
    order = pool_order([str(r["id"]) for r in pool], cfg.seed)
    batches = [[pool[i] for i in order[a:b]] for a, b in batch_bounds(len(order), cfg.batch_size)]
    fingerprint = _fingerprint(cfg, prm, labeler.name, [str(pool[i]["id"]) for i in order], counts)
    params = [p for p in prm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = _load_checkpoint(run_dir / "checkpoint", prm, opt, fingerprint)
    if state is None:
        state = {"round": 0, "history": []}
        if eval_rows:
            state["history"].append(
                {
                    "round": 0,
                    "labels_spent": 0,
                    "labeled": 0,
                    "unlabeled": 0,
                    "cost": LabelerCost().to_dict(),
                    **processbench_f1(model, eval_rows, cfg.score_batch_size, cfg.eval_threshold),
                }
            )
    bar = tqdm(
        total=len(batches),
        initial=state["round"],
        desc=f"active {cfg.strategy} seed {cfg.seed}",
        unit="round",
        disable=not progress,
    )
    for t in range(state["round"] + 1, len(batches) + 1):
        batch = batches[t - 1]
        # 1. score (no grad) and judge confidence
        scored = model.score_batch([r["prompt"] for r in batch], [r["steps"] for r in batch], cfg.score_batch_size)
        unc = [solution_uncertainty(s.per_head, cfg.p, cfg.std_threshold) for s in scored]
        # 2.-3. select and label, or take both from a saved round
        n_random = (
            counts[t - 1] if counts is not None and t - 1 < len(counts) else round(cfg.select_fraction * len(batch))
        )
        chosen = select(cfg.strategy, [u.confident for u in unc], n_random, random.Random(cfg.seed * 1_000_003 + t))
        saved = _label_round(
            run_dir / "labels" / f"round-{t:05d}.json", fingerprint, t, [batch[i] for i in chosen], problems, labeler
        )
        # 4. train on the labeled part only
        by_id = {str(r["id"]): r for r in batch}
        rows = [
            {
                "id": rid,
                "prompt": by_id[rid]["prompt"],
                "completions": by_id[rid]["steps"],
                "labels": saved["results"][rid]["labels"],
            }
            for rid in saved["selected"]
            if saved["results"][rid]["labels"] is not None
        ]
        losses = []
        if rows:
            examples = prepare_examples(prm, rows, "hard", prm.cfg.max_len)
            torch.manual_seed(cfg.seed * 1_000_003 + t)
            for group in opt.param_groups:
                group["lr"] = lr_at(t - 1, len(batches) - 1, cfg.lr, schedule=cfg.lr_schedule, final=cfg.lr_final)
            prm.train()
            for _ in range(cfg.grad_steps):
                opt.zero_grad(set_to_none=True)
                losses.append(grads(examples, cfg.micro_batch_size))
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
                opt.step()
            prm.eval()
        # 5. record, evaluate, checkpoint
        prev: dict[str, Any] = (
            state["history"][-1]
            if state["history"]
            else {"labels_spent": 0, "labeled": 0, "unlabeled": 0, "cost": LabelerCost().to_dict()}
        )
        n_lab = sum(res["labels"] is not None for res in saved["results"].values())
        record = {
            "round": t,
            "batch": len(batch),
            "selected": len(saved["selected"]),
            "selected_fraction": len(saved["selected"]) / len(batch),
            "confident_fraction": sum(u.confident for u in unc) / len(batch),
            "pseudo_label_acc": _pseudo_label_acc(batch, unc),
            "labels_spent": prev["labels_spent"] + len(saved["selected"]),
            "labeled": prev["labeled"] + n_lab,
            "unlabeled": prev["unlabeled"] + len(saved["selected"]) - n_lab,
            "cost": (LabelerCost(**prev["cost"]) + LabelerCost(**saved["cost"])).to_dict(),
            "loss": sum(losses) / len(losses) if losses else None,
        }
        if eval_rows and ((cfg.eval_every and t % cfg.eval_every == 0) or t == len(batches)):
            record.update(processbench_f1(model, eval_rows, cfg.score_batch_size, cfg.eval_threshold))
        state["round"] = t
        state["history"].append(record)
        if t % cfg.checkpoint_every == 0 or t == len(batches):
            _save_checkpoint(run_dir / "checkpoint", prm, opt, state, fingerprint)
        if on_round is not None:
            on_round(t, record)
        bar.update(1)
        bar.set_postfix(
            labels=record["labels_spent"], **({"f1": f"{record['f1']:.3f}"} if record.get("f1") is not None else {})
        )
    bar.close()
    history = state["history"]
    last = history[-1] if history else {}
    return {
        "history": history,
        "rounds": len(batches),
        "counts": [h["selected"] for h in history if h["round"] > 0],
        "curve": [h for h in history if "f1" in h],
        "labels_spent": last.get("labels_spent", 0),
        "labeled": last.get("labeled", 0),
        "unlabeled": last.get("unlabeled", 0),
        "cost": last.get("cost", LabelerCost().to_dict()),
        "final_f1": next((h["f1"] for h in reversed(history) if "f1" in h), None),
    }


# --------------------------------------------------------------------------- helpers


def _label_round(
    path: Path,
    fingerprint: str,
    t: int,
    chosen: Sequence[Mapping[str, Any]],
    problems: Mapping[str, Mapping[str, Any]],
    labeler: Labeler,
) -> dict[str, Any]:
    """Labels of round t: what the saved file holds, plus (and saved after each) any still missing.

    A saved selection is authoritative, so a replayed round never pays twice."""
    saved = load_state(path, fingerprint, _FRESH)
    if saved is None:
        saved = {"round": t, "selected": [str(r["id"]) for r in chosen], "results": {}, "cost": LabelerCost().to_dict()}
    rows = {str(r["id"]): r for r in chosen}
    for rid in saved["selected"]:
        if rid in saved["results"]:
            continue
        row = rows[rid]
        before = LabelerCost(**labeler.cost.to_dict())
        res = labeler.label(problems[row["problem_id"]], row["steps"])
        delta = LabelerCost(**labeler.cost.to_dict()) - before
        saved["results"][rid] = {"first_error": res.first_error, "labels": res.labels}
        saved["cost"] = (LabelerCost(**saved["cost"]) + delta).to_dict()
        save_state(path, fingerprint, saved)
    if not path.is_file():  # nothing selected: still record the round
        save_state(path, fingerprint, saved)
    return saved


def _pseudo_label_acc(batch: Sequence[Mapping[str, Any]], unc: Sequence[Any]) -> float | None:
    """Among confident solutions with gold labels: how often the pseudo first error is the gold one."""
    hits = [
        u.first_error == first_error_of(r["gold_labels"][: len(u.pseudo_labels)])
        for r, u in zip(batch, unc)
        if u.confident and r.get("gold_labels") is not None
    ]
    return sum(hits) / len(hits) if hits else None


def config_key(cfg: Any) -> dict[str, Any]:
    """asdict(cfg) without the schedule fields while the schedule is constant (they came after loop
    version 2 and change nothing then), so the saved rounds of a constant-rate run stay resumable.
    `cfg` is a LoopConfig or any dataclass with `lr_schedule` and `lr_final` (tasks.active keys
    its run directories by the ActiveConfig the same way)."""
    d = asdict(cfg)
    if cfg.lr_schedule == "constant":
        del d["lr_schedule"], d["lr_final"]
    return d


def _fingerprint(cfg: LoopConfig, prm: PRM, labeler: str, ids: Sequence[str], counts: Sequence[int] | None) -> str:
    # one JSON list, the bytes loop version 2 hashed, so its saved runs keep their fingerprints
    return job_key(
        [
            LOOP_VERSION,
            config_key(cfg),
            asdict(prm.cfg),
            labeler,
            list(ids),
            list(counts) if counts is not None else None,
        ]
    )


_FRESH = "use a fresh run_dir"


def _save_checkpoint(path: Path, prm: PRM, opt: torch.optim.Optimizer, state: dict[str, Any], fingerprint: str) -> None:
    def write_files(tmp: Path) -> None:
        save_model(prm, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")

    save_checkpoint(path, fingerprint, state, write_files)


def _load_checkpoint(path: Path, prm: PRM, opt: torch.optim.Optimizer, fingerprint: str) -> dict[str, Any] | None:
    state = load_checkpoint(path, fingerprint, _FRESH)
    if state is not None:
        load_model(prm, str(path / "model.safetensors"), device=str(next(prm.parameters()).device))
        opt.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    return state
