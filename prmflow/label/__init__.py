"""Step labels for PRM training: Monte-Carlo rollouts (Math-Shepherd), OmegaPRM's binary search
for the first error, their quality against exact ground truth, and TRL stepwise rows."""

from prmflow.label.mc import (
    LabelCost,
    StepEstimate,
    answer_verifier,
    final_answer_text,
    hard_label,
    mc_estimates,
    normalize_answer,
)
from prmflow.label.omega import OmegaLabels, binary_search_first_error, omega_labels
from prmflow.label.quality import first_error_of, gold_step_labels, label_quality
from prmflow.label.stepwise import load_stepwise, stepwise_row

__all__ = [
    "LabelCost",
    "OmegaLabels",
    "StepEstimate",
    "answer_verifier",
    "binary_search_first_error",
    "final_answer_text",
    "first_error_of",
    "gold_step_labels",
    "hard_label",
    "label_quality",
    "load_stepwise",
    "mc_estimates",
    "normalize_answer",
    "omega_labels",
    "stepwise_row",
]
