"""Launch a stage flow as one process (`python -m flows.<stage>`) or through `accelerate launch`.

    python -m flows.launch train [--params params.yaml] [--launcher python|accelerate]
                                 [--num-processes N] [--mixed-precision no|bf16|fp16] [--cpu]
                                 [--dry-run]

PRM training on several GPUs runs `accelerate launch --num_processes N -m flows.train --params
...`; on this CPU machine the same entry point runs single-process, either directly or as
`accelerate launch --num_processes 1 --cpu -m flows.train`. Defaults come from the `train`
section of the params file when it has the knobs (`launcher`, `num_processes`,
`mixed_precision`), else from the command line (python, 1 process, no mixed precision).

Only the command is built here; the training loop decides how it uses the processes
(prmflow.prm.parallel): with N processes, rank 0 runs the flow and every rank trains its share
of each optimizer step; gradients are summed over the ranks, so N processes take the same steps
as one. On a CPU-only machine `--num-processes 2 --cpu` runs two gloo processes for real.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from prmflow.config import LAUNCHERS, MIXED_PRECISION, check_launch, read_layered


@dataclass(frozen=True)
class LaunchConfig:
    """How a stage flow process is started."""

    launcher: str = "python"
    """`python` (one process) | `accelerate` (`accelerate launch`, one process per device)"""
    num_processes: int = 1
    """processes `accelerate launch` starts (GPUs on one node); ignored by `python`"""
    mixed_precision: str = "no"
    """`accelerate launch --mixed_precision`: no | bf16 | fp16"""
    cpu: bool = False
    """`accelerate launch --cpu`: force CPU even where CUDA is visible"""

    def __post_init__(self) -> None:
        check_launch(self.launcher, self.num_processes, self.mixed_precision)


def accelerate_available(python: str = sys.executable) -> bool:
    """Whether `python` can import accelerate (a prmflow dependency; an engine venv may lack it)."""
    probe = subprocess.run([python, "-c", "import accelerate"], capture_output=True)
    return probe.returncode == 0


def stage_command(
    stage: str, params: str | Sequence[str], cfg: LaunchConfig, python: str = sys.executable
) -> list[str]:
    """The argv that runs `flows.<stage>` with `params` (a file, or a base file and overlays) under `cfg`.

    >>> stage_command("train", "params.yaml", LaunchConfig(), python="py")
    ['py', '-m', 'flows.train', '--params', 'params.yaml']
    >>> stage_command("train", "p.yaml", LaunchConfig("accelerate", 4, "bf16"), python="py")  # doctest: +NORMALIZE_WHITESPACE
    ['py', '-m', 'accelerate.commands.launch', '--num_machines', '1', '--num_processes', '4',
     '--mixed_precision', 'bf16', '--dynamo_backend', 'no', '--multi_gpu', '-m', 'flows.train', '--params', 'p.yaml']
    """
    module = f"flows.{stage}"
    files = [params] if isinstance(params, str) else list(params)
    flags = [x for f in files for x in ("--params", f)]
    if cfg.launcher == "python":
        return [python, "-m", module, *flags]
    # `python -m accelerate.commands.launch` == `accelerate launch`, from the same interpreter
    cmd = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--num_processes",
        str(cfg.num_processes),
        "--mixed_precision",
        cfg.mixed_precision,
        "--dynamo_backend",
        "no",
    ]
    if cfg.num_processes > 1:
        # torchrun, one process per device; on CPU (launch_env) the processes form a gloo group
        cmd.append("--multi_gpu")
    elif cfg.cpu:
        cmd.append("--cpu")
    return [*cmd, "-m", module, *flags]


def launch_env(cfg: LaunchConfig) -> dict[str, str]:
    """Environment the launched processes need beyond the caller's: `accelerate launch --cpu`
    starts one process only, so several CPU processes go through `--multi_gpu` (torchrun) with
    ACCELERATE_USE_CPU, which makes accelerate form a gloo process group on the CPU."""
    return {"ACCELERATE_USE_CPU": "true"} if cfg.launcher == "accelerate" and cfg.cpu and cfg.num_processes > 1 else {}


def from_params(params: str | Sequence[str], section: str = "train", **overrides: object) -> LaunchConfig:
    """LaunchConfig from `section` of the params file and overlays (fields it has), then non-None overrides."""
    data, _ = read_layered(params)
    values = {
        k: v for k, v in (data.get(section) or {}).items() if k in ("launcher", "num_processes", "mixed_precision")
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return LaunchConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a stage flow directly or through `accelerate launch`.")
    parser.add_argument("stage", help="flow module under flows/, e.g. train")
    parser.add_argument("--params", action="append", default=None, help="params file; repeat for overlays")
    parser.add_argument("--launcher", choices=LAUNCHERS)
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION)
    parser.add_argument("--cpu", action="store_true", default=None, help="accelerate: force CPU")
    parser.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    args = parser.parse_args(argv)
    args.params = args.params or ["params.yaml"]
    cfg = from_params(
        args.params,
        launcher=args.launcher,
        num_processes=args.num_processes,
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
    )
    cmd = stage_command(args.stage, args.params, cfg)
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    if cfg.launcher == "accelerate" and not accelerate_available():
        print("error: launcher 'accelerate' needs the accelerate package (pip install accelerate)", file=sys.stderr)
        return 2
    # the stage runs from the current directory (data/, models/ and params are relative to it)
    return subprocess.call(cmd, env={**os.environ, **launch_env(cfg)})


if __name__ == "__main__":
    sys.exit(main())
