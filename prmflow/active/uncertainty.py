r"""Which solutions is the ensemble PRM sure about? ActPRM's selection rule.

ActPRM (Duan et al., "Efficient Process Reward Model Training via Active Learning",
arXiv 2504.10559) scores each solution with an ensemble of `num_heads` heads on one backbone
and sends a solution to the (expensive) labeler only when the ensemble is uncertain about it.
From the per-head step probabilities P (shape `(num_heads, num_steps)`), per step k:

    head_mean_k = (1/E) sum_h P_{h,k}
    head_std_k  = sqrt( (1/E) sum_h (P_{h,k} - head_mean_k)^2 )          (population std)
    pseudo_k    = head_mean_k >= 0.5                                      (pseudo-label)
    f           = min{k : pseudo_k = False}, or num_steps if none         (first predicted error)
    mask_k      = k > f                       (steps AFTER the first predicted error are ignored;
                                               the first predicted error itself is kept)

and the solution is *confident* iff every unmasked step is confident on both axes:

    confident = AND_{k : not mask_k} [ head_std_k <= std_threshold                 (epistemic)
                                       and (head_mean_k >= p or head_mean_k <= 1 - p) ]  (aleatoric)

Both comparisons are inclusive: a step exactly at `std_threshold`, at `p` or at `1 - p` is
confident. A solution with no steps is vacuously confident. Confident solutions are not
labeled and not trained on; uncertain ones are labeled and only they enter the loss.

Differences from the public ActPRM code (sail-sg/ActivePRM `active_sft_trainer.py`): it uses
`torch.std` (Bessel-corrected, sqrt(E/(E-1)) larger: x1.41 for E = 2, x1.15 for E = 4), we use
the population std that `PRM.score_batch` reports as `head_std`; and its released scripts run
with p_threshold = 5, std_threshold = -1, i.e. selection switched off. Ours selects.

    >>> u = solution_uncertainty([[0.95, 0.02, 0.5], [0.96, 0.03, 0.9]])   # 2 heads, 3 steps
    >>> u.pseudo_labels, u.mask     # step 1 is the first predicted error, step 2 is masked
    ([True, False, True], [False, False, True])
    >>> [round(s, 6) for s in u.head_std], u.confident    # stds 0.005, 0.005 (step 2 ignored)
    ([0.005, 0.005, 0.2], True)
    >>> solution_uncertainty([[0.95, 0.5], [0.96, 0.6]]).confident   # step 1 mean 0.55: unsure
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Uncertainty:
    """The ensemble's verdict on one solution."""

    confident: bool
    """every unmasked step has head_std <= std_threshold and head_mean >= p or <= 1 - p"""
    pseudo_labels: list[bool]
    """head_mean >= 0.5 per step"""
    mask: list[bool]
    """True for steps after the first predicted error (not judged)"""
    head_mean: list[float]
    """mean over heads per step"""
    head_std: list[float]
    """population std over heads per step"""

    @property
    def first_error(self) -> int:
        """The first predicted error (first False pseudo-label), -1 if none."""
        return next((k for k, ok in enumerate(self.pseudo_labels) if not ok), -1)


def solution_uncertainty(
    per_head: Sequence[Sequence[float]] | torch.Tensor, p: float = 0.9, std_threshold: float = 0.01
) -> Uncertainty:
    """Apply the rule of the module docstring to one solution's `(num_heads, num_steps)` probabilities.

    Exactly at the thresholds counts as confident (`>= p`, `<= 1 - p`, `<= std_threshold`):

    >>> solution_uncertainty([[0.75], [0.75]], p=0.75, std_threshold=0.0).confident
    True
    >>> solution_uncertainty([[0.5, 0.0], [1.0, 0.0]], p=0.5, std_threshold=0.25).confident  # std 0.25
    True
    """
    probs = torch.as_tensor(per_head, dtype=torch.float64)  # (E, S)
    if probs.dim() != 2 or probs.shape[0] < 1:
        raise ValueError(f"per_head must be (num_heads >= 1, num_steps), got shape {tuple(probs.shape)}")
    if not torch.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ValueError("per_head probabilities must be finite and in [0, 1]")
    if probs.shape[1] == 0:
        return Uncertainty(True, [], [], [], [])
    head_mean = probs.mean(0)  # (S,)
    head_std = probs.std(0, correction=0)  # (S,)
    pseudo = head_mean >= 0.5  # (S,)
    errors = (~pseudo).nonzero()
    first = int(errors[0]) if len(errors) else probs.shape[1]
    mask = torch.arange(probs.shape[1]) > first  # (S,)
    step_ok = (head_std <= std_threshold) & ((head_mean >= p) | (head_mean <= 1 - p))  # (S,)
    confident = bool((step_ok | mask).all())
    return Uncertainty(confident, pseudo.tolist(), mask.tolist(), head_mean.tolist(), head_std.tolist())
