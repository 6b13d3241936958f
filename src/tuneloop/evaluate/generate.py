"""Batched greedy generation with a KV cache, prompts rendered exactly as in training."""

from __future__ import annotations

import sys

import torch

from tuneloop.data.templates import render_prompt
from tuneloop.train.loop import autocast


def stop_token_ids(tokenizer) -> list[int]:
    """End-of-sequence plus the template's end-of-turn token, where the two differ."""
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    precision: str = "fp32",
    progress: bool = False,
) -> list[str]:
    """Greedy answers to chat prompts, in input order.

    Prompts are sorted by length so each batch pads little, left-padded so every row's next
    token is at the same position, and stop at the end-of-turn token.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    texts = [render_prompt(tokenizer, p) for p in prompts]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    answers: list[str] = [""] * len(prompts)
    model.eval()
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress, file=sys.stderr):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            n = len(encoded[i])
            ids[row, width - n :] = torch.tensor(encoded[i])
            mask[row, width - n :] = 1
        with autocast(precision, device):
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad,
            )
        for row, i in enumerate(chunk):
            new = [t for t in out[row, width:].tolist() if t not in stops and t != pad]
            answers[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return answers
