"""Several processes, one training run: the loop's view of `accelerate launch` (or torchrun).

Nothing here distributes anything by itself: Accelerate sets up the process group (NCCL on GPUs,
gloo on CPUs) and wraps the model in DDP, or in FSDP when launched with `--use_fsdp` (full
fine-tuning only). What the loop needs on top is small: which share of each global batch this
process takes, sums across processes, and which process writes files.

    accelerate launch --multi_gpu --num_processes 2 -m tuneloop.cli.main train tuneloop.yaml

(`--multi_gpu` is Accelerate's name for "several local processes"; without a GPU they run on
the CPU over gloo.) With the same `train.batch_size` (the global batch), two processes take
half of every batch each and compute the same loss curve as one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    accelerator: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.accelerator is not None and "FSDP" in str(self.accelerator.distributed_type)

    @property
    def kind(self) -> str:
        """`single`, `ddp` or `fsdp`: how the model is spread over processes."""
        return "single" if self.world == 1 else ("fsdp" if self.fsdp else "ddp")

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of `value` over all processes (in place; returned for convenience)."""
        if self.world > 1:
            torch.distributed.all_reduce(value)
        return value

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP or FSDP around `module` when several processes run; `module` itself otherwise."""
        return self.accelerator.prepare_model(module) if self.world > 1 else module

    def clip_grad_norm(self, module: torch.nn.Module, max_norm: float) -> torch.Tensor:
        params = [p for p in module.parameters() if p.requires_grad]
        if self.accelerator is not None and self.world > 1:
            return self.accelerator.clip_grad_norm_(params, max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def setup() -> tuple[Distributed, torch.device]:
    """Join the process group a launcher started (WORLD_SIZE > 1), else run alone."""
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(), torch.device("cuda" if cuda else "cpu")
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not cuda)
    return Distributed(accelerator.process_index, accelerator.num_processes, accelerator), (
        accelerator.device
    )
