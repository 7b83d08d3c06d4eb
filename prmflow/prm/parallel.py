r"""Data-parallel PRM training over the processes that `accelerate launch` starts.

One process per device. Every process holds the whole PRM and the whole optimizer state, and
optimizer step s's group G_s (prmflow.prm.train) is split by micro-batch: micro-batch m goes to
process m mod W. Each process backpropagates its micro-batches with the loss normalised by the
*whole* group's pair count |P_s|, so summing the gradients over processes gives

    sum_{r < W} grad_r = sum_{m} grad(loss_{s,m}) = grad(loss_s),

exactly the single-process gradient of the same group (up to float summation order). The sum is
one all-reduce per parameter after the group; then every process takes the same AdamW step, so
the replicas stay equal without broadcasting weights. Only the main process writes checkpoints,
the model and logs; the others wait for it at the barriers.

This is deliberately not DistributedDataParallel: DDP averages instead of summing, syncs on
every backward (gradient accumulation then needs `no_sync`), and hangs when processes run
different numbers of micro-batches, which a group that does not divide by W forces.

`Processes.current()` uses accelerate's `Accelerator` (device, process group, autocast for
`--mixed_precision`); a plain `python -m flows.train` is one process on the best device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Processes:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    """0 .. world - 1; rank 0 is the main process"""
    world: int = 1
    """number of processes"""
    device: torch.device = torch.device("cpu")
    """where this process trains"""
    accelerator: Any = None
    """the accelerate.Accelerator behind this (None: a plain single process)"""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> Processes:
        """The processes of this run, as `accelerate launch` (or a plain python) set them up."""
        from accelerate import Accelerator

        # cpu=True where there is no GPU: several processes then form a gloo group (MULTI_CPU)
        acc = Accelerator(cpu=not torch.cuda.is_available())
        return cls(acc.process_index, acc.num_processes, acc.device, acc)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The forward pass's autocast under `accelerate launch --mixed_precision` (else none)."""
        return self.accelerator.autocast() if self.accelerator is not None else contextlib.nullcontext()

    def owns(self, micro_batch: int) -> bool:
        """Whether micro-batch `micro_batch` of a group is this process's to run."""
        return micro_batch % self.world == self.rank

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """All-reduce (sum) every parameter's .grad in place; a missing .grad counts as zeros."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        handles = [dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, async_op=True) for p in params]
        for h in handles:
            h.wait()

    def sum(self, x: float) -> float:
        """The sum of a Python float over processes."""
        if self.world == 1:
            return x
        import torch.distributed as dist

        t = torch.tensor([x], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def barrier(self) -> None:
        """Wait until every process got here."""
        if self.world > 1:
            self.accelerator.wait_for_everyone()


def worker_rank() -> int:
    """This process's rank as the launcher set it (RANK), before any process group exists; 0
    for a plain python process."""
    return int(os.environ.get("RANK", "0"))
