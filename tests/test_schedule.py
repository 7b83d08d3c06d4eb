"""prmflow.schedule: the one learning-rate schedule gives every caller the float it had before.

The two reference functions are the formulas as they stood before the schedule module existed,
copied verbatim: `prmflow.policy.tiny.lr_at` (also used by prmflow.prm.train) and
`prmflow.active.loop.lr_at`. Equality is bit for bit (float.hex), because the default pipeline's
artifacts and a resumed ActPRM run depend on the exact rates.
"""

from __future__ import annotations

import doctest
import math
import random

import pytest

import prmflow.schedule
from prmflow.schedule import SCHEDULES, lr_at


def old_tiny_lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak`, then cosine decay to peak/10."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def old_active_lr_at(lr: float, lr_schedule: str, lr_final: float, t: int, rounds: int) -> float:
    """prmflow.active.loop.lr_at(cfg, t, rounds) with cfg's three fields passed in."""
    if lr_schedule == "constant" or rounds <= 1:
        return lr
    u = (t - 1) / (rounds - 1)
    if lr_schedule == "linear":
        return lr * (1 - (1 - lr_final) * u)
    return lr * (lr_final + (1 - lr_final) * (1 + math.cos(math.pi * u)) / 2)


RNG = random.Random(0)
PEAKS = [1.0, 1e-3, 3e-3, 5e-4, 0.01, 2e-5, 0.3] + [RNG.uniform(1e-6, 1.0) for _ in range(5)]
FINALS = [0.0, 0.1, 0.05, 0.2, 0.25, 0.3, 0.5, 0.9, 1.0] + [RNG.random() for _ in range(8)]


def test_doctests():
    failed, attempted = doctest.testmod(prmflow.schedule)
    assert attempted >= 4 and failed == 0


def test_training_loops_get_the_old_warmup_cosine_bit_for_bit():
    # policy (train_lm) and PRM (prm.train): lr_at(step, steps, lr, warmup=warmup_steps)
    cases = [(total, warmup) for total in (1, 2, 3, 7, 10, 100, 1200, 2500) for warmup in (0, 1, 5, 20, 100, 3000)]
    checked = 0
    for peak in PEAKS:
        for total, warmup in cases:
            for step in range(total + 3):  # a few steps past the end too (the decay stays at its floor)
                old = old_tiny_lr_at(step, total, warmup, peak)
                new = lr_at(step, total, peak, warmup=warmup)
                assert new.hex() == old.hex(), (peak, total, warmup, step, new, old)
                checked += 1
    assert checked > 100_000


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_active_rounds_get_the_old_round_schedule_bit_for_bit(schedule):
    # prmflow.active.loop: round t (1-based) of T is lr_at(t - 1, T - 1, lr, schedule=..., final=...)
    for lr in PEAKS:
        for final in FINALS:
            for rounds in [*range(1, 80), 128, 333, 1000]:
                for t in range(1, rounds + 1):
                    old = old_active_lr_at(lr, schedule, final, t, rounds)
                    new = lr_at(t - 1, rounds - 1, lr, schedule=schedule, final=final)
                    assert new.hex() == old.hex(), (lr, final, rounds, t, new, old)


def test_first_round_is_lr_and_last_is_lr_times_final():
    # hand-checkable ends of the round schedule: round 1 of 5 at lr, round 5 at lr * final
    assert lr_at(0, 4, 0.01, schedule="cosine", final=0.1) == 0.01
    assert lr_at(4, 4, 0.01, schedule="linear", final=0.1) == pytest.approx(0.001)
    assert lr_at(4, 4, 0.01, schedule="cosine", final=0.1) == pytest.approx(0.001)
    assert lr_at(2, 4, 1.0, schedule="linear", final=0.0) == 0.5  # halfway down a linear decay to 0


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_at(0, 10, 1.0, schedule="step")
