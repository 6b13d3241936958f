"""The one training loop every objective shares: accumulation, clipping, schedule, logging,
evaluation every N steps, early stopping, checkpoints and resume, on one process or several.

Objectives (SFT, DPO, distillation, reward models, GRPO) pass a
`loss_fn(model, batch) -> (summed loss, scalars)` and their batches. The loop reads only two
things from a batch: `n`, the number of loss terms in it (supervised tokens for SFT, pairs for
DPO, completion tokens for GRPO), which normalises the loss over the whole accumulated step
(and over all processes); `input_ids`, to count tokens; and an optional `weight` (0 for the
stand-in batch of a process that has no example in a short last batch). GRPO also passes a
`rollout`, which samples and grades each micro-batch's completions before the step's first
backward pass (so its `n` is known when the step is normalised).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tuneloop.models.precision import autocast

# Re-exported: evaluate/run.py, estimate.py and advise.py still import it from here.
from tuneloop.models.precision import resolve_precision as resolve_precision
from tuneloop.train.checkpoint import (
    LoopState,
    checkpoint_at,
    list_checkpoints,
    load_checkpoint,
    load_trainable,
    save_checkpoint,
)
from tuneloop.train.distributed import Distributed

if TYPE_CHECKING:
    from tuneloop.track import Trackers

# (model, batch) -> summed loss over the batch's `n` terms, and scalars to log.
LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]
# (micro-batch, its index in the stream) -> the batch the loss trains on (GRPO's sampling)
Rollout = Callable[[dict, int], dict]


class MicroBatches:
    """A deterministic stream of micro-batches over as many epochs as needed.

    Epoch `e` visits the examples in the order of `random.Random(f"{seed}:{e}")`, so any
    position in the stream can be recomputed from (seed, index) alone: that is what makes resume
    exact without saving the data order. With several processes, micro-batch `i` is the same
    `batch_size` examples for all of them and process `rank` takes every `world`-th one.
    """

    def __init__(self, items: list, batch_size: int, seed: int, collate: Callable[[list], dict],
                 rank: int = 0, world: int = 1):  # fmt: skip
        self.items, self.batch_size, self.seed, self.collate = items, batch_size, seed, collate
        self.rank, self.world = rank, world
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
        share = chosen[self.rank :: self.world]
        if not share:  # a short last batch with fewer examples than processes
            batch = self.collate([self.items[chosen[0]]])
            return {**batch, "n": 0, "weight": 0.0}  # runs (DDP needs every rank), counts 0
        return self.collate([self.items[i] for i in share])


@dataclass
class LoopConfig:
    total_steps: int
    grad_accum: int
    max_grad_norm: float | None
    precision: str
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int = 1
    eval_every: int | None = None
    patience: int | None = None  # early stopping: evaluations without improvement
    min_delta: float = 0.0
    restore_best: bool = False
    checkpoints: bool = True  # off under FSDP, whose sharded state this loop does not gather


class LossModule(torch.nn.Module):
    """The model and its objective's loss as one module, so that a DDP or FSDP wrapper sees
    the forward pass it has to synchronise (the loss reaches into the model's parts)."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(self.model, batch)


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
    *,
    evaluate: Callable[[], dict[str, float]] | None = None,
    dist: Distributed | None = None,
    step_module: torch.nn.Module | None = None,
    trackers: Trackers | None = None,
    rollout: Rollout | None = None,
) -> LoopState:
    """Run optimizer steps `state.step .. cfg.total_steps - 1`; return the final state.

    Each step accumulates `grad_accum` micro-batches. The loss of a step is the sum of its
    per-term losses over all micro-batches (and processes) divided by their number of terms,
    so accumulation and processes do not change what is optimised. Every `eval_every` steps
    `evaluate()` gives the held-out loss; early stopping ends the run after `patience`
    evaluations without improvement, and `restore_best` ends it with the best weights.
    Every line logged to metrics.jsonl also goes to `trackers` (TensorBoard, MLflow).
    An objective that learns from the model's own samples (GRPO) passes `rollout`, which turns
    each micro-batch (and its index in the stream, its sampling seed) into the rows to train
    on, with the weights as they are at the start of the step.
    """
    from tqdm.auto import tqdm

    dist = dist or Distributed()
    step_module = step_module or LossModule(model, loss_fn)
    step_module.train()
    bar = tqdm(
        total=cfg.total_steps,
        initial=state.step,
        desc="train",
        unit="step",
        disable=not progress or not dist.main,
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 5.0,
        dynamic_ncols=True,
    )
    session_start, session_tokens = time.perf_counter(), 0
    while state.step < cfg.total_steps and not state.stopped_early:
        t0 = time.perf_counter()
        step = state.step
        indices = [step * cfg.grad_accum + k for k in range(cfg.grad_accum)]
        micro = [batches.batch(i) for i in indices]
        if rollout is not None:  # every micro-batch sampled before the first backward pass
            micro = [rollout(b, i) for b, i in zip(micro, indices, strict=True)]
        micro = [_to(b, device) for b in micro]
        local = [
            sum(int(b["n"]) for b in micro),
            sum(b["input_ids"].numel() for b in micro),
            sum(int((b["seq_index"] >= 0).sum()) for b in micro if b.get("weight", 1.0)),
        ]
        counts = dist.sum(torch.tensor(local))  # over all processes
        denom, tokens, real_tokens = (int(c) for c in counts)  # supervised terms, tokens
        loss_total = torch.zeros((), device=device)
        extras: dict[str, float] = {}
        for k, b in enumerate(micro):
            # DDP syncs gradients on the last micro-batch only.
            last = k == len(micro) - 1
            sync = contextlib.nullcontext() if last or dist.world == 1 else step_module.no_sync()
            with sync:
                with autocast(cfg.precision, device):
                    loss_sum, extra = step_module(b)
                loss_sum = loss_sum * b.get("weight", 1.0)
                # DDP averages gradients over processes; scaling by `world` makes that a sum.
                (loss_sum * dist.world / max(denom, 1)).backward()
            loss_total += loss_sum.detach()
            for key, v in extra.items():
                extras[key] = extras.get(key, 0.0) + v / len(micro)
        grad_norm = (
            dist.clip_grad_norm(step_module, cfg.max_grad_norm) if cfg.max_grad_norm else None
        )
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        state.step += 1
        state.tokens += tokens
        state.real_tokens += real_tokens
        state.supervised_tokens += denom
        state.elapsed += time.perf_counter() - t0
        session_tokens += tokens
        loss = float(dist.sum(loss_total)) / max(denom, 1)
        if dist.world > 1 and extras:
            values = dist.sum(torch.tensor(list(extras.values()), dtype=torch.float64))
            extras = {key: float(v) / dist.world for key, v in zip(extras, values, strict=True)}
        tok_s = session_tokens / max(1e-9, time.perf_counter() - session_start)
        record = {"step": state.step, "loss": loss, "lr": lr, "tokens": state.tokens}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        record.update(extras)
        record["tokens_per_s"] = round(tok_s, 1)
        improved = False
        if (
            evaluate is not None
            and cfg.eval_every
            and (state.step % cfg.eval_every == 0 or state.step == cfg.total_steps)
        ):
            step_module.eval()
            record.update(evaluate())
            step_module.train()
            improved = _track_best(state, record["eval_loss"], cfg)
            bar.set_postfix(loss=f"{loss:.4f}", eval=f"{record['eval_loss']:.4f}", refresh=False)
        else:
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:.0f}", refresh=False)
        if dist.main and (state.step % cfg.log_every == 0 or state.step == cfg.total_steps
                          or "eval_loss" in record):  # fmt: skip
            log.append(record)
            if trackers is not None:
                trackers.log(record)
        bar.update(1)
        checkpoint_due = (
            state.step % cfg.checkpoint_every == 0
            or state.step == cfg.total_steps
            or state.stopped_early
            or (improved and cfg.restore_best)  # the best weights must survive to the end
        )
        if checkpoint_due and cfg.checkpoints and dist.main:
            save_checkpoint(ckpt_dir, model, optimizer, scheduler, state, cfg.keep_checkpoints)
        dist.barrier()
    bar.close()
    if cfg.restore_best and state.best_step is not None and state.best_step != state.step:
        load_trainable(checkpoint_at(ckpt_dir, state.best_step), model)
    return state


def _track_best(state: LoopState, eval_loss: float, cfg: LoopConfig) -> bool:
    """Update the best held-out loss and the early-stopping count; True on an improvement."""
    if state.best_eval is None or eval_loss < state.best_eval - cfg.min_delta:
        state.best_eval, state.best_step, state.bad_evals = eval_loss, state.step, 0
        return True
    state.bad_evals += 1
    if cfg.patience is not None and state.bad_evals >= cfg.patience:
        state.stopped_early = True
    return False


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: list[dict],
    device: torch.device,
    precision: str,
    dist: Distributed | None = None,
) -> dict[str, float]:
    """Held-out loss (per term, as in training) and the objective's scalars, as `eval_*`.

    With several processes each takes every `world`-th batch and the sums are combined.
    """
    dist = dist or Distributed()
    was_training = model.training
    model.eval()
    mine = batches[dist.rank :: dist.world]
    names: list[str] = []
    totals = torch.zeros(2, dtype=torch.float64)  # loss sum, terms
    weighted: dict[str, float] = {}
    for b in mine:
        b = _to(b, device)
        with autocast(precision, device):
            loss_sum, extra = loss_fn(model, b)
        totals += torch.tensor([float(loss_sum), int(b["n"])], dtype=torch.float64)
        for key, v in extra.items():
            weighted[key] = weighted.get(key, 0.0) + v * int(b["n"])
    names = sorted(weighted)
    if dist.world > 1:  # every process must name the same extras: they come from one loss_fn
        packed = dist.sum(torch.cat([totals, torch.tensor([weighted[k] for k in names],
                                                          dtype=torch.float64)]))  # fmt: skip
        totals, values = packed[:2], packed[2:].tolist()
        weighted = dict(zip(names, values, strict=True))
    model.train(was_training)
    n = max(float(totals[1]), 1.0)
    out = {"eval_loss": float(totals[0]) / n}
    out.update({f"eval_{k}": v / n for k, v in weighted.items()})
    return out


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
