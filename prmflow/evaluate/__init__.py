"""Evaluation of PRMs: ProcessBench first-error detection and PRM-guided Best-of-N.

Pure functions on lists of scores (no model, no torch); `load_processbench` is the one reader.
"""

from __future__ import annotations

from prmflow.evaluate.bon import (
    AGGREGATIONS,
    METHODS,
    aggregate,
    answer_classes,
    bon_accuracy,
    majority_vote,
    normalize_answer,
    select_prm,
    weighted_vote,
)
from prmflow.evaluate.processbench import (
    calibrate_threshold,
    default_candidates,
    evaluate_subsets,
    f1_curve,
    load_processbench,
    predict_first_error,
    processbench_metrics,
)

__all__ = [
    "AGGREGATIONS",
    "METHODS",
    "aggregate",
    "answer_classes",
    "bon_accuracy",
    "calibrate_threshold",
    "default_candidates",
    "evaluate_subsets",
    "f1_curve",
    "load_processbench",
    "majority_vote",
    "normalize_answer",
    "predict_first_error",
    "processbench_metrics",
    "select_prm",
    "weighted_vote",
]
