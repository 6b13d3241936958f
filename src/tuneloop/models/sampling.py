"""Batched sampling with the KV cache, reproducible from a seed: the completions RL learns from.

The prompts are prefilled together, left-padded (`virtual.prefill_batch`), each once however
many completions it gets; its cache rows are then copied for each of them, and every step feeds
each row its last token and reads one new token per row from the cache:

    prefill   ids (P, W) left-padded, mask (P, W), positions = each row's own 0..len-1
    expand    cache, mask, positions (P, ...) -> (P * repeats, ...), a prompt's rows together
    step      ids (B, 1), mask grows by one column, positions + 1, cache holds W + t columns

Tokens are drawn with `torch.multinomial` from softmax(logits / temperature) with the given
`torch.Generator`, so the same weights, prompts and seed give the same completions, whatever
happened to the global random state (dropout, an interrupted run). A row that has drawn a stop
token keeps its stop token and draws nothing more.
"""

from __future__ import annotations

import torch

from tuneloop.models.virtual import prefill_batch


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float,
    stop_ids: list[int],
    generator: torch.Generator,
    repeats: int = 1,
) -> list[list[int]]:
    """`repeats` sampled completions per prompt, a prompt's consecutively (token ids, the stop
    token kept when drawn). Each prompt is prefilled once and its cache copied to its rows."""
    inputs = prefill_batch(model, [(None, ids) for ids in prompts])
    mask, positions, cache = (inputs.pop(k) for k in ("attention_mask", "position_ids", "cache"))
    logits = model(**inputs, attention_mask=mask, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]  # fmt: skip
    if repeats > 1:  # (P, ...) -> (P * repeats, ...), prompt by prompt
        cache.batch_repeat_interleave(repeats)
        logits, mask, positions = (x.repeat_interleave(repeats, dim=0)
                                   for x in (logits, mask, positions))  # fmt: skip
    rows = len(prompts) * repeats
    stops = torch.tensor(sorted(stop_ids), device=mask.device)
    out = torch.zeros(rows, 0, dtype=torch.long, device=mask.device)  # (B, t)
    done = torch.zeros(rows, dtype=torch.bool, device=mask.device)
    for _ in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
        nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)
        out = torch.cat([out, torch.where(done, -1, nxt)[:, None]], dim=1)
        done |= torch.isin(nxt, stops)
        if bool(done.all()) or out.shape[1] == max_new_tokens:
            break
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
        logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions,
                       cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # fmt: skip
    return [[t for t in row if t >= 0] for row in out.tolist()]
