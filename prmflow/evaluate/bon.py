"""PRM-guided Best-of-N: pick one of N sampled solutions by its step scores, or vote.

A PRM gives candidate j the step scores s_j1..s_jT. Its solution score aggregates them:

    min:  min_t s_jt      (Math-Shepherd, arXiv 2312.08935; the weakest step decides)
    prod: prod_t s_jt     (Lightman et al., "Let's Verify Step by Step", arXiv 2305.20050)
    last: s_jT            (the PRM's view of the whole solution)
    mean: (1/T) sum_t s_jt

Selection (`prm_<how>`) takes argmax_j agg(s_j). Voting takes argmax_a sum_{j: a_j = a} w_j
over final answers a: majority vote (self-consistency, arXiv 2203.11171) has w_j = 1, the
PRM-weighted vote (Math-Shepherd) has w_j = agg(s_j). `oracle` (pass@N) is right if any of the
N candidates is, `first` takes candidate 0 (the N = 1 baseline, the same at every N).

Answers compare as normalized strings: surrounding whitespace and trailing "." removed
("42." == " 42"), nothing else ("0.5" != ".5", "\\frac12" != "1/2"); normalize upstream for
anything finer. An answer that normalizes to "" counts as no answer (None), which never wins a
vote and is never right. Ties go to the lowest candidate index / the answer seen first.

Real answers ("18", "$18$", "18.00", "\\frac{36}{2}") need a verifier, not string equality. For
them each candidate carries its verdict `correct` and an `answer_class` from `answer_classes`
(answers grouped by a verified-equivalence function, e.g. math-verify); votes then count classes
instead of strings, and a class is right when its first member is (its members are equivalent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

AGGREGATIONS = ("min", "last", "prod", "mean")
METHODS = ("first", "majority_vote", "weighted_vote", "prm_min", "prm_last", "prm_prod", "prm_mean", "oracle")


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One solution score from its step scores (see the module docstring).

    >>> [aggregate([0.9, 0.5, 0.8], h) for h in AGGREGATIONS]
    [0.5, 0.8, 0.36000000000000004, 0.7333333333333334]
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r} (choose from {', '.join(AGGREGATIONS)})")
    s = [float(x) for x in step_scores]
    if not s:
        raise ValueError("no step scores to aggregate")
    for i, x in enumerate(s):
        if not math.isfinite(x):
            raise ValueError(f"non-finite step score {x} at index {i}")
    if how == "min":
        return min(s)
    if how == "last":
        return s[-1]
    if how == "prod":
        return math.prod(s)
    return sum(s) / len(s)


def select_prm(candidates: Sequence[Sequence[float]], how: str) -> int:
    """Index of the candidate with the highest aggregated score; ties -> the lowest index.

    >>> select_prm([[0.9, 0.4], [0.6, 0.6], [0.7, 0.6]], "min")  # min 0.4, 0.6, 0.6
    1
    """
    if not candidates:
        raise ValueError("no candidates")
    best, best_score = -1, -math.inf
    for j, steps in enumerate(candidates):
        try:
            score = aggregate(steps, how)
        except ValueError as e:
            raise ValueError(f"candidate {j}: {e}") from None
        if best < 0 or score > best_score:  # strict: an equal score keeps the earlier index
            best, best_score = j, score
    return best


def normalize_answer(answer: str | None) -> str | None:
    """Strip whitespace and trailing dots; "" -> None.

    >>> normalize_answer(" 42. "), normalize_answer("3.5"), normalize_answer(" ")
    ('42', '3.5', None)
    """
    if answer is None:
        return None
    if not isinstance(answer, str):
        raise TypeError(f"answer must be str or None, got {type(answer).__name__}")
    return answer.strip().rstrip(".").rstrip() or None


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float]) -> str | None:
    """The (normalized) answer with the largest total weight; ties -> the answer seen first.

    None answers are ignored; if all are None the result is None.

    >>> weighted_vote(["7", "9", "9", "7."], [0.9, 0.3, 0.4, 0.1])  # 7: 1.0, 9: 0.7
    '7'
    """
    if len(answers) != len(weights):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    totals: dict[str, float] = {}  # insertion order = first seen
    for j, (a, w) in enumerate(zip(answers, weights)):
        w = float(w)
        if not math.isfinite(w):
            raise ValueError(f"non-finite weight {w} at index {j}")
        a = normalize_answer(a)
        if a is not None:
            totals[a] = totals.get(a, 0.0) + w
    best: str | None = None
    for a, total in totals.items():
        if best is None or total > totals[best]:
            best = a
    return best


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent (normalized) answer; ties -> the answer seen first; all None -> None.

    >>> majority_vote([None, "3", "5", "5", "3"])
    '3'
    """
    return weighted_vote(answers, [1.0] * len(answers))


def answer_classes(answers: Sequence[str | None], equal: Callable[[str, str], bool]) -> list[int | None]:
    """Group final answers by verified equivalence: each answer's class is the index of the first
    answer it is `equal` to (compared with each class's first member, in order), else its own.

    Answers are normalized first (`normalize_answer`); equal normalized strings share a class
    without calling `equal`, and None (no answer) has no class.

    >>> answer_classes(["0.5", None, "1/2", "0.5.", "3"], lambda a, b: {a, b} <= {"0.5", "1/2"})
    [0, None, 0, 0, 4]
    """
    norm = [normalize_answer(a) for a in answers]
    reps: dict[int, str] = {}  # first member of each class -> its normalized answer, in order
    out: list[int | None] = []
    for j, a in enumerate(norm):
        if a is None:
            out.append(None)
            continue
        cls = next((r for r, rep in reps.items() if rep == a), None)
        if cls is None:
            cls = next((r for r, rep in reps.items() if equal(rep, a)), None)
        if cls is None:
            reps[j] = a
            cls = j
        out.append(cls)
    return out


def bon_accuracy(
    problems: Sequence[Mapping[str, Any]],
    ns: Sequence[int] = (1, 2, 4, 8),
    methods: Sequence[str] | None = None,
    how: str = "min",
) -> dict[str, Any]:
    """Accuracy of each method at each N, over problems with sampled, PRM-scored candidates.

    problems: [{"answer": str, "candidates": [{"answer": str | None, "step_scores": [float]},
    ...], "id"?: any}]. At each N only the first N candidates are used (candidates are i.i.d.
    samples, so a prefix is a fair draw and the curves are nested); every problem needs at
    least max(ns) of them (ValueError otherwise, never silently fewer). `how` is the
    aggregation giving `weighted_vote` its weights. Methods default to all of METHODS.
    Returns {"ns": [...], "n_problems": P, "how": how, "accuracy": {method: [acc per N]}}.

    Verified mode (real answers, module docstring): a problem whose candidates all carry
    `correct` (bool) and `answer_class` (int | None, from `answer_classes`) needs no reference
    `answer`; the verdicts are used as given and votes count classes.
    """
    methods = list(METHODS if methods is None else methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown} (choose from {', '.join(METHODS)})")
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r} (choose from {', '.join(AGGREGATIONS)})")
    ns = list(ns)
    if not ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ns):
        raise ValueError(f"ns must be a non-empty list of positive ints, got {ns}")
    if not problems:
        raise ValueError("no problems")
    n_max = max(ns)
    hows = {m.removeprefix("prm_") for m in methods if m.startswith("prm_")}
    if "weighted_vote" in methods:
        hows.add(how)
    hits = {m: [0] * len(ns) for m in methods}
    for p_idx, problem in enumerate(problems):
        where = f"problem {problem.get('id', p_idx)!r}"
        cands = problem["candidates"]
        verified = bool(cands) and all("correct" in c for c in cands)
        if not verified:
            gold = normalize_answer(problem["answer"])
            if gold is None:
                raise ValueError(f"{where}: empty reference answer")
        if len(cands) < n_max:
            raise ValueError(f"{where}: {len(cands)} candidates, fewer than N = {n_max}")
        cands = cands[:n_max]
        if verified:  # votes over verified-equivalence classes; the class's first member decides
            classes = [c["answer_class"] for c in cands]
            for j, k in enumerate(classes):
                if k is not None and not (isinstance(k, int) and 0 <= k <= j and classes[k] == k):
                    raise ValueError(
                        f"{where}: candidate {j}: answer_class {k!r} is not the index of its "
                        "class's first member (use answer_classes)"
                    )
            right = [bool(c["correct"]) for c in cands]
            answers = [None if k is None else str(k) for k in classes]  # vote keys
            key_right = {a: right[int(a)] for a in answers if a is not None}
        else:
            answers = [normalize_answer(c["answer"]) for c in cands]
            right = [a == gold for a in answers]
            key_right = {a: a == gold for a in answers if a is not None}
        agg: dict[str, list[float]] = {}
        for h in hows:
            try:
                agg[h] = [aggregate(c["step_scores"], h) for c in cands]
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        for k, n in enumerate(ns):
            for m in methods:
                hits[m][k] += _correct(m, n, answers, right, agg, how, key_right)
    return {
        "ns": ns,
        "n_problems": len(problems),
        "how": how,
        "accuracy": {m: [h / len(problems) for h in hits[m]] for m in methods},
    }


def _correct(
    method: str,
    n: int,
    answers: list[str | None],
    right: list[bool],
    agg: dict[str, list[float]],
    how: str,
    key_right: dict[str, bool],
) -> bool:
    """Whether `method` picks a right answer from the first n candidates of one problem
    (`key_right`: is the answer / class with this vote key right)."""
    if method == "first":
        return right[0]
    if method == "oracle":
        return any(right[:n])
    if method == "majority_vote":
        vote = majority_vote(answers[:n])
        return vote is not None and key_right.get(vote, False)
    if method == "weighted_vote":
        vote = weighted_vote(answers[:n], agg[how][:n])
        return vote is not None and key_right.get(vote, False)
    scores = agg[method.removeprefix("prm_")][:n]
    return right[scores.index(max(scores))]  # index() -> the lowest index among ties, as select_prm
