r"""The learning-rate schedule of every training loop: linear warmup, then a decay to a final fraction.

Step s (0-based) of a schedule that decays until step `total` runs at

    s < warmup   peak * (s + 1) / warmup
    constant     peak
    linear       peak * (1 - (1 - final) * u)
    cosine       peak * (final + (1 - final) * (1 + cos(pi * u)) / 2)

with u = min(1, (s - warmup) / max(1, total - warmup)) the progress of the decay: the rate climbs
to peak over the first `warmup` steps, then falls from peak (u = 0) to final * peak (u = 1, at
step `total`) and stays there. The callers:

    prmflow.policy.tiny.train_lm, prmflow.prm.train   step s of `steps` optimizer steps,
        lr_at(s, steps, lr, warmup=warmup_steps): cosine to lr / 10, which the last step
        (s = steps - 1) stays just above.
    prmflow.active.loop                               round t (1-based) of T rounds,
        lr_at(t - 1, T - 1, lr, schedule=lr_schedule, final=lr_final): no warmup, the first
        round at lr and the last at exactly lr * lr_final (one round: lr).

Each expression is evaluated in the order written above, so the floats are the ones those loops
have always used (tests/test_schedule.py checks them bit for bit against the original formulas).

    >>> [round(lr_at(s, 6, 1.0, warmup=2), 4) for s in range(7)]   # warmup 0.5, 1; cosine to 0.1 at s = 6
    [0.5, 1.0, 1.0, 0.8682, 0.55, 0.2318, 0.1]
    >>> [round(lr_at(t - 1, 4 - 1, 1.0, schedule="linear"), 6) for t in (1, 2, 3, 4)]
    [1.0, 0.7, 0.4, 0.1]
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")
"""the decay shapes `lr_at` knows"""


def lr_at(
    step: int, total: int, peak: float, *, warmup: int = 0, schedule: str = "cosine", final: float = 0.1
) -> float:
    """The learning rate of 0-based `step`, decaying to `final * peak` at step `total` (module docstring).

    >>> lr_at(0, 10, 0.01, schedule="constant"), lr_at(9, 10, 0.01, schedule="constant", warmup=4)
    (0.01, 0.01)
    >>> lr_at(0, 0, 0.5, schedule="cosine", final=0.2)   # a one-step decay starts (and ends) at peak
    0.5
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    u = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return peak * (1 - (1 - final) * u)
    return peak * (final + (1 - final) * (1 + math.cos(math.pi * u)) / 2)
