"""Confidence intervals over seeds: what every number in the experiment report carries.

With n seeds x_1..x_n, mean m and sample std s, the two-sided Student-t interval at level L is

    m +- t_{(1+L)/2, n-1} * s / sqrt(n)

It assumes roughly normal per-seed results; with 5 seeds that is the honest default (a
bootstrap over 5 values cannot see the tails either). One seed gives no interval (None).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from scipy.stats import t as student_t


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """{"mean", "lo", "hi", "half_width", "std", "n", "values"}; lo/hi/half_width None when n < 2.

    >>> r = mean_ci([1.0, 2.0, 3.0])
    >>> r["mean"], round(r["half_width"], 4), round(r["lo"], 4)
    (2.0, 2.4841, -0.4841)
    >>> mean_ci([0.5])["lo"] is None
    True
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci of no values")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"mean_ci of non-finite values: {xs}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return {"mean": m, "lo": None, "hi": None, "half_width": None, "std": None, "n": 1, "values": xs}
    s = statistics.stdev(xs)
    hw = float(student_t.ppf((1 + level) / 2, len(xs) - 1)) * s / math.sqrt(len(xs))
    return {"mean": m, "lo": m - hw, "hi": m + hw, "half_width": hw, "std": s, "n": len(xs), "values": xs}


def fmt(ci: dict[str, Any], digits: int = 3) -> str:
    """ "0.812 [0.790, 0.834]" (or just the mean for one seed).

    >>> fmt({"mean": 0.8123, "lo": 0.79, "hi": 0.8341, "n": 5})
    '0.812 [0.790, 0.834]'
    """
    if ci.get("lo") is None:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"
