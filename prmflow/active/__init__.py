"""ActPRM: efficient PRM training via active learning (Duan et al., arXiv 2504.10559).

An ensemble PRM scores each pool solution; only the solutions it is unsure about
(uncertainty.py) go to a labeler (labelers.py, judge.py) and into the loss (loop.py);
compare.py turns F1-vs-labels curves of active, random and full labeling into the label saving.
"""

from prmflow.active.compare import (
    final_f1,
    initial_f1,
    labels_to_reach,
    mean_curve,
    mean_std,
    paired_at_budget,
    paired_plateau,
    plateau_difference,
    smooth,
    summarize,
)
from prmflow.active.features import CachedHeads, FeatureCache
from prmflow.active.judge import JudgeError, JudgeLabeler, JudgeUnavailable, judge_prompt, parse_judge_reply
from prmflow.active.labelers import (
    UNLABELED,
    ConsensusLabeler,
    Labeler,
    LabelerCost,
    LabelResult,
    MCLabeler,
    OracleLabeler,
    prefix_labels,
)
from prmflow.active.loop import STRATEGIES, LoopConfig, pool_order, processbench_f1, run_active_learning, select
from prmflow.active.uncertainty import Uncertainty, solution_uncertainty

__all__ = [
    "STRATEGIES",
    "UNLABELED",
    "CachedHeads",
    "ConsensusLabeler",
    "FeatureCache",
    "JudgeError",
    "JudgeLabeler",
    "JudgeUnavailable",
    "Labeler",
    "LabelerCost",
    "LabelResult",
    "LoopConfig",
    "MCLabeler",
    "OracleLabeler",
    "Uncertainty",
    "judge_prompt",
    "final_f1",
    "initial_f1",
    "labels_to_reach",
    "mean_curve",
    "mean_std",
    "paired_at_budget",
    "paired_plateau",
    "plateau_difference",
    "parse_judge_reply",
    "pool_order",
    "prefix_labels",
    "processbench_f1",
    "run_active_learning",
    "select",
    "smooth",
    "solution_uncertainty",
    "summarize",
]
