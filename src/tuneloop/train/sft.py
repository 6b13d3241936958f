"""Supervised fine-tuning with LoRA, top to bottom: data, model, optimizer, loop, save.

The loss is next-token cross-entropy on assistant tokens only. The language-model head is
applied only at supervised positions, so the (tokens x vocabulary) logits of the prompt are
never computed: with a 49k vocabulary and short answers that is most of the head's cost.
"""

from __future__ import annotations

import math
import shutil
import time

import torch
import torch.nn.functional as F

from tuneloop.config import Recipe
from tuneloop.data.prepare import load_datasets
from tuneloop.data.split import write_split
from tuneloop.data.templates import IGNORE_INDEX, TokenizedExample, tokenize_dataset
from tuneloop.errors import UserError
from tuneloop.files import write_json
from tuneloop.models.adapters import attach_lora
from tuneloop.models.load import load_model, load_tokenizer, resolve, weights_hash
from tuneloop.train.checkpoint import LoopState
from tuneloop.train.loop import (
    LoopConfig,
    MetricsLog,
    MicroBatches,
    resolve_precision,
    resume_state,
    run_loop,
)
from tuneloop.train.schedule import make_scheduler
from tuneloop.workspace import Run, new_run


def collate(items: list[TokenizedExample], pad_id: int) -> dict:
    """Right-pad to the longest item. `n` counts the supervised next-token targets.

    input_ids, labels, attention_mask: (B, T)
    """
    width = max(len(i.input_ids) for i in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    n_targets = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "n": n_targets}


def decoder_and_head(model):
    """The transformer body and the LM head of a (possibly PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def sft_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed cross-entropy over the supervised next-token targets of the batch.

    Position t predicts token t+1, so the hidden state at t is scored against labels[t+1].
    """
    decoder, head = decoder_and_head(model)
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state  # (B, T, H)
    targets = batch["labels"][:, 1:]  # (B, T-1)
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep])  # (N, V): only supervised positions
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, {}


def train(recipe: Recipe, resume: Run | None = None, progress: bool = True) -> Run:
    """Train `recipe` into a new run folder, or continue `resume` from its last checkpoint."""
    cfg = recipe.train
    data = load_datasets(recipe)
    source = resolve(recipe.model.name, recipe.model.trust_remote_code)
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
    items, truncation = tokenize_dataset(tokenizer, data.train, cfg.max_length, cfg.truncation)

    # Everything the user could have got wrong is checked: only now does a run folder appear.
    if resume is None:
        run = new_run(recipe.workspace, recipe.name, recipe.to_yaml())
        if data.split_made:
            write_split(
                run.path / "data",
                data.train,
                data.heldout,
                seed=recipe.data.split.seed,
                heldout_fraction=recipe.data.split.heldout_fraction,
                sources=[str(recipe.data.train)],
            )
    else:
        run = resume
        _check_same_data(run, data.info)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.precision, device)
    batch_size = min(cfg.batch_size, len(items))
    per_epoch = math.ceil(len(items) / batch_size)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    run.update(
        status="training",
        model={
            "name": recipe.model.name,
            "path": str(source.path),
            "origin": source.origin,
            "weights_sha256_16": weights_hash(source),
        },
        data=data.info,
        truncation=truncation.__dict__,
        precision=precision,
        device=str(device),
        total_steps=total_steps,
    )

    torch.manual_seed(cfg.seed)  # LoRA's A matrices are drawn here
    model = attach_lora(load_model(source, recipe.model.trust_remote_code), cfg.lora).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(
        optimizer, total_steps, round(cfg.warmup_ratio * total_steps), cfg.schedule
    )
    log = MetricsLog(run.metrics_path)
    state = (
        resume_state(run.checkpoints, model, optimizer, scheduler, log)
        if resume is not None
        else LoopState()
    )

    batches = MicroBatches(
        items, batch_size, cfg.seed, lambda xs: collate(xs, tokenizer.pad_token_id)
    )
    loop_cfg = LoopConfig(
        total_steps=total_steps,
        grad_accum=cfg.grad_accum,
        max_grad_norm=cfg.max_grad_norm,
        precision=precision,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        log_every=cfg.log_every,
    )
    started = time.perf_counter()
    state = run_loop(
        model, optimizer, scheduler, batches, sft_loss, loop_cfg, state,
        run.checkpoints, log, device, progress,
    )  # fmt: skip

    save_adapter(model, tokenizer, run, recipe)
    losses = [r["loss"] for r in log.read()]
    run.update(
        status="finished",
        steps=state.step,
        tokens=state.tokens,
        supervised_tokens=state.supervised_tokens,
        train_seconds=round(state.elapsed, 2),
        tokens_per_s=round(state.tokens / max(state.elapsed, 1e-9), 1),
        final_loss=losses[-1] if losses else None,
        wall_seconds_this_session=round(time.perf_counter() - started, 2),
    )
    return run


def save_adapter(model, tokenizer, run: Run, recipe: Recipe) -> None:
    """The PEFT adapter plus the tokenizer and chat template it was trained with, atomically."""
    tmp = run.path / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(
        tmp / "tuneloop.json",
        {"run": run.id, "base_model": recipe.model.name, "recipe": recipe.model_dump(mode="json")},
    )
    shutil.rmtree(run.adapter_dir, ignore_errors=True)
    tmp.rename(run.adapter_dir)


def _check_same_data(run: Run, info: dict) -> None:
    before = run.info().get("data", {})
    for key in ("train_sha256", "heldout_sha256"):
        if before.get(key) and before[key] != info.get(key):
            raise UserError(
                f"the data changed since run {run.id} started ({key} differs), so it cannot be "
                "resumed exactly",
                str(run.path),
                "restore the original data file, or start a new run without --resume",
            )
