"""EDU-PRM step partitioning: hand-checked boundaries for every strategy and rule, plus properties."""

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prmflow.edu.partition
from prmflow.edu.partition import (
    PartitionConfig,
    anchors,
    boundaries,
    calibrate,
    calibrate_threshold,
    mean_steps,
    number_tokens,
    partition,
    percentile_threshold,
)


def tokenize(pieces):
    """(text, offsets) for a list of token strings (every token holds whole characters)."""
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    return "".join(pieces), offsets


def byte_tokenize(text, cuts):
    """Offsets for a tokenization of text's UTF-8 bytes at byte positions `cuts`, as the backend
    reports them: a token gets the characters it completes (empty span inside a character)."""
    data = text.encode()
    ends = sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    offsets, prev = [], 0
    for b in ends:
        done = len(data[:b].decode("utf-8", errors="ignore"))  # characters complete by byte b
        offsets.append((prev, done))
        prev = done
    return offsets


def test_docstring_examples():
    failed, attempted = doctest.testmod(prmflow.edu.partition)
    assert attempted > 0 and failed == 0


# --------------------------------------------------------------------------- fixed


def test_anchors_are_strictly_above_threshold():
    # 1.5 and 2.0 exceed 1.0; 1.0 itself does not; token 0 is reported though it never cuts
    assert anchors([1.2, 1.5, 0.2, 1.0, 2.0], 1.0) == [0, 1, 4]


def test_fixed_min_len_skips_a_short_step():
    # H = [0.1, 1.5, 0.2, 0.3, 2.0, 0.1]; threshold 1.0 -> anchors at 1 and 4
    H = [0.1, 1.5, 0.2, 0.3, 2.0, 0.1]
    assert boundaries(H, 1.0, min_len=1, max_len=64) == [0, 1, 4]
    # min_len 2 skips the boundary at 1 (step would have 1 token) -> starts [0, 4]
    assert boundaries(H, 1.0, min_len=2, max_len=64) == [0, 4]
    # min_len 5: the cut at 4 would leave a 4-token step -> one step
    assert boundaries(H, 1.0, min_len=5, max_len=64) == [0]


def test_fixed_partition_steps_and_spans():
    # tokens "x"," =","  3","\n","y"; anchor at 2 (H 1.4) -> steps "x =" and "  3\ny"
    text, offsets = tokenize(["x", " =", "  3", "\n", "y"])
    seg = partition(text, offsets, [0.0, 0.3, 1.4, 0.1, 0.2], PartitionConfig(min_len=2))
    assert seg.starts == [0, 2] and seg.ends == [2, 5]
    assert seg.spans == [(0, 3), (3, 8)]
    assert seg.steps == ["x =", "  3\ny"]
    assert seg.anchors == [2] and seg.threshold == 1.0


def test_no_anchor_gives_one_step():
    text, offsets = tokenize(["a", "b", "c", "d"])
    seg = partition(text, offsets, [0.5, 0.9, 1.0, 0.0], PartitionConfig())
    assert seg.starts == [0] and seg.steps == ["abcd"] and seg.anchors == []


def test_threshold_override():
    # H = [0.1, 0.8, 0.1, 0.9, 0.1]: no anchor at the config's 1.0, anchors 1 and 3 at 0.5
    text, offsets = tokenize(list("abcde"))
    H = [0.1, 0.8, 0.1, 0.9, 0.1]
    cfg = PartitionConfig(strategy="calibrated", min_len=1)
    assert partition(text, offsets, H, cfg).starts == [0]
    seg = partition(text, offsets, H, cfg, threshold=0.5)
    assert seg.starts == [0, 1, 3] and seg.threshold == 0.5
    with pytest.raises(ValueError, match="threshold"):
        partition(text, offsets, H, PartitionConfig(strategy="newline"), threshold=0.5)
    with pytest.raises(ValueError, match="entropy_threshold"):
        partition(text, offsets, H, cfg, threshold=-1.0)


# --------------------------------------------------------------------------- min_len / max_len


def test_short_last_step_is_merged_if_it_fits():
    # H = [0.1, 0.2, 0.3, 2.0]: anchor 3 cuts a 3-token step, leaving a 1-token last step
    H = [0.1, 0.2, 0.3, 2.0]
    assert boundaries(H, 1.0, min_len=1, max_len=64) == [0, 3]
    # min_len 2: the last step (1 token) merges back: 4 tokens <= max_len -> one step
    assert boundaries(H, 1.0, min_len=2, max_len=64) == [0]
    # max_len 3 forces the cut at 3 anyway, and merging would make 4 > 3 tokens -> kept short
    assert boundaries(H, 1.0, min_len=2, max_len=3) == [0, 3]


def test_max_len_forces_boundaries():
    # 10 calm tokens, max_len 4 -> cuts at 4 and 8; the last step has 2 tokens
    H = [0.1] * 10
    assert boundaries(H, 1.0, min_len=2, max_len=4) == [0, 4, 8]
    # min_len 3: the 2-token last step would merge into 6 > 4 tokens -> kept
    assert boundaries(H, 1.0, min_len=3, max_len=4) == [0, 4, 8]
    # an anchor resets the count: anchor at 3 -> cuts at 3, then 3 + 4 = 7
    H[3] = 2.0
    assert boundaries(H, 1.0, min_len=1, max_len=4) == [0, 3, 7]


# --------------------------------------------------------------------------- percentile


def test_percentile_threshold_per_solution():
    # H = [3, 9, 0, 5, 1, 8, 2, 7, 4, 6]; q = 75: p = 0.75 * 9 = 6.75, sorted[6] = 6, sorted[7] = 7
    # -> tau = 6 + 0.75 * 1 = 6.75; anchors: 9 (token 1), 8 (token 5), 7 (token 7)
    H = [3.0, 9.0, 0.0, 5.0, 1.0, 8.0, 2.0, 7.0, 4.0, 6.0]
    text, offsets = tokenize(list("abcdefghij"))
    seg = partition(text, offsets, H, PartitionConfig(strategy="percentile", percentile=75, min_len=2))
    assert seg.threshold == pytest.approx(6.75)
    assert seg.anchors == [1, 5, 7]
    # min_len 2 drops the cut at 1 -> steps [0, 5), [5, 7), [7, 10)
    assert seg.starts == [0, 5, 7] and seg.steps == ["abcde", "fg", "hij"]
    # q = 90: tau = 8.1 -> only the top 10% (token 1) is an anchor
    assert partition(text, offsets, H, PartitionConfig(strategy="percentile", min_len=1)).anchors == [1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 20), min_size=1, max_size=30), st.floats(0, 100))
def test_percentile_equals_numpy(H, q):
    assert percentile_threshold(H, q) == pytest.approx(float(np.percentile(H, q)), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- calibrated

# steps per solution (min_len 1) by tau interval:
#   tau in      [0, 0.1)  [0.1, 0.2)  [0.2, 0.5)  [0.5, 1)  [1, 2)  [2, 3)  [3, inf)
#   A               5         3           3          3        2       1        1
#   B               4         3           3          2        2       2        1
#   C               2         2           1          1        1       1        1
#   mean          11/3       8/3         7/3         2       5/3     4/3       1
SAMPLE = [[0.1, 2.0, 0.1, 1.0, 0.1], [0.1, 0.5, 0.1, 3.0], [0.2, 0.2]]


def test_calibrate_hits_target():
    tau = calibrate_threshold(SAMPLE, 2.0, min_len=1, max_len=64)
    assert tau == pytest.approx(0.75)  # midpoint of [0.5, 1.0)
    assert mean_steps(SAMPLE, tau, 1, 64) == pytest.approx(2.0)
    # 1.9 is closer to 2 than to 5/3; 1.7 is closer to 5/3 -> midpoint of [1, 2)
    assert calibrate_threshold(SAMPLE, 1.9, 1, 64) == pytest.approx(0.75)
    assert calibrate_threshold(SAMPLE, 1.7, 1, 64) == pytest.approx(1.5)
    # beyond the reachable range: every token an anchor (tau between 0 and 0.1) / none (3 + 1)
    assert calibrate_threshold(SAMPLE, 10.0, 1, 64) == pytest.approx(0.05)
    assert calibrate_threshold(SAMPLE, 1.0, 1, 64) == pytest.approx(4.0)
    # empty solutions are skipped
    assert calibrate_threshold(SAMPLE + [[]], 2.0, 1, 64) == pytest.approx(0.75)


def test_calibrate_is_monotone_and_usable():
    taus = [calibrate_threshold(SAMPLE, t, 1, 64) for t in (1.0, 1.4, 1.7, 2.0, 2.4, 2.7, 3.7)]
    assert taus == sorted(taus, reverse=True)  # more steps wanted -> lower tau
    means = [mean_steps(SAMPLE, t, 1, 64) for t in np.linspace(0, 4, 81)]
    assert all(a >= b for a, b in zip(means, means[1:]))
    assert means[0] == pytest.approx(11 / 3) and means[-1] == 1.0
    PartitionConfig(strategy="calibrated", entropy_threshold=taus[0])  # a valid config value


def test_calibrate_with_min_len_on_a_bigger_sample():
    # 200 random solutions: the fitted tau lands within half a step of the target
    rng = np.random.default_rng(0)
    sample = [rng.exponential(0.6, size=rng.integers(20, 80)).tolist() for _ in range(200)]
    for target in (3.0, 6.0, 10.0):
        tau = calibrate_threshold(sample, target, min_len=2, max_len=64)
        assert abs(mean_steps(sample, tau, 2, 64) - target) < 0.5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 3), max_size=40), st.floats(0, 3), st.floats(0, 3), st.integers(1, 5), st.integers(0, 10))
def test_steps_never_increase_with_threshold(H, t1, t2, min_len, extra):
    # the premise of calibration, for every solution and every min_len / max_len
    lo, hi = sorted((t1, t2))
    max_len = min_len + extra
    assert len(boundaries(H, hi, min_len, max_len)) <= len(boundaries(H, lo, min_len, max_len))


# --------------------------------------------------------------------------- baselines


def test_newline_blank_lines_stay_with_their_step():
    # "a", "\n", "\n", "b", "\n", "  ", "c": steps end after newlines; the blank line and the
    # indentation stay with the step before, so the next steps open at "b" (3) and "c" (6)
    text, offsets = tokenize(["a", "\n", "\n", "b", "\n", "  ", "c"])
    seg = partition(text, offsets, [0.0] * 7, PartitionConfig(strategy="newline", min_len=1))
    assert seg.starts == [0, 3, 6]
    assert seg.steps == ["a\n\n", "b\n  ", "c"]
    assert seg.anchors == [] and seg.threshold is None


def test_newline_inside_a_token_and_min_len():
    # "x=1.\n" is one token; the next step starts after it, at "y"
    text, offsets = tokenize(["x", "=1.\n", "y", "=2\n", "z"])
    cfg = PartitionConfig(strategy="newline", min_len=1)
    assert partition(text, offsets, [0.0] * 5, cfg).steps == ["x=1.\n", "y=2\n", "z"]
    # min_len 3: the cut at 2 is too early, the cut at 4 makes a 4-token step, and the
    # 1-token last step "z" merges back -> one step
    assert partition(text, offsets, [0.0] * 5, PartitionConfig(strategy="newline", min_len=3)).starts == [0]


def test_newline_step_starts_at_a_split_character():
    # "a\né" with é split over two byte tokens: (2, 2) holds its first byte; the step opens there
    text = "a\né"
    offsets = byte_tokenize(text, [1, 2, 3])
    assert offsets == [(0, 1), (1, 2), (2, 2), (2, 3)]
    seg = partition(text, offsets, [0.0] * 4, PartitionConfig(strategy="newline", min_len=1))
    assert seg.starts == [0, 2] and seg.steps == ["a\n", "é"]


def test_chunk():
    text, offsets = tokenize(list("abcdefghij"))
    # chunks of 4 tokens; min_len (3) does not apply to chunk, so the 2-token tail is kept
    seg = partition(text, offsets, [5.0] * 10, PartitionConfig(strategy="chunk", chunk_len=4, min_len=3))
    assert seg.starts == [0, 4, 8] and seg.steps == ["abcd", "efgh", "ij"] and seg.threshold is None
    # max_len 3 < chunk_len 4 wins
    cfg = PartitionConfig(strategy="chunk", chunk_len=4, min_len=1, max_len=3)
    assert partition(text, offsets, [0.0] * 10, cfg).starts == [0, 3, 6, 9]


# --------------------------------------------------------------------------- UTF-8 snapping


def test_boundary_snaps_to_a_character_start():
    # "aébc": é is split over tokens 1 (empty span, first byte) and 2 (completes it)
    text = "aébc"
    offsets = [(0, 1), (1, 1), (1, 2), (2, 3), (3, 4)]
    assert byte_tokenize(text, [1, 2, 3, 4]) == offsets
    # anchor at 2 is inside é -> moves to 3, the next token that starts a character
    seg = partition(text, offsets, [0.1, 0.1, 2.0, 0.1, 0.1], PartitionConfig(min_len=1))
    assert seg.anchors == [2] and seg.starts == [0, 3] and seg.steps == ["aé", "bc"]
    # anchor at 1 opens é (token 0 is whole) -> a valid boundary
    assert partition(text, offsets, [0.1, 2.0, 0.1, 0.1, 0.1], PartitionConfig(min_len=1)).steps == ["a", "ébc"]
    # max_len 2 would force a cut at 2; snapped to 3 (the step finishes é with 3 tokens)
    assert boundaries([0.1] * 5, 1.0, 1, 2, offsets) == [0, 3]


# --------------------------------------------------------------------------- edge cases and errors


def test_empty_completion_has_zero_steps():
    seg = partition("", [], [], PartitionConfig())
    assert seg.starts == seg.ends == seg.spans == seg.steps == seg.anchors == []
    assert seg.threshold == 1.0
    assert partition("", [], [], PartitionConfig(strategy="percentile")).threshold is None
    with pytest.raises(ValueError, match="no tokens"):
        partition("abc", [], [], PartitionConfig())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("strategy", ["fixed", "percentile", "newline", "chunk"])
def test_non_finite_entropy_raises_with_index(bad, strategy):
    text, offsets = tokenize(["a", "b", "c"])
    with pytest.raises(ValueError, match="token 1"):
        partition(text, offsets, [0.1, bad, 0.2], PartitionConfig(strategy=strategy))
    with pytest.raises(ValueError, match="solution 1: non-finite entropy at token 2"):
        calibrate_threshold([[0.1], [0.1, 0.2, bad]], 2.0, 1, 64)


def test_bad_inputs_raise():
    text, offsets = tokenize(["a", "b", "c"])
    with pytest.raises(ValueError, match="3 offsets but 2 entropies"):
        partition(text, offsets, [0.1, 0.2], PartitionConfig())
    with pytest.raises(ValueError, match="offsets but"):
        boundaries([0.1, 0.2], 1.0, 1, 4, offsets)
    with pytest.raises(ValueError, match="token 1"):  # overlapping spans
        partition(text, [(0, 2), (1, 2), (2, 3)], [0.1] * 3, PartitionConfig())
    with pytest.raises(ValueError, match="token 2"):  # beyond the text
        partition(text, [(0, 1), (1, 2), (2, 4)], [0.1] * 3, PartitionConfig())
    with pytest.raises(ValueError, match="no non-empty"):
        calibrate_threshold([[], []], 2.0, 1, 64)


@pytest.mark.parametrize(
    "field, value",
    [
        ("strategy", "entropy"),
        ("entropy_threshold", -0.1),
        ("entropy_threshold", math.nan),
        ("percentile", 101.0),
        ("target_mean_steps", 0.5),
        ("min_len", 0),
        ("max_len", 1),
        ("chunk_len", 0),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        PartitionConfig(**{field: value})  # max_len 1 < default min_len 2


# --------------------------------------------------------------------------- properties

TEXT = st.text(
    st.one_of(st.sampled_from("ab1 =+.\n"), st.characters(min_codepoint=0x80, exclude_categories=("Cs",))),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    TEXT,
    st.data(),
    st.sampled_from(["fixed", "percentile", "newline", "chunk"]),
    st.integers(1, 4),
    st.integers(0, 6),
    st.integers(1, 6),
)
def test_steps_tile_the_text(text, data, strategy, min_len, extra, chunk_len):
    n_bytes = len(text.encode())
    cuts = data.draw(st.lists(st.integers(1, max(1, n_bytes - 1)), max_size=n_bytes))
    offsets = byte_tokenize(text, cuts)
    H = data.draw(st.lists(st.floats(0, 3), min_size=len(offsets), max_size=len(offsets)))
    cfg = PartitionConfig(
        strategy=strategy,
        min_len=min_len,
        max_len=min_len + extra,
        chunk_len=chunk_len,
        percentile=data.draw(st.floats(0, 100)),
    )
    seg = partition(text, offsets, H, cfg)

    assert "".join(seg.steps) == text
    assert all(seg.steps)  # no step without text
    assert seg.starts[0] == 0 and seg.ends == seg.starts[1:] + [len(H)]
    assert all(a < b for a, b in zip(seg.starts, seg.ends))  # no empty step
    for s in seg.starts[1:]:  # never inside a character
        assert offsets[s - 1][0] < offsets[s - 1][1]
    cap = min(chunk_len, cfg.max_len) if strategy == "chunk" else cfg.max_len
    sizes = [b - a for a, b in zip(seg.starts, seg.ends)]
    assert all(size <= cap + 3 for size in sizes)  # + at most 3 tokens that finish a character
    if strategy != "chunk":
        assert all(size >= min_len for size in sizes[:-1])


# --------------------------------------------------------------------------- calibration on real-shaped entropy


def classic_place(n, wanted, min_len, max_len, offsets):
    """The scan of rules 1-5 as it was before `blocked` and forced-cut counting (reference)."""
    if n == 0:
        return []
    wanted = set(wanted)
    starts, pending = [0], False
    for i in range(1, n):
        pending = pending or i in wanted
        if offsets is not None and offsets[i - 1][0] == offsets[i - 1][1]:
            continue
        size = i - starts[-1]
        if size >= max_len or (pending and size >= min_len):
            starts.append(i)
        pending = False
    if len(starts) > 1 and n - starts[-1] < min_len and n - starts[-2] <= max_len:
        starts.pop()
    return starts


def classic_threshold(entropies, target, min_len, max_len):
    """calibrate_threshold as it was before `calibrate` (reference): the classic fit of all steps."""

    def steps(tau):
        counts = [
            len(classic_place(len(h), [t for t, x in enumerate(h) if x > tau], min_len, max_len, None))
            for h in entropies
            if len(h)
        ]
        return sum(counts) / len(counts)

    values = sorted({0.0} | {float(x) for h in entropies for x in h})
    taus = [(a + b) / 2 if (a + b) / 2 < b else a for a, b in zip(values, values[1:])] + [values[-1] + 1.0]
    lo, hi = 0, len(taus) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if steps(taus[mid]) <= target:
            hi = mid
        else:
            lo = mid + 1
    if lo > 0 and steps(taus[lo - 1]) - target < target - steps(taus[lo]):
        lo -= 1
    return taus[lo]


def real_shaped(n_solutions, seed):
    """Entropies like a pretrained policy's on GSM8K: 80% of tokens near 0 nats, a heavy tail
    (median ~0.02, p90 ~1.0, p99 ~2.2), 200-300 tokens per solution."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_solutions):
        n = int(rng.integers(200, 300))
        h = np.where(rng.random(n) < 0.2, rng.gamma(3.0, 0.37, n), rng.exponential(0.02, n))
        out.append(h.round(4).tolist())
    return out


def test_real_shaped_sample_has_the_reported_shape():
    h = np.concatenate(real_shaped(60, 0))
    assert np.median(h) < 0.05 and 0.8 < np.percentile(h, 90) < 1.2 and 1.9 < np.percentile(h, 99) < 2.6


def test_classic_fit_degenerates_on_real_shaped_entropy():
    # the bug: max_len's forced cuts alone give ~4.5 steps, so fitting all steps to 5 leaves
    # almost no anchor (tau ~3 nats, as measured on real tokens) and most cuts forced
    sample = real_shaped(60, 0)
    c = calibrate(sample, 5.0, min_len=2, max_len=64, count="all")
    assert c.tau == classic_threshold(sample, 5.0, 2, 64) and c.tau > 2.5
    assert c.forced_fraction > 0.5 and c.anchor_mean_steps < 2.5


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [4.0, 5.0, 6.0])
def test_calibrated_cuts_on_real_shaped_entropy_are_entropy_cuts(seed, target):
    sample = real_shaped(60, seed)
    c = calibrate(sample, target, min_len=2, max_len=64)
    assert c.met
    if target <= 5.0:  # forced cuts dominate the classic fit: the anchors' steps are fitted
        assert c.counted == "anchors" and "forced" in c.note and abs(c.anchor_mean_steps - target) <= 0.5
    else:  # the classic fit already cuts mostly on entropy: kept as it is
        assert c.counted == "all" and c.note == "" and abs(c.mean_steps - target) <= 0.5
    assert c.tau < 2.5  # anchors at the top ~2% of tokens, not above every entropy
    assert c.forced_fraction < 0.5  # most boundaries are entropy cuts
    # check by hand on the partitions: every non-forced cut starts at an anchor
    n_entropy = n_forced = 0
    for h in sample:
        starts = boundaries(h, c.tau, 2, 64)
        for prev, s in zip(starts, starts[1:]):
            if h[s] > c.tau:
                n_entropy += 1
            else:
                assert s - prev >= 64  # a cut not at an anchor is forced
                n_forced += 1
    assert n_entropy > n_forced
    assert n_forced / (n_entropy + n_forced) == pytest.approx(c.forced_fraction)
    assert mean_steps(sample, c.tau, 2, 64) == pytest.approx(c.mean_steps)
    assert mean_steps(sample, c.tau, 2, None) == pytest.approx(c.anchor_mean_steps)
    assert calibrate_threshold(sample, target, 2, 64) == c.tau


def test_unreachable_target_is_reported():
    sample = real_shaped(20, 0)
    c = calibrate(sample, 500.0, min_len=2, max_len=64)  # more steps than tokens / min_len
    assert not c.met and "not met" in c.note and c.tau < 1e-3  # the lowest candidate: every token an anchor
    assert calibrate(SAMPLE, 10.0, 1, 64).met is False  # SAMPLE tops out at 11 / 3 steps (tau 0)
    assert calibrate(SAMPLE, 2.0, 1, 64).met and calibrate(SAMPLE, 2.0, 1, 64).note == ""


def test_calibrate_validates():
    with pytest.raises(ValueError, match="count"):
        calibrate(SAMPLE, 2.0, 1, 64, count="forced")
    with pytest.raises(ValueError, match="max_forced_fraction"):
        calibrate(SAMPLE, 2.0, 1, 64, max_forced_fraction=1.5)
    with pytest.raises(ValueError, match="2 blocked lists but 3 solutions"):
        calibrate(SAMPLE, 2.0, 1, 64, blocked=[[], []])


# equivalence: the classic fit is unchanged wherever it is not degenerate


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.floats(0, 3), max_size=40), min_size=1, max_size=8),
    st.integers(1, 4),
    st.integers(0, 12),
    st.floats(1, 10),
)
def test_count_all_is_the_classic_fit(sample, min_len, extra, target):
    if not any(sample):
        return
    max_len = min_len + extra
    fitted = calibrate(sample, target, min_len, max_len, count="all").tau
    assert fitted == classic_threshold(sample, target, min_len, max_len)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.floats(0, 3), max_size=40), min_size=1, max_size=8),
    st.integers(1, 4),
    st.integers(0, 12),
    st.floats(1, 10),
)
def test_auto_is_the_classic_fit_unless_forced_cuts_dominate(sample, min_len, extra, target):
    if not any(sample):
        return
    max_len = min_len + extra
    auto = calibrate(sample, target, min_len, max_len)
    classic = calibrate(sample, target, min_len, max_len, count="all")
    if classic.forced_fraction <= 0.5:
        assert auto == classic and auto.tau == classic_threshold(sample, target, min_len, max_len)
    else:
        assert auto.counted == "anchors"


def test_auto_is_classic_on_short_solutions_like_the_synthetic_world():
    # 200 synthetic-world-shaped solutions (20-80 tokens, max_len 64): forced cuts are at most
    # (n - 1) // 64 <= 1 per solution, far from half the cuts, so auto is exactly the classic fit
    rng = np.random.default_rng(0)
    sample = [rng.exponential(0.6, size=rng.integers(20, 80)).round(4).tolist() for _ in range(200)]
    for target in (3.0, 5.0, 6.0, 10.0):
        c = calibrate(sample, target, 2, 64)
        assert c.counted == "all" and c.forced_fraction <= 0.5 and c.note == ""
        assert c.tau == classic_threshold(sample, target, 2, 64) == calibrate_threshold(sample, target, 2, 64)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.data(), st.integers(1, 4), st.integers(0, 6))
def test_place_is_unchanged_without_blocked(text, data, min_len, extra):
    n_bytes = len(text.encode())
    offsets = byte_tokenize(text, data.draw(st.lists(st.integers(1, max(1, n_bytes - 1)), max_size=n_bytes)))
    H = data.draw(st.lists(st.floats(0, 3), min_size=len(offsets), max_size=len(offsets)))
    tau = data.draw(st.floats(0, 3))
    wanted = anchors(H, tau)
    for o in (offsets, None):
        assert boundaries(H, tau, min_len, min_len + extra, o) == classic_place(
            len(H), wanted, min_len, min_len + extra, o
        )


# --------------------------------------------------------------------------- keep_numbers


def test_keep_numbers_never_cuts_inside_a_number():
    # Gemma-style digit tokens: "The", " total", " is", " ", "2", "6", "0", ".", "5", " sheep"
    text, offsets = tokenize(["The", " total", " is", " ", "2", "6", "0", ".", "5", " sheep"])
    H = [0.0, 0.0, 0.0, 0.0, 0.1, 2.0, 0.1, 1.5, 0.1, 0.1]  # the policy hesitates at "6" and "."
    off = PartitionConfig(min_len=1)
    assert partition(text, offsets, H, off).steps == ["The total is 2", "60", ".5 sheep"]  # mid-number
    on = PartitionConfig(min_len=1, keep_numbers=True)
    assert partition(text, offsets, H, on).steps == ["The total is 260.5", " sheep"]  # moved past it
    # a forced cut moves too: max_len 5 forces a cut before token 5 ("6"), moved to " sheep"
    cfg = PartitionConfig(min_len=1, max_len=5, keep_numbers=True)
    assert partition(text, offsets, [0.0] * 10, cfg).starts == [0, 9]
    assert partition(text, offsets, [0.0] * 10, PartitionConfig(min_len=1, max_len=5)).starts == [0, 5]
    assert number_tokens(text, offsets) == [5, 6, 7, 8]


def test_keep_numbers_off_is_the_default_and_blocked_feeds_calibration():
    assert PartitionConfig().keep_numbers is False
    text, offsets = tokenize(["a", "1", "2", "3", " b", "4", "5"])
    blocked = number_tokens(text, offsets)
    assert blocked == [2, 3, 6]
    H = [0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 2.0]
    assert boundaries(H, 1.0, 1, 64) == [0, 2, 3, 6]
    assert boundaries(H, 1.0, 1, 64, blocked=blocked) == [0, 4]  # 2 and 3 move to " b"; 6 has no next
    assert calibrate([H], 2.0, 1, 64, blocked=[blocked]).anchor_mean_steps == 2.0
