"""Process reward models: a backbone with ensemble step heads (model.py) and its training loop
(train.py). EDU-PRM (arXiv 2503.22233), ActPRM (arXiv 2504.10559)."""

from prmflow.prm.model import (
    PRM,
    PRMConfig,
    StepScores,
    TokenizedSteps,
    add_step_token,
    collate,
    head_data_mask,
    step_bce,
    step_loss,
    tokenize_steps,
)
from prmflow.prm.train import Example, TrainConfig, accumulate_grads, example_order, prepare_examples, train_prm

__all__ = [
    "PRM",
    "Example",
    "PRMConfig",
    "StepScores",
    "TokenizedSteps",
    "TrainConfig",
    "accumulate_grads",
    "add_step_token",
    "collate",
    "example_order",
    "head_data_mask",
    "prepare_examples",
    "step_bce",
    "step_loss",
    "tokenize_steps",
    "train_prm",
]
