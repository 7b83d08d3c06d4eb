"""Process reward models (EDU-PRM arXiv 2503.22233, ActPRM arXiv 2504.10559): where each step's
label sits (tokenization.py), a backbone with ensemble step heads (model.py), where that backbone
comes from when it is saved as a pointer (backbone.py), and its training loop (train.py)."""

from prmflow.prm.model import PRM, PRMConfig, StepScores, head_data_mask, step_bce, step_loss
from prmflow.prm.tokenization import TokenizedSteps, add_step_token, collate, tokenize_steps
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
