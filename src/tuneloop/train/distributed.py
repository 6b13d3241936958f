"""Several processes, one training run: the loop's view of `accelerate launch` (or torchrun).

Nothing here distributes anything by itself: Accelerate sets up the process group (NCCL on GPUs,
gloo on CPUs) and wraps the model in DDP, or in FSDP when launched with `--use_fsdp` (full
fine-tuning only). What the loop needs on top is small: which share of each global batch this
process takes, sums across processes, and which process writes files.

    accelerate launch --multi_gpu --num_processes 2 -m tuneloop.cli.main train tuneloop.yaml

(`--multi_gpu` is Accelerate's name for "several local processes"; without a GPU they run on
the CPU over gloo.) With the same `train.batch_size` (the global batch), two processes take
half of every batch each and compute the same loss curve as one process.

FSDP on CPUs is done here, not by Accelerate, which does not do it: with `--use_fsdp` its
`Accelerator()` fails on a CPU (FSDP1's default `sync_module_states` asks for a GPU, "There
are currently no available devices found"), and where it does start (`--fsdp_version 2`), its
state turns `--use_fsdp` into FSDP only for GPU-like process kinds, so a CPU run would quietly
be DDP. PyTorch's own FSDP2 (`fully_shard`) runs on a CPU mesh over gloo, so on a CPU the
process group is joined directly and `shard` applies it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    accelerator: Any = None
    cpu_fsdp: bool = False  # FSDP2 applied by `shard`, not by Accelerate

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.cpu_fsdp or (
            self.accelerator is not None and "FSDP" in str(self.accelerator.distributed_type)
        )

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
        if self.cpu_fsdp:
            return shard(module)
        return self.accelerator.prepare_model(module) if self.world > 1 else module

    def clip_grad_norm(self, module: torch.nn.Module, max_norm: float) -> torch.Tensor:
        params = [p for p in module.parameters() if p.requires_grad]
        if self.accelerator is not None and self.world > 1:
            return self.accelerator.clip_grad_norm_(params, max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def fsdp_requested() -> bool:
    """Set by `accelerate launch --use_fsdp` in every process it starts."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get(
        "ACCELERATE_USE_FSDP", "false"
    ).lower() in ("1", "true")


def shard(module: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 over all processes on the CPU: each transformer block (the classes a Transformers
    model names in `_no_split_modules`) is its own unit, gathered just for its forward and
    backward, and `module` holds the rest (embeddings, final norm, head) as the root unit.

    The loop skips gradient sync on all micro-batches but the last through `no_sync()`, which
    is DDP's and FSDP1's name for it; an FSDP2 module has `set_requires_gradient_sync` instead,
    so the sharded module gets a `no_sync` that uses it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    blocks: set[str] = set()
    for m in module.modules():
        blocks.update(getattr(m, "_no_split_modules", None) or ())
    for m in list(module.modules())[1:]:
        if type(m).__name__ in blocks:
            fully_shard(m, mesh=mesh)
    fully_shard(module, mesh=mesh)

    @contextlib.contextmanager
    def no_sync():
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)

    module.no_sync = no_sync
    return module


def setup() -> tuple[Distributed, torch.device]:
    """Join the process group a launcher started (WORLD_SIZE > 1), else run alone."""
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(), torch.device("cuda" if cuda else "cpu")
    if fsdp_requested() and not cuda:
        torch.distributed.init_process_group("gloo")  # the launcher set RANK, MASTER_ADDR, ...
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        return Distributed(rank, world, cpu_fsdp=True), torch.device("cpu")
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not cuda)
    return Distributed(accelerator.process_index, accelerator.num_processes, accelerator), (
        accelerator.device
    )
