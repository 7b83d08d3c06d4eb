r"""How good are Monte-Carlo step labels? Compare them with exact ground truth.

In the synthetic world `prmflow.synth.check_solution` knows `first_error_char`, the offset in
the completion where the first error begins (-1 if none). Any partition of the completion into
steps, given as character spans [s, e), then has exact gold labels by the prefix rule:

    gold[k] = e_k <= first_error_char          (all True when first_error_char = -1)

i.e. step k is correct iff the text up to its end contains no error, which is what an MC label
of the prefix ending after step k estimates. A step whose span ends exactly at the error char
is still correct: its text can still be continued correctly. (The checker puts the error char of
a claimed result that is a proper prefix of the true one, "14 + 23 = 3" for 37, at the end of
that result, so there the error lands on the step that follows.)

    >>> gold_step_labels([(0, 12), (13, 24), (25, 41)], first_error_char=20)
    [True, False, False]
    >>> first_error_of([True, False, False])
    1

Metrics over solutions i and their steps k; the positive class is "wrong step" (label False),
the one a PRM must catch:

    step_acc         = #{(i,k) : pred == gold} / #steps
    first_error_acc  = #{i : first_error(pred_i) == first_error(gold_i)} / #solutions
    wrong_precision  = #{pred False and gold False} / #{pred False}
    wrong_recall     = #{pred False and gold False} / #{gold False}

A ratio with a zero denominator is None, not NaN: prmflow's JSON writer refuses NaN, and None
says "undefined" where 0.0 would claim a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def gold_step_labels(spans: Sequence[tuple[int, int]], first_error_char: int | None) -> list[bool]:
    """Exact label of each step span [s, e): True iff e <= first_error_char (-1: all True).

    first_error_char None (a real problem row, `prmflow.policy.evaluate.Graded`) has no gold
    labels: ValueError, never a silent "all correct"; check `is None` first and report n/a.

    >>> gold_step_labels([(0, 5), (5, 9)], -1)
    [True, True]
    >>> gold_step_labels([(0, 5), (5, 9)], 5)   # step 0 ends where the error begins
    [True, False]
    """
    if first_error_char is None:
        raise ValueError("first_error_char is None: real text has no step-level truth, so no gold step labels")
    if first_error_char < -1:
        raise ValueError(f"first_error_char must be >= -1, got {first_error_char}")
    for k, (s, e) in enumerate(spans):
        if not 0 <= s <= e:
            raise ValueError(f"step {k}: span ({s}, {e}) is not 0 <= start <= end")
    if first_error_char == -1:
        return [True] * len(spans)
    return [e <= first_error_char for _, e in spans]


def first_error_of(labels: Sequence[bool]) -> int:
    """Index of the first False label, -1 if none.

    >>> first_error_of([True, True]), first_error_of([False, True])
    (-1, 0)
    """
    return next((k for k, ok in enumerate(labels) if not ok), -1)


def label_quality(pred: Sequence[Sequence[bool]], gold: Sequence[Sequence[bool]]) -> dict[str, Any]:
    """Agreement of predicted step labels with gold ones (see the module docstring).

    >>> q = label_quality([[True, False, False], [True]], [[True, True, False], [True]])
    >>> q["step_acc"], q["first_error_acc"], q["wrong_precision"], q["wrong_recall"]
    (0.75, 0.5, 0.5, 1.0)
    """
    if len(pred) != len(gold):
        raise ValueError(f"pred has {len(pred)} solutions, gold has {len(gold)}")
    n_steps = agree = first_error_hits = tp = pred_wrong = gold_wrong = 0
    for i, (p, g) in enumerate(zip(pred, gold)):
        if g is None:
            raise ValueError(f"solution {i}: gold labels are None (real text has no step-level truth)")
        if len(p) != len(g):
            raise ValueError(f"solution {i}: pred has {len(p)} step labels, gold has {len(g)}")
        first_error_hits += first_error_of(p) == first_error_of(g)
        for pk, gk in zip(p, g):
            n_steps += 1
            agree += bool(pk) == bool(gk)
            pred_wrong += not pk
            gold_wrong += not gk
            tp += not pk and not gk
    return {
        "step_acc": _ratio(agree, n_steps),
        "first_error_acc": _ratio(first_error_hits, len(pred)),
        "wrong_precision": _ratio(tp, pred_wrong),
        "wrong_recall": _ratio(tp, gold_wrong),
        "n_solutions": len(pred),
        "n_steps": n_steps,
    }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None
