"""Attention for packed rows, one example at a time: causal SDPA over each example's span.

A packed row holds several examples side by side (`train/batching.py`). transformers keeps
them apart with a block-diagonal mask over the whole row: SDPA then reads a (T, T) mask and
computes every block, the masked ones included, and on the CPU its backward pass with a mask
is the slowest kernel of a step (35% of a SmolLM2-135M step on 3 rows of 500 tokens). Here each
example's span attends to itself with `is_causal=True` and no mask, which is the same
function: a token sees exactly the earlier tokens of its own example in both.

    row:       a a a a a b b b p p      spans (0, 5) (5, 8) (8, 10)
    attention: SDPA(a, causal), SDPA(b, causal), SDPA(p, causal), concatenated along T

The spans come with the batch (`batch["segments"]`, made by `pack`) and reach the attention
through the decoder's keyword arguments; without them (padded rows, the held-out prefix path)
the function is transformers' own SDPA attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "tuneloop_segments"


def segment_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    segments: list[list[tuple[int, int]]] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (B, H, T, D), key and value (B, KV, T, D) -> (B, T, H, D), as transformers'
    attention functions return it."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if segments is None or query.shape[2] != key.shape[2]:  # no spans, or a KV cache
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)  # fmt: skip
    p = dropout if module.training else 0.0
    rows = []
    for r, spans in enumerate(segments):
        parts = [
            F.scaled_dot_product_attention(
                query[r : r + 1, :, start:end], key[r : r + 1, :, start:end],
                value[r : r + 1, :, start:end], dropout_p=p, is_causal=True, scale=scaling,
                enable_gqa=True,
            )  # (1, H, end - start, D)
            for start, end in spans
        ]  # fmt: skip
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def segment_attention_applies(model) -> bool:
    """Whether the model's attention goes through transformers' SDPA interface, where
    `use_segment_attention` can replace it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "_attn_implementation", None) == "sdpa"


def use_segment_attention(model) -> bool:
    """Switch a model on SDPA to the per-example attention (masks are still made as for SDPA,
    for the batches without spans). False, and nothing changed, for any other attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if not segment_attention_applies(model):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    base.set_attn_implementation(NAME)
    return True


def spans(positions: torch.Tensor) -> list[list[tuple[int, int]]]:
    """(start, end) of every run of positions that restarts at 0, per row:
    positions [[0 1 2 0 1 0]] -> [[(0, 3), (3, 5), (5, 6)]]."""
    out = []
    for row in positions.tolist():
        starts = [i for i, p in enumerate(row) if p == 0] + [len(row)]
        out.append(list(zip(starts[:-1], starts[1:], strict=True)))
    return out
