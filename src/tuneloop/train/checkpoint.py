"""Checkpoints that resume exactly: trainable weights, optimizer, scheduler, RNG and position.

A checkpoint is a folder `checkpoints/step-000050/`. It is written to a temporary sibling and
renamed into place, so a crash mid-write never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


@dataclass
class LoopState:
    """Where training stands: the next optimizer step to run and what came before it."""

    step: int = 0  # optimizer steps completed
    tokens: int = 0  # input tokens seen, padding included (what the model computed on)
    real_tokens: int = 0  # the examples' own tokens, padding excluded
    supervised_tokens: int = 0
    elapsed: float = 0.0  # seconds of training, summed over resumed sessions
    best_eval: float | None = None  # lowest held-out loss so far
    best_step: int | None = None  # the step that reached it (its checkpoint is kept)
    bad_evals: int = 0  # evaluations since the last improvement
    stopped_early: bool = False


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_tensors(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: LoopState, keep: int) -> Path:
    """Write `step-NNNNNN/` atomically; keep the newest `keep` and the best one (early stopping)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{state.step:06d}"
    tmp = folder / f".tmp-step-{state.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_tensors(model), tmp / "trainable.safetensors")
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        tmp / "optimizer.pt",
    )
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2))
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    best = f"step-{state.best_step:06d}" if state.best_step is not None else None
    for old in list_checkpoints(folder)[:-keep]:
        if old.name != best:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_at(folder: Path, step: int) -> Path:
    return folder / f"step-{step:06d}"


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    done = [p for p in folder.glob("step-*") if (p / "state.json").is_file()]
    return sorted(done, key=lambda p: p.name)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> LoopState:
    """Restore everything `save_checkpoint` wrote; the model must have the same trainables."""
    load_trainable(path, model)
    blob = torch.load(path / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return LoopState(**json.loads((path / "state.json").read_text()))


def load_trainable(path: Path, model) -> None:
    """Copy a checkpoint's trainable tensors into `model` (weights only, no optimizer)."""
    tensors = load_file(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
