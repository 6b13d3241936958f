"""Training cost on this hardware, from a few real steps rather than a formula.

A handful of SFT steps of the recipe's own method (`train.method`, built as training builds
it: `models/adapters.py`) run on the real model and a random sample of the real batches (the
same `collate` and `sft_loss` as training), the first step discarded as warm-up. Time per
micro-batch times the micro-batches the recipe will run gives the estimate; peak memory is the
process's high-water mark while the steps run (on CPU, reset just before them through Linux's
/proc/self/clear_refs), or the CUDA allocator's peak on a GPU.

Every method is built on the model in hand except qlora, whose 4-bit base is loaded again from
the model's folder through bitsandbytes. Where that cannot be done (no folder, bitsandbytes
missing or failing on this machine) LoRA over the float base is measured instead, and the
estimate says so in `method_note`: its time is close, its memory is higher than a 4-bit base's.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from tuneloop.config import Recipe
from tuneloop.data.records import Example


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def planned_micro_batches(n_items: int, recipe: Recipe) -> tuple[int, int]:
    """(optimizer steps, micro-batches) the recipe will run, counted as `train.sft` does."""
    cfg = recipe.train
    batch_size = min(cfg.batch_size, n_items)
    per_epoch = math.ceil(n_items / batch_size)
    steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    return steps, steps * cfg.grad_accum


def build_method(model, tokenizer, recipe: Recipe, precision: str, device, source=None):
    """(model ready to train with `train.method`, the method built, why another one was built
    or None). Changes `model` in place, as training does, except for qlora, which loads a 4-bit
    base from `source` (a `ModelSource`) and leaves `model` alone."""
    from tuneloop.models.adapters import (
        apply_method,
        attach_lora,
        check_method,
        enable_checkpointing,
        load_base,
    )

    cfg = recipe.train
    if cfg.method == "qlora":
        try:
            if source is None:
                raise ValueError("no model folder to load a 4-bit base from")
            model = load_base(source, cfg, precision, recipe.model.trust_remote_code)
        except Exception as err:  # bitsandbytes missing, or without kernels for this machine
            note = (
                f"a 4-bit qlora base could not be built here ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else 'no detail'}): measured LoRA over "
                "the float base, about as fast, but its memory is higher than a 4-bit base's"
            )
            return attach_lora(model, cfg.lora).to(device), "lora", note
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    check_method(model, cfg)
    tokenizer_path = source.path if source is not None else tokenizer.name_or_path
    model = apply_method(model, cfg, tokenizer_path)
    if cfg.method != "qlora":  # 4-bit layers are placed by bitsandbytes when loading
        model = model.to(device)
    return model, cfg.method, None


def measure_training(
    model, tokenizer, train: list[Example], recipe: Recipe, steps: int = 3, device=None,
    source=None,
) -> dict:  # fmt: skip
    """Run `steps` + 1 steps of the recipe's method on sampled batches of `train`; extrapolate
    to the recipe. `source` (the model's `ModelSource`) is needed for qlora only.

    Puts the method on `model` in place: call it last, on a model you no longer need plain.
    """
    import torch

    from tuneloop.data.templates import tokenize_dataset
    from tuneloop.train.loop import autocast, resolve_precision
    from tuneloop.train.sft import collate, sft_loss

    cfg = recipe.train
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.precision, device)
    items, _ = tokenize_dataset(tokenizer, train, cfg.max_length, cfg.truncation)
    batch_size = min(cfg.batch_size, len(items))
    torch.manual_seed(cfg.seed)
    model, measured, note = build_method(model, tokenizer, recipe, precision, device, source)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr)
    rng = random.Random(cfg.seed)
    timings, tokens = [], []
    reset = _peak_rss_reset() if device.type == "cpu" else False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 1):
        batch = collate(rng.sample(items, batch_size), tokenizer.pad_token_id)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        t0 = time.perf_counter()
        with autocast(precision, device):
            loss, _ = sft_loss(model, batch)
        (loss / batch["n"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step > 0:  # the first step pays for one-off allocations and kernel choices
            timings.append(time.perf_counter() - t0)
            tokens.append(int(batch["input_ids"].numel()))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss_bytes()
    optimizer_steps, micro = planned_micro_batches(len(items), recipe)
    per_batch = sum(timings) / len(timings)
    return {
        "method_measured": measured,
        "method_planned": cfg.method,
        "method_note": note,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "device": str(device),
        "precision": precision,
        "measured_steps": len(timings),
        "batch_size": batch_size,
        "seconds_per_micro_batch": round(per_batch, 3),
        "tokens_per_s": round(sum(tokens) / sum(timings), 1),
        "optimizer_steps": optimizer_steps,
        "micro_batches": micro,
        "estimated_seconds": round(per_batch * micro, 1),
        "peak_memory_bytes": peak,
        "peak_memory_scope": "cuda allocator"
        if device.type == "cuda"
        else ("process, during the steps" if reset else "process, since start"),
        "train_items": len(items),
    }
