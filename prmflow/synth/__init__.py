"""The embedded synthetic arithmetic world: a seeded problem generator, its text format, an exact
step checker, and loaders that bring GSM8K / MATH / own rows into the same row shape."""

from prmflow.synth.checker import CheckResult, StepVerdict, check_solution, reference_values
from prmflow.synth.format import (
    ANSWER_PREFIX,
    extract_answer,
    format_prompt,
    format_solution,
    split_steps,
    step_spans,
)
from prmflow.synth.sources import last_boxed, load_gsm8k, load_math, load_problems
from prmflow.synth.world import Problem, Step, WorldConfig, generate_problem, generate_problems

__all__ = [
    "ANSWER_PREFIX",
    "CheckResult",
    "Problem",
    "Step",
    "StepVerdict",
    "WorldConfig",
    "check_solution",
    "extract_answer",
    "format_prompt",
    "format_solution",
    "generate_problem",
    "generate_problems",
    "last_boxed",
    "load_gsm8k",
    "load_math",
    "load_problems",
    "reference_values",
    "split_steps",
    "step_spans",
]
