"""Supervised fine-tuning: next-token cross-entropy on the assistant's tokens only.

    loss = - sum over supervised targets t of log p(token_t | tokens before t)

summed here and divided by the number of supervised targets of the whole optimizer step by the
loop. The chat template decides which tokens are the assistant's (`data/templates.py`); the
shared forward (`train/forward.py`) runs the LM head only at those positions.

The session that drives every objective, this one included, is `train/session.py`.
"""

from __future__ import annotations

import torch

from tuneloop.config import Recipe
from tuneloop.data.templates import tokenize_dataset
from tuneloop.train.batching import collate, shared_prefix_length
from tuneloop.train.forward import decoder_and_head, supervised_logprobs
from tuneloop.train.objective import ObjectiveData

__all__ = ["collate", "decoder_and_head", "make_loss", "prepare", "sft_loss"]


def sft_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed cross-entropy over the batch's supervised next-token targets."""
    logps, _ = supervised_logprobs(model, batch)  # (N,)
    return -logps.sum(), {}


def prepare(recipe: Recipe, tokenizer) -> ObjectiveData:
    """Read, split (if needed) and tokenize chat examples, checked before weights load."""
    from tuneloop.data.prepare import load_datasets
    from tuneloop.data.split import write_split

    cfg = recipe.train
    data = load_datasets(recipe)
    train, truncation = tokenize_dataset(tokenizer, data.train, cfg.max_length, cfg.truncation)
    heldout = tokenize_heldout(tokenizer, data.heldout, cfg.max_length, cfg.truncation)

    def save_split(folder) -> None:
        write_split(
            folder,
            data.train,
            data.heldout,
            seed=recipe.data.split.seed,
            heldout_fraction=recipe.data.split.heldout_fraction,
            sources=[str(recipe.data.train)],
        )

    pad = tokenizer.pad_token_id
    return ObjectiveData(
        train=train,
        heldout=heldout,
        collate=lambda items: collate(items, pad, cfg.packing, cfg.max_length, cfg.share_prefix),
        info=data.info,
        truncation=truncation.__dict__,
        write_split=save_split if data.split_made else None,
        lengths=[(len(i.input_ids), i.n_supervised) for i in train],
        shared_prefix=shared_prefix_length(train) if cfg.share_prefix else 0,
    )


def tokenize_heldout(tokenizer, examples, max_length: int, policy: str) -> list:
    """Held-out examples tokenized like train; none left (all too long) means no eval loss."""
    from tuneloop.errors import UserError

    if not examples:
        return []
    try:
        return tokenize_dataset(tokenizer, examples, max_length, policy)[0]
    except UserError:
        return []


def make_loss(recipe: Recipe, model, source, device):
    return sft_loss
