"""Train a PRM as one of the processes of `accelerate launch` and dump its parameters (helper of
tests/test_prm_parallel.py):

    python -m accelerate.commands.launch --cpu --num_processes 2 tests/parallel_check.py MODEL ROWS.json CFG.json OUT_DIR

Every rank writes OUT_DIR/rank{r}.safetensors (its replica after training) and rank{r}.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from prmflow.prm import PRM, PRMConfig, TrainConfig, train_prm
from prmflow.prm.parallel import Processes


def main(model: str, rows_path: str, cfg_path: str, out: str) -> None:
    torch.set_num_threads(1)
    spec = json.loads(Path(cfg_path).read_text())
    procs = Processes.current()
    prm = PRM.from_backbone(model, PRMConfig(**spec["prm"]))
    steps: list[int] = []
    summary = train_prm(
        prm,
        json.loads(Path(rows_path).read_text()),
        TrainConfig(**spec["train"]),
        Path(out) / "run",
        on_step=lambda s, m: steps.append(s),
        procs=procs,
    )
    save_file({k: v.detach().contiguous() for k, v in prm.state_dict().items()}, f"{out}/rank{procs.rank}.safetensors")
    Path(f"{out}/rank{procs.rank}.json").write_text(
        json.dumps({"world": procs.world, "summary": summary, "on_step": steps})
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
