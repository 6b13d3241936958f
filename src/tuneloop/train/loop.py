"""The one training loop every objective shares: accumulation, clipping, schedule, logging,
checkpoints and resume. Objectives (SFT, DPO, distillation) pass a `loss_fn` and their batches;
the loop knows nothing of what a batch holds except `batch["n"]`, the number of loss terms in it
(supervised tokens for SFT), used to normalise over the whole accumulated step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneloop.train.checkpoint import LoopState, list_checkpoints, load_checkpoint, save_checkpoint

# (model, batch) -> summed loss over the batch's `n` terms, and scalars to log.
LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]


def cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(setting: str, device: torch.device) -> str:
    """`auto` means bf16 autocast where the hardware has fast bf16, else fp32."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class MicroBatches:
    """A deterministic stream of micro-batches over as many epochs as needed.

    Epoch `e` visits the examples in the order of `random.Random(f"{seed}:{e}")`, so any
    position in the stream can be recomputed from (seed, index) alone: that is what makes resume
    exact without saving the data order.
    """

    def __init__(self, items: list, batch_size: int, seed: int, collate: Callable[[list], dict]):
        self.items, self.batch_size, self.seed, self.collate = items, batch_size, seed, collate
        self.per_epoch = math.ceil(len(items) / batch_size)
        self._order: tuple[int, list[int]] = (-1, [])

    def order(self, epoch: int) -> list[int]:
        if self._order[0] != epoch:
            order = list(range(len(self.items)))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    def batch(self, index: int) -> dict:
        epoch, j = divmod(index, self.per_epoch)
        chosen = self.order(epoch)[j * self.batch_size : (j + 1) * self.batch_size]
        return self.collate([self.items[i] for i in chosen])


@dataclass
class LoopConfig:
    total_steps: int
    grad_accum: int
    max_grad_norm: float | None
    precision: str
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int = 1


class MetricsLog:
    """Append-only JSONL of per-step metrics; on resume, lines past the checkpoint are dropped
    (the killed run may have logged steps that the resumed run will log again)."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if json.loads(ln)["step"] <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep))
        os.replace(tmp, self.path)

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines()]


def resume_state(ckpt_dir: Path, model, optimizer, scheduler, log: MetricsLog) -> LoopState:
    """Restore the latest complete checkpoint, or start from zero if there is none."""
    ckpts = list_checkpoints(ckpt_dir)
    if not ckpts:
        log.truncate_after(0)
        return LoopState()
    state = load_checkpoint(ckpts[-1], model, optimizer, scheduler)
    log.truncate_after(state.step)
    return state


def run_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches: MicroBatches,
    loss_fn: LossFn,
    cfg: LoopConfig,
    state: LoopState,
    ckpt_dir: Path,
    log: MetricsLog,
    device: torch.device,
    progress: bool = True,
) -> LoopState:
    """Run optimizer steps `state.step .. cfg.total_steps - 1`; return the final state."""
    from tqdm.auto import tqdm

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    kill_at = int(os.environ.get("TUNELOOP_KILL_AT_STEP", "0"))  # fault injection for tests
    bar = tqdm(
        total=cfg.total_steps,
        initial=state.step,
        desc="train",
        unit="step",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 5.0,
        dynamic_ncols=True,
    )
    session_start, session_tokens = time.perf_counter(), 0
    for step in range(state.step, cfg.total_steps):
        t0 = time.perf_counter()
        micro = [
            _to(batches.batch(step * cfg.grad_accum + k), device) for k in range(cfg.grad_accum)
        ]
        denom = sum(int(b["n"]) for b in micro)
        loss_total = torch.zeros((), device=device)
        extras: dict[str, float] = {}
        for b in micro:
            with autocast(cfg.precision, device):
                loss_sum, extra = loss_fn(model, b)
            (loss_sum / denom).backward()
            loss_total += loss_sum.detach()
            for k, v in extra.items():
                extras[k] = extras.get(k, 0.0) + v / len(micro)
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm else None
        )
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        tokens = sum(int(b["input_ids"].numel()) for b in micro)
        state.step += 1
        state.tokens += tokens
        state.supervised_tokens += denom
        state.elapsed += time.perf_counter() - t0
        session_tokens += tokens
        loss = loss_total.item() / denom
        tok_s = session_tokens / max(1e-9, time.perf_counter() - session_start)
        if state.step % cfg.log_every == 0 or state.step == cfg.total_steps:
            record = {"step": state.step, "loss": loss, "lr": lr, "tokens": state.tokens}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            record.update(extras)
            record["tokens_per_s"] = round(tok_s, 1)
            log.append(record)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:.0f}", refresh=False)
        bar.update(1)
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.total_steps:
            save_checkpoint(ckpt_dir, model, optimizer, scheduler, state, cfg.keep_checkpoints)
        if state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    return state


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
