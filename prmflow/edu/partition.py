r"""Entropy-driven step partitioning from EDU-PRM, "More Bang for the Buck: Process Reward Modeling
with Entropy-Driven Uncertainty" (arXiv 2503.22233).

A solution is cut into steps where the policy hesitated. Token t is an *anchor* when

    H_t > tau                                   (tau = entropy_threshold, paper: 1.0 nats)

and a step boundary goes *before* each anchor, so the uncertain token opens the next step.
A strategy decides which boundaries are *wanted*:

    fixed       the anchors, with tau = entropy_threshold.
    percentile  the anchors, with tau = the q-th percentile of this solution's entropies, by
                linear interpolation (numpy's default): sort h_(0) <= ... <= h_(n-1), p = q/100 (n-1),
                tau = h_(floor p) + (p - floor p) (h_(floor p + 1) - h_(floor p)).
                With distinct values, q = 90 makes the top 10% of tokens anchors.
    calibrated  the anchors, with tau from `calibrate` / `calibrate_threshold`: the tau whose
                mean number of steps over a sample is closest to target_mean_steps (written back
                into entropy_threshold, or passed as `partition(..., threshold=tau)`); when
                max_len's forced cuts would make most of those steps, the steps the anchors
                alone make (see `calibrate`).
    newline     Math-Shepherd baseline: a step ends after each token whose text contains "\n".
                Whitespace-only tokens after it (blank lines, indentation) stay with that step,
                so the next step opens at the next token with visible text, never blank.
    chunk       baseline: none wanted; every step is chunk_len tokens (rule 4 below).

One left-to-right scan then places the boundaries (`start` = first token of the current step):

    1. Token 0 opens step 0. There is never a boundary before token 0, nor an empty step.
    2. Snap: no boundary before token i when token i-1 has an empty span (it ended inside a
       multi-byte UTF-8 character); a wanted or forced boundary moves to the next token that
       starts a character. With `keep_numbers` (default off) the same holds before a token
       that continues a number (`number_tokens`: "2|60", "1,|234", "3.|5"), so no step
       starts mid-number; such a step may exceed max_len by the rest of the number.
    3. min_len: a wanted boundary before token i is dropped when i - start < min_len.
    4. max_len: a boundary is forced before token i when i - start >= max_len (chunk: when
       i - start >= min(chunk_len, max_len)). By rule 2 a step exceeds this only by the tokens
       that finish a split character (at most 3).
    5. A last step shorter than min_len is merged into the previous step if the merged step has
       at most max_len tokens; otherwise it is kept short.
    chunk ignores min_len (rules 3 and 5).

Step i covers the characters text[offsets[starts[i]][0] : offsets[starts[i+1]][0]]; step 0 starts
at char 0 and the last step ends at len(text), so "".join(steps) == text. A completion without
tokens has zero steps (the caller counts and skips it). Non-finite entropy raises ValueError.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

STRATEGIES = ("fixed", "percentile", "calibrated", "newline", "chunk")
Offsets = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class PartitionConfig:
    """Stage `partition`: how a completion is cut into steps."""

    strategy: str = "fixed"
    """`fixed`, `percentile`, `calibrated` (entropy anchors) or `newline`, `chunk` (baselines)"""
    entropy_threshold: float = 1.0
    """tau in nats for `fixed` (paper: 1.0); `calibrated` uses the fitted tau written here"""
    percentile: float = 90.0
    """q in [0, 100] for `percentile`: tau is the q-th percentile of each solution's entropies"""
    target_mean_steps: float = 6.0
    """mean steps per solution that `calibrate_threshold` fits tau to (`calibrated`)"""
    min_len: int = 2
    """fewest tokens in a step (not `chunk`); only the last step may be shorter"""
    max_len: int = 64
    """a boundary is forced when a step reaches this many tokens (all strategies)"""
    chunk_len: int = 16
    """tokens per step for `chunk`"""
    keep_numbers: bool = False
    """no step boundary inside a number (rule 2); off keeps the original cuts"""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not (math.isfinite(self.entropy_threshold) and self.entropy_threshold >= 0):
            raise ValueError(f"entropy_threshold must be finite and >= 0 nats, got {self.entropy_threshold}")
        if not 0 <= self.percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {self.percentile}")
        if not (math.isfinite(self.target_mean_steps) and self.target_mean_steps >= 1):
            raise ValueError(f"target_mean_steps must be finite and >= 1, got {self.target_mean_steps}")
        _check_lengths(self.min_len, self.max_len)
        if self.chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {self.chunk_len}")


@dataclass(frozen=True)
class Segmentation:
    """A completion cut into steps. Empty lists for a completion without tokens."""

    starts: list[int]
    """token index where each step starts (starts[0] == 0)"""
    ends: list[int]
    """exclusive token end of each step (ends[i] == starts[i+1], ends[-1] == number of tokens)"""
    spans: list[tuple[int, int]]
    """char span [start, end) of each step in the text; together they tile the text"""
    steps: list[str]
    """text of each step: text[span]"""
    anchors: list[int]
    """token indices with H_t > tau, before rules 1-5 (empty for newline and chunk)"""
    threshold: float | None
    """tau used (None for newline, chunk, and an empty completion under percentile)"""


# --------------------------------------------------------------------------- the rule


def anchors(entropy: Sequence[float], threshold: float) -> list[int]:
    """Token indices t with H_t > tau (strictly). Token 0 may be an anchor, though it never cuts.

    >>> anchors([0.1, 1.5, 0.2, 1.0, 2.0], 1.0)   # 1.0 does not exceed 1.0
    [1, 4]
    """
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    _check_finite(entropy)
    return [t for t, h in enumerate(entropy) if h > threshold]


def boundaries(
    entropy: Sequence[float],
    threshold: float,
    min_len: int,
    max_len: int,
    offsets: Offsets | None = None,
    blocked: Iterable[int] | None = None,
) -> list[int]:
    """Step starts for the anchors of `entropy` at tau = threshold, by rules 1-5.

    >>> H = [0.1, 1.5, 0.2, 0.3, 2.0, 0.1]          # anchors at 1 and 4
    >>> boundaries(H, 1.0, min_len=1, max_len=64)
    [0, 1, 4]
    >>> boundaries(H, 1.0, min_len=2, max_len=64)   # a cut at 1 would leave a 1-token step
    [0, 4]
    >>> boundaries(H, 1.0, min_len=1, max_len=64, blocked=[4])   # e.g. token 4 continues a number
    [0, 1, 5]

    `blocked`: token indices before which no boundary may go (rule 2, e.g. `number_tokens`).
    """
    _check_lengths(min_len, max_len)
    if offsets is not None and len(offsets) != len(entropy):
        raise ValueError(f"{len(offsets)} offsets but {len(entropy)} entropies")
    return _place(len(entropy), anchors(entropy, threshold), min_len, max_len, offsets, blocked)


def _place(
    n: int,
    wanted: Iterable[int],
    min_len: int,
    max_len: int,
    offsets: Offsets | None,
    blocked: Iterable[int] | None = None,
) -> list[int]:
    """Rules 1-5 in one scan over n tokens."""
    return _place_kinds(n, wanted, min_len, max_len, offsets, blocked)[0]


def _place_kinds(
    n: int,
    wanted: Iterable[int],
    min_len: int,
    max_len: int,
    offsets: Offsets | None,
    blocked: Iterable[int] | None = None,
) -> tuple[list[int], list[bool]]:
    """Rules 1-5 in one scan; also whether each boundary after token 0 was forced by max_len
    alone (a boundary that a wanted one also asked for counts as wanted)."""
    if n == 0:
        return [], []
    wanted = set(wanted)
    blocked = set(blocked) if blocked is not None else ()
    starts, forced, pending = [0], [], False  # pending: a wanted boundary waiting for a character start
    for i in range(1, n):
        pending = pending or i in wanted
        if offsets is not None and offsets[i - 1][0] == offsets[i - 1][1]:
            continue  # rule 2: token i-1 ended inside a character
        if i in blocked:
            continue  # rule 2: token i continues a number (keep_numbers)
        size = i - starts[-1]
        want = pending and size >= min_len  # rule 3
        if size >= max_len or want:  # rule 4
            starts.append(i)
            forced.append(not want)
        pending = False  # used here, or dropped by rule 3
    if len(starts) > 1 and n - starts[-1] < min_len and n - starts[-2] <= max_len:  # rule 5
        starts.pop()
        forced.pop()
    return starts, forced


def number_tokens(text: str, offsets: Offsets) -> list[int]:
    """Tokens i >= 1 that continue a number: the characters on both sides of the boundary
    before token i (at offsets[i][0]) belong to one number, i.e. digit|digit, digit|[.,]digit
    or digit[.,]|digit. A boundary there would cut the number (rule 2 with `keep_numbers`).

    >>> text = "x = 1,234.5 m"   # tokens "x", " =", " 1", ",", "23", "4", ".", "5", " m"
    >>> offs = [(0, 1), (1, 3), (3, 5), (5, 6), (6, 8), (8, 9), (9, 10), (10, 11), (11, 13)]
    >>> number_tokens(text, offs)
    [3, 4, 5, 6, 7]
    """
    out = []
    for i in range(1, len(offsets)):
        c = offsets[i][0]
        if 0 < c < len(text) and _joins_number(text, c):
            out.append(i)
    return out


def _joins_number(text: str, c: int) -> bool:
    left, right = text[c - 1], text[c]
    if left.isdigit() and right.isdigit():
        return True
    if left.isdigit() and right in ".," and text[c + 1 : c + 2].isdigit():
        return True
    return left in ".," and right.isdigit() and c >= 2 and text[c - 2].isdigit()


def percentile_threshold(entropy: Sequence[float], q: float) -> float:
    """The q-th percentile of `entropy` by linear interpolation (= numpy.percentile's default).

    >>> percentile_threshold([3, 9, 0, 5, 1, 8, 2, 7, 4, 6], 90)   # p = 0.9 * 9 = 8.1
    8.1
    """
    _check_finite(entropy)
    if not entropy:
        raise ValueError("percentile of an empty entropy list")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    h = sorted(float(x) for x in entropy)
    p = q / 100 * (len(h) - 1)
    lo = math.floor(p)
    hi = min(lo + 1, len(h) - 1)
    return h[lo] + (p - lo) * (h[hi] - h[lo])


def _after_newlines(text: str, offsets: Offsets) -> list[int]:
    """Newline baseline: the first token with visible text after a token containing "\\n".

    Empty-span tokens right before it hold the first bytes of its first character, so the
    boundary goes before them.
    """
    wanted, pending = [], False
    for i, (s, e) in enumerate(offsets):
        piece = text[s:e]
        if pending and piece.strip():
            j = i
            while j > 0 and offsets[j - 1][0] == offsets[j - 1][1]:
                j -= 1
            wanted.append(j)
            pending = False
        if "\n" in piece:
            pending = True
    return wanted


def partition(
    text: str, offsets: Offsets, entropy: Sequence[float], cfg: PartitionConfig, threshold: float | None = None
) -> Segmentation:
    """Cut one completion into steps. `threshold` overrides cfg.entropy_threshold (fixed, calibrated).

    Tokens "2", " +", " 3", " =", " 5", "\\n", "So", " 5"; anchors (H > 1.0) at 2 and 4:

    >>> text = "2 + 3 = 5\\nSo 5"
    >>> offsets = [(0, 1), (1, 3), (3, 5), (5, 7), (7, 9), (9, 10), (10, 12), (12, 14)]
    >>> entropy = [0.2, 0.1, 1.7, 0.1, 1.2, 0.0, 0.3, 0.2]
    >>> seg = partition(text, offsets, entropy, PartitionConfig(min_len=2))
    >>> seg.anchors, seg.starts, seg.steps
    ([2, 4], [0, 2, 4], ['2 +', ' 3 =', ' 5\\nSo 5'])
    >>> partition(text, offsets, entropy, PartitionConfig(strategy="newline", min_len=1)).steps
    ['2 + 3 = 5\\n', 'So 5']
    >>> partition(text, offsets, entropy, PartitionConfig(strategy="chunk", chunk_len=3)).starts
    [0, 3, 6]
    """
    n = len(entropy)
    if len(offsets) != n:
        raise ValueError(f"{len(offsets)} offsets but {n} entropies")
    _check_offsets(text, offsets)
    _check_finite(entropy)
    if threshold is not None:
        if cfg.strategy not in ("fixed", "calibrated"):
            raise ValueError(f"threshold is only used by fixed and calibrated, not {cfg.strategy!r}")
        cfg = dataclasses.replace(cfg, entropy_threshold=threshold)  # validates it

    tau, found = None, []
    if cfg.strategy in ("fixed", "calibrated"):
        tau = cfg.entropy_threshold
    elif cfg.strategy == "percentile" and n:
        tau = percentile_threshold(entropy, cfg.percentile)
    if tau is not None:
        found = anchors(entropy, tau)

    blocked = number_tokens(text, offsets) if cfg.keep_numbers else None
    if cfg.strategy == "chunk":
        starts = _place(n, (), 1, min(cfg.chunk_len, cfg.max_len), offsets, blocked)
    elif cfg.strategy == "newline":
        starts = _place(n, _after_newlines(text, offsets), cfg.min_len, cfg.max_len, offsets, blocked)
    else:
        starts = _place(n, found, cfg.min_len, cfg.max_len, offsets, blocked)

    chars = [0] + [offsets[s][0] for s in starts[1:]] + [len(text)] if n else []
    spans = list(zip(chars, chars[1:]))
    return Segmentation(
        starts=starts,
        ends=starts[1:] + [n] if n else [],
        spans=spans,
        steps=[text[a:b] for a, b in spans],
        anchors=found,
        threshold=tau,
    )


# --------------------------------------------------------------------------- calibration

COUNTS = ("auto", "all", "anchors")
Blocked = Sequence[Iterable[int]] | None


def mean_steps(
    entropies: Sequence[Sequence[float]],
    threshold: float,
    min_len: int,
    max_len: int | None,
    offsets: Sequence[Offsets] | None = None,
    blocked: Blocked = None,
) -> float:
    """Mean number of steps per non-empty solution at tau = threshold (rules 1-5).

    max_len None counts the steps the anchors alone make (no forced cuts: rule 4 off).
    """
    _check_lengths(min_len, min_len if max_len is None else max_len)
    return _sample_stats(entropies, threshold, min_len, max_len, offsets, blocked)[0]


def _sample_stats(
    entropies: Sequence[Sequence[float]],
    threshold: float,
    min_len: int,
    max_len: int | None,
    offsets: Sequence[Offsets | None] | None,
    blocked: Sequence[Iterable[int] | None] | None,
) -> tuple[float, int, int]:
    """(mean steps per non-empty solution, boundaries after token 0, of which forced by max_len)."""
    offsets = offsets if offsets is not None else [None] * len(entropies)
    blocked = blocked if blocked is not None else [None] * len(entropies)
    counts, cuts, forced = [], 0, 0
    for k, (h, o, b) in enumerate(zip(entropies, offsets, blocked, strict=True)):
        if o is not None and len(o) != len(h):
            raise ValueError(f"solution {k}: {len(o)} offsets but {len(h)} entropies")
        if not len(h):
            continue
        cap = max(len(h), min_len) if max_len is None else max_len  # a step never reaches len(h) tokens
        starts, kinds = _place_kinds(len(h), anchors(h, threshold), min_len, cap, o, b)
        counts.append(len(starts))
        cuts += len(kinds)
        forced += sum(kinds)
    if not counts:
        raise ValueError("no non-empty solutions")
    return sum(counts) / len(counts), cuts, forced


@dataclass(frozen=True)
class Calibration:
    """What `calibrate` fitted, and whether the fit did what was asked (for the stage to report)."""

    tau: float
    """the fitted entropy threshold in nats"""
    target_mean_steps: float
    """what was asked for"""
    counted: str
    """`all`: steps with max_len's forced cuts were fitted to the target (the classic fit);
    `anchors`: the steps the anchors alone make (forced cuts dominated the classic fit)"""
    mean_steps: float
    """mean steps per solution at tau, forced cuts included: what `partition` gives on the sample"""
    anchor_mean_steps: float
    """mean steps per solution at tau without max_len (the anchors' steps)"""
    forced_fraction: float
    """share of the boundaries at tau (after token 0) that only max_len forced; 0.0 without any"""
    met: bool
    """the counted mean is within `tolerance` steps of the target"""
    note: str
    """why `anchors` was counted, or why the target was not met; "" when neither"""
    n_solutions: int
    """non-empty solutions in the sample"""


def calibrate(
    entropies: Sequence[Sequence[float]],
    target_mean_steps: float,
    min_len: int,
    max_len: int,
    offsets: Sequence[Offsets] | None = None,
    *,
    blocked: Blocked = None,
    count: str = "auto",
    max_forced_fraction: float = 0.5,
    tolerance: float = 0.5,
) -> Calibration:
    """Fit tau so that the mean number of steps per solution of a sample is closest to the target.

    What is counted (`count`):

        all      every step, forced cuts included (the classic fit, `calibrate_threshold`
                 before `count` existed)
        anchors  the steps the anchors alone make: max_len off while counting
        auto     `all`, unless forced cuts are more than `max_forced_fraction` of the boundaries
                 at its tau; then `anchors` (the default)

    Why. max_len is a guard against runaway steps, not a signal of where the policy hesitated.
    On long real solutions (median entropy near 0, a heavy tail; 200-300 tokens, max_len 64)
    the forced cuts alone already give about the target number of steps, so the classic fit
    raises tau until hardly any anchor is left (3.0 nats, every cut mid-sentence or
    mid-number). Counting the anchors' steps instead fits tau to the policy's uncertainty;
    max_len still cuts afterwards wherever an anchor step runs too long, and `mean_steps`,
    `forced_fraction` report what that does. (Scaling max_len instead would trade one fixed
    length for another; steering by forced cuts cannot reach a target they already exceed.)

    Unchanged where the classic fit is not degenerate: `auto` returns the classic tau whenever
    forced cuts are at most `max_forced_fraction` of its boundaries (same candidates, same
    bisection, so the same float). Forced cuts of a solution of n tokens number at most
    (n - 1) // max_len, so forced_fraction <= mean_tokens / (max_len (mean_steps - 1)): a sample
    of at most 128 tokens per solution on average never switches at max_len 64 and 5 steps
    (the default synthetic world: 75.4k tokens over 1657 rows, 45 per solution, 160 at most).

    The switch is a threshold, so the fitted tau is not monotone in the target across it
    (real-shaped sample: target 5 switches, tau 2.05; target 6 keeps the classic fit, tau 2.26,
    45% forced). Where that matters (real data), pass `count="anchors"`: monotone, no switch.

    Monotone either way: raising tau only removes anchors and never adds a step (for any
    max_len, including none; see `calibrate_threshold`), so bisection over the candidate taus
    finds the closest count. `met` is False when no tau gets within `tolerance` steps (e.g. a
    target above what tau = 0 makes), and `note` says so.

    >>> long = [[0.01] * 30 + [2.0] + [0.01] * 150 + [2.5] + [0.01] * 19] * 3   # 201 tokens, 2 spikes
    >>> classic = calibrate(long, 3.0, min_len=2, max_len=64, count="all")   # no anchor left:
    >>> classic.tau, classic.mean_steps, classic.forced_fraction, classic.met  # 4 forced steps
    (3.5, 4.0, 1.0, False)
    >>> c = calibrate(long, 3.0, min_len=2, max_len=64)
    >>> c.counted, c.tau, c.anchor_mean_steps, c.met, round(c.forced_fraction, 2)   # the spikes cut
    ('anchors', 1.005, 3.0, True, 0.5)
    """
    if not (math.isfinite(target_mean_steps) and target_mean_steps >= 1):
        raise ValueError(f"target_mean_steps must be finite and >= 1, got {target_mean_steps}")
    if count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, got {count!r}")
    if not 0 <= max_forced_fraction <= 1:
        raise ValueError(f"max_forced_fraction must be in [0, 1], got {max_forced_fraction}")
    _check_lengths(min_len, max_len)
    if offsets is not None and len(offsets) != len(entropies):
        raise ValueError(f"{len(offsets)} offset lists but {len(entropies)} solutions")
    if blocked is not None and len(blocked) != len(entropies):
        raise ValueError(f"{len(blocked)} blocked lists but {len(entropies)} solutions")
    for k, h in enumerate(entropies):
        try:
            _check_finite(h)
        except ValueError as e:
            raise ValueError(f"solution {k}: {e}") from None
    if not any(len(h) for h in entropies):
        raise ValueError("no non-empty solutions to calibrate on")
    taus = _candidates(entropies)

    def fit(cap: int | None) -> int:
        return _bisect(
            taus, target_mean_steps, lambda tau: _sample_stats(entropies, tau, min_len, cap, offsets, blocked)[0]
        )

    counted, note = ("anchors" if count == "anchors" else "all"), ""
    k = fit(None if counted == "anchors" else max_len)
    steps, cuts, forced = _sample_stats(entropies, taus[k], min_len, max_len, offsets, blocked)
    if count == "auto" and cuts and forced / cuts > max_forced_fraction:
        note = (
            f"max_len={max_len} forced {forced / cuts:.0%} of the cuts at the classic fit "
            f"(tau {taus[k]:.4g}, {steps:.2f} steps); fitted the anchors' steps instead"
        )
        counted = "anchors"
        k = fit(None)
        steps, cuts, forced = _sample_stats(entropies, taus[k], min_len, max_len, offsets, blocked)
    anchor_steps = _sample_stats(entropies, taus[k], min_len, None, offsets, blocked)[0]
    achieved = anchor_steps if counted == "anchors" else steps
    met = abs(achieved - target_mean_steps) <= tolerance
    if not met:
        what = "anchor steps" if counted == "anchors" else "steps"
        note = (note + "; " if note else "") + (
            f"target {target_mean_steps} not met: the closest tau ({taus[k]:.4g}) gives {achieved:.2f} {what} "
            f"per solution (tolerance {tolerance})"
        )
    n = sum(1 for h in entropies if len(h))
    return Calibration(
        tau=taus[k],
        target_mean_steps=target_mean_steps,
        counted=counted,
        mean_steps=steps,
        anchor_mean_steps=anchor_steps,
        forced_fraction=forced / cuts if cuts else 0.0,
        met=met,
        note=note,
        n_solutions=n,
    )


def calibrate_threshold(
    entropies: Sequence[Sequence[float]],
    target_mean_steps: float,
    min_len: int,
    max_len: int,
    offsets: Sequence[Offsets] | None = None,
) -> float:
    """The tau of `calibrate` (count `auto`): mean steps per solution over a sample closest to
    `target_mean_steps`, forced cuts included unless they dominate.

    Raising tau only removes anchors, and removing anchors never adds a step (the k-th cut can
    only move later; rule 5 keeps this order), so mean steps is non-increasing in tau and
    constant between consecutive distinct entropies v_1 < ... < v_m of the sample. The candidates
    are one tau inside each such interval: the midpoints of 0 (entropy's floor), v_1, ..., v_m,
    and v_m + 1 (no anchors). Bisection over them costs O(log m) passes over the sample.
    Ties go to the larger tau (fewer steps). Empty solutions are skipped.

    >>> sample = [[0.1, 2.0, 0.1, 1.0, 0.1], [0.1, 0.5, 0.1, 3.0], [0.2, 0.2]]
    >>> calibrate_threshold(sample, 2.0, min_len=1, max_len=64)   # steps 3, 2, 1 for tau in [0.5, 1.0)
    0.75
    """
    return calibrate(entropies, target_mean_steps, min_len, max_len, offsets).tau


def _candidates(entropies: Sequence[Sequence[float]]) -> list[float]:
    """One tau inside each interval of constant step counts (see `calibrate_threshold`)."""
    values = sorted({0.0} | {float(x) for h in entropies for x in h})
    taus = []
    for a, b in zip(values, values[1:]):
        mid = (a + b) / 2
        taus.append(mid if mid < b else a)  # a and b adjacent floats: a itself is in [a, b)
    taus.append(values[-1] + 1.0)
    return taus


def _bisect(taus: Sequence[float], target: float, steps: Callable[[float], float]) -> int:
    """Index of the candidate whose (non-increasing) step count is closest to target; ties go
    to the larger tau."""
    cache: dict[int, float] = {}

    def steps_at(k: int) -> float:
        if k not in cache:
            cache[k] = steps(taus[k])
        return cache[k]

    lo, hi = 0, len(taus) - 1  # smallest k with steps_at(k) <= target (or the last k)
    while lo < hi:
        mid = (lo + hi) // 2
        if steps_at(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    if lo > 0 and steps_at(lo - 1) - target < target - steps_at(lo):
        lo -= 1
    return lo


# --------------------------------------------------------------------------- checks


def _check_finite(entropy: Sequence[float]) -> None:
    for t, h in enumerate(entropy):
        if not math.isfinite(h):
            raise ValueError(f"non-finite entropy at token {t}: {h}")


def _check_lengths(min_len: int, max_len: int) -> None:
    if min_len < 1:
        raise ValueError(f"min_len must be >= 1, got {min_len}")
    if max_len < min_len:
        raise ValueError(f"max_len must be >= min_len ({min_len}), got {max_len}")


def _check_offsets(text: str, offsets: Offsets) -> None:
    if not offsets and text:
        raise ValueError(f"text has {len(text)} characters but there are no tokens")
    prev_end = 0
    for i, (s, e) in enumerate(offsets):
        if not prev_end <= s <= e <= len(text):
            raise ValueError(
                f"offset of token {i} is ({s}, {e}): spans must be in order, within "
                f"the text ({len(text)} chars) and not overlap (previous end {prev_end})"
            )
        prev_end = e


if __name__ == "__main__":
    import re

    text = "Mia has 23 marbles.\nShe finds 14 more.\n\n23 + 14 = 37\nThe answer is 37"
    pieces = re.findall(r"\n|\s?[^\s]+", text)  # a toy tokenizer: words with their leading space
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    high = {" 14": 1.6, " +": 1.3, " 37": 2.1, " finds": 1.1}  # where a policy might hesitate
    entropy = [high.get(p, 0.2) for p in pieces]
    print("tokens:", " ".join(f"{p!r}:{h}" for p, h in zip(pieces, entropy)))
    sample = [entropy, entropy[:8], [0.3, 1.4, 0.2, 0.9, 1.8, 0.1]]
    tau = calibrate_threshold(sample, 3.0, min_len=2, max_len=64)
    for cfg in [
        PartitionConfig(),
        PartitionConfig(strategy="percentile", percentile=85),
        PartitionConfig(strategy="calibrated", entropy_threshold=tau),
        PartitionConfig(strategy="newline", min_len=1),
        PartitionConfig(strategy="chunk", chunk_len=5),
    ]:
        seg = partition(text, offsets, entropy, cfg)
        tau_s = "-" if seg.threshold is None else f"{seg.threshold:.2f}"
        print(f"\n{cfg.strategy} (tau {tau_s}, anchors {seg.anchors}, starts {seg.starts})")
        print(" | ".join(repr(s) for s in seg.steps))
