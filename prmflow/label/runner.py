"""Label a whole dataset of segmented solutions with MC rollouts (Math-Shepherd estimators).

For solution i with steps ending at token e_1 < ... < e_K, the prefix of step k is
`prompt_ids + token_ids[:e_k]`. Three rules keep the query cost down without changing any label:

1. **Exact last step.** The prefix of the last step of a finished solution is the solution
   itself, so its soft label is exactly 1[final answer right] with zero rollouts.
2. **Shared prefixes are labeled once.** Solutions from one EDU tree share prefixes; an
   estimate is keyed by the prefix's token ids and reused (rollouts are seeded by the prefix
   content, so reuse returns exactly what a fresh estimate would).
3. **Batched rollouts.** Prefixes go to the backend in chunks; each prefix is encoded once and
   its KV cache shared by its N rollouts.

`done` carries estimates already paid for, with their cost (e.g. loaded from a checkpoint after
a crash), and `on_chunk` is called after every chunk with the new (estimate, cost) pairs, so a
caller can persist them. Prefixes are chunked in a fixed order, so a resumed run cuts the
remaining work into the same chunks as an uninterrupted one and produces the same labels and
costs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from prmflow.label.mc import LabelCost, StepEstimate, answer_verifier, mc_estimates
from prmflow.policy.base import Backend, SamplingConfig, derive_seed


@dataclass(frozen=True)
class Solution:
    """What labeling needs to know about one segmented solution."""

    id: str
    prompt_ids: list[int]
    token_ids: list[int]
    ends: list[int]
    """exclusive token end of each step"""
    prefix_texts: list[str]
    """completion text up to the end of each step (where the final answer may already be)"""
    answer: str
    final_correct: bool
    finished: bool
    """the completion ended with EOS (not cut by the token budget)"""


@dataclass
class Labeled:
    """MC labels of one solution."""

    soft_labels: list[float]
    rollouts_per_step: list[int]
    """rollouts behind each label (0 = exact or reused)"""
    cost: LabelCost = field(default_factory=LabelCost)
    """what this solution paid (a reused prefix is paid by the first solution that needed it)"""


def prefix_key(ids: Sequence[int]) -> str:
    return hashlib.sha1(b"".join(int(t).to_bytes(4, "little", signed=True) for t in ids)).hexdigest()


def prefix_seed(seed: int, key: str) -> int:
    return derive_seed(seed, key)


Todo = dict[str, tuple[list[int], str, str]]
"""prefix key -> (prefix token ids, prefix text, gold answer), in the deterministic labeling order"""


def _is_exact(sol: Solution, k: int, exact_last: bool) -> bool:
    return exact_last and sol.finished and k == len(sol.ends) - 1


def plan_prefixes(
    solutions: Sequence[Solution], *, exact_last: bool = True, done: Collection[str] = ()
) -> tuple[Todo, dict[str, str]]:
    """Which prefixes need rollouts, each once, in a fixed order (solution order, then step
    order), skipping those in `done`; and the owner (first solution needing it) of every prefix."""
    todo: Todo = {}
    owner: dict[str, str] = {}
    for sol in solutions:
        if len(sol.ends) != len(sol.prefix_texts):
            raise ValueError(f"solution '{sol.id}': {len(sol.ends)} step ends but {len(sol.prefix_texts)} prefix texts")
        for k, end in enumerate(sol.ends):
            if _is_exact(sol, k, exact_last):
                continue
            key = prefix_key(sol.prompt_ids + sol.token_ids[:end])
            if key not in owner:
                owner[key] = sol.id
            if key not in done and key not in todo:
                todo[key] = (sol.prompt_ids + sol.token_ids[:end], sol.prefix_texts[k], sol.answer)
    return todo, owner


def chunk_keys(keys: Sequence[str], chunk_size: int) -> list[list[str]]:
    """Cut the ordered work list into backend calls of `chunk_size` prefixes."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [list(keys[i : i + chunk_size]) for i in range(0, len(keys), chunk_size)]


def roll_out_chunk(
    backend: Backend,
    items: Sequence[tuple[str, Sequence[int], str, str]],
    num_rollouts: int,
    sampling: SamplingConfig,
    *,
    real: bool = False,
) -> dict[str, tuple[StepEstimate, LabelCost]]:
    """One backend call: MC estimates of the (key, prefix ids, prefix text, answer) items, each
    with its share of the call's cost. A prefix's rollouts depend only on (seed, prefix).
    `real`: the answers are real problems' (prmflow.answers' final-answer verdict)."""
    verifiers = [answer_verifier(answer, [text], real=real) for _, _, text, answer in items]
    estimates, cost = mc_estimates(
        backend,
        [list(ids) for _, ids, _, _ in items],
        lambda i, text: verifiers[i](0, text),
        num_rollouts,
        sampling,
        seeds=[prefix_seed(sampling.seed, k) for k, _, _, _ in items],
    )
    share = _split_cost(cost, estimates)
    return {k: (est, c) for (k, _, _, _), est, c in zip(items, estimates, share, strict=True)}


def assemble(
    solutions: Sequence[Solution],
    estimates: dict[str, tuple[StepEstimate, LabelCost]],
    owner: dict[str, str],
    *,
    exact_last: bool = True,
) -> list[Labeled]:
    """Labels of every solution from the estimates of all its prefixes; a prefix's cost goes to
    its owner (see `plan_prefixes`), whoever paid for it and in whatever process."""
    memo = {k: est for k, (est, _) in estimates.items()}
    paid = {k: cost for k, (_, cost) in estimates.items()}
    out = []
    for sol in solutions:
        soft, n, cost = [], [], LabelCost()
        for k, end in enumerate(sol.ends):
            if _is_exact(sol, k, exact_last):
                soft.append(float(sol.final_correct))
                n.append(0)
                continue
            key = prefix_key(sol.prompt_ids + sol.token_ids[:end])
            est = memo[key]
            soft.append(est.soft_label)
            first_use = owner.get(key) == sol.id and key in paid
            n.append(est.num_rollouts if first_use else 0)
            if first_use:
                cost += paid.pop(key)
        out.append(Labeled(soft, n, cost))
    return out


def mc_label_solutions(
    backend: Backend,
    solutions: Sequence[Solution],
    num_rollouts: int,
    sampling: SamplingConfig,
    *,
    chunk_size: int = 64,
    exact_last: bool = True,
    done: dict[str, tuple[StepEstimate, LabelCost]] | None = None,
    on_chunk: Callable[[dict[str, tuple[StepEstimate, LabelCost]]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Labeled]:
    """Soft MC labels for every step of every solution (see module docstring)."""
    estimates: dict[str, tuple[StepEstimate, LabelCost]] = dict(done or {})
    # 1. which prefixes need rollouts, in a deterministic order, each once
    todo, owner = plan_prefixes(solutions, exact_last=exact_last, done=estimates)
    # 2. roll them out in chunks
    for chunk in chunk_keys(list(todo), chunk_size):
        new = roll_out_chunk(backend, [(k, *todo[k]) for k in chunk], num_rollouts, sampling)
        estimates.update(new)
        if on_chunk is not None:
            on_chunk(new)
        if progress is not None:
            progress(len(chunk))
    # 3. assemble per solution
    return assemble(solutions, estimates, owner, exact_last=exact_last)


def _split_cost(cost: LabelCost, estimates: Sequence[StepEstimate]) -> list[LabelCost]:
    """Attribute a chunk's cost to its prefixes: rollouts exactly, tokens and passes evenly."""
    n = len(estimates)
    out = []
    for i, est in enumerate(estimates):
        share = LabelCost(rollouts=est.num_rollouts)
        for name in ("generated_tokens", "forward_passes", "prefill_tokens"):
            total = getattr(cost, name)
            setattr(share, name, total // n + (1 if i < total % n else 0))
        out.append(share)
    return out
