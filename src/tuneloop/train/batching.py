"""Token sequences to tensors: padded rows, or packed rows with no attention across examples.

Every objective hands a list of token sequences to `collate`; what comes back is the one batch
shape the shared forward (`train/forward.py`) reads:

    input_ids   (B, T)  token ids
    labels      (B, T)  the token where the loss looks at it, else IGNORE_INDEX (-100)
    seq_index   (B, T)  which of the given sequences each token belongs to; -1 for padding
    attention_mask (B, T)   padded rows only: 1 for real tokens
    position_ids   (B, T)   packed rows only: positions restart at 0 for every sequence
    segments       packed rows only: each row's (start, end) spans, one per sequence (and one
                   for the padding), for the per-example attention (`train/segments.py`)
    n_seqs      how many sequences the batch holds
    n           supervised next-token targets (the loop normalises the loss by it)
    shared_prefix  padded rows only, when asked: P > 0 when every row starts with the same P
                   tokens and none of them is a target's input (`train/forward.py` then runs
                   those P tokens once for the whole batch)

Packing three sequences of 5, 3 and 2 tokens into rows of 8 (first fit, longest first):

    row 0: a a a a a b b b      position_ids 0 1 2 3 4 0 1 2   seq_index 0 0 0 0 0 1 1 1
    row 1: c c p p p p p p      position_ids 0 1 0 1 2 3 4 5   seq_index 2 2 -1 -1 ...

A restart of position_ids is what tells the attention where a sequence ends: transformers
turns it into a block-diagonal causal mask (SDPA, eager) or into variable-length kernels (flash
attention), so no token sees another example. The first token of every packed sequence gets no
label, so the last token of one example is never asked to predict the first of the next.

Rows of `capacity` tokens bound the (T, T) mask of a mask-based attention. Attention that runs
one example at a time (`train/segments.py`) has no mask and no cost per row, so there the
session lays the whole batch in one row without padding (`one_row`): the rows above become

    row 0: a a a a a b b b c c  position_ids 0 1 2 3 4 0 1 2 0 1   (no p: nothing computed twice)
"""

from __future__ import annotations

import torch

from tuneloop.data.templates import IGNORE_INDEX, TokenizedExample
from tuneloop.train.segments import spans

# A shorter common prefix is not worth a second pass through the model.
MIN_SHARED_PREFIX = 16


def collate(
    seqs: list[TokenizedExample],
    pad_id: int,
    packing: bool = False,
    capacity: int = 0,
    share_prefix: bool = False,
) -> dict:
    """Padded rows (right padding), or rows of at most `capacity` tokens when `packing`;
    `share_prefix` marks a prompt prefix all padded rows have in common."""
    batch = pack(seqs, pad_id, capacity) if packing else pad(seqs, pad_id)
    batch["n_seqs"] = len(seqs)
    batch["n"] = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    if share_prefix and not packing:
        batch["shared_prefix"] = shared_prefix_length(seqs)
    return batch


def shared_prefix_length(seqs: list[TokenizedExample]) -> int:
    """Tokens every sequence starts with (a system prompt, an instruction), up to the input of
    the first target, and leaving every row at least one token of its own; 0 when fewer than
    `MIN_SHARED_PREFIX` or for a single sequence.

    Position t's hidden state predicts token t+1, so the prefix must end before the position
    that predicts the first supervised token: its hidden states are computed once, not per row.
    """
    if len(seqs) < 2:
        return 0
    first = seqs[0].input_ids
    n = len(first) - 1
    for s in seqs:
        n = min(n, len(s.input_ids) - 1)
        target = next((t for t, label in enumerate(s.labels) if label != IGNORE_INDEX and t > 0),
                      None)  # fmt: skip
        if target is not None:
            n = min(n, target - 1)
        n = next((i for i in range(n) if s.input_ids[i] != first[i]), n)
    return n if n >= MIN_SHARED_PREFIX else 0


def pad(seqs: list[TokenizedExample], pad_id: int) -> dict:
    """One row per sequence, right-padded to the longest."""
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    index = torch.full((len(seqs), width), -1, dtype=torch.long)
    for row, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[row, :n] = torch.tensor(s.input_ids)
        labels[row, :n] = torch.tensor(s.labels)
        mask[row, :n] = 1
        index[row, :n] = row
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "seq_index": index}


def pack(seqs: list[TokenizedExample], pad_id: int, capacity: int) -> dict:
    """Sequences placed first-fit, longest first, into rows of at most `capacity` tokens."""
    capacity = max(capacity, max(len(s.input_ids) for s in seqs))
    rows: list[list[int]] = []  # sequence indices per row
    room: list[int] = []
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i].input_ids)):
        n = len(seqs[i].input_ids)
        row = next((r for r, left in enumerate(room) if left >= n), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= n
    width = max(capacity - left for left in room)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    index = torch.full(shape, -1, dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for i in sorted(members):  # keep the given order inside a row: easier to read
            s = seqs[i]
            n = len(s.input_ids)
            ids[r, at : at + n] = torch.tensor(s.input_ids)
            labels[r, at : at + n] = torch.tensor(s.labels)
            labels[r, at] = IGNORE_INDEX  # never a target across the boundary
            positions[r, at : at + n] = torch.arange(n)
            index[r, at : at + n] = i
            at += n
        # Padding restarts its positions too, so it forms a sequence of its own.
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "seq_index": index,
            "segments": spans(positions)}  # fmt: skip


def layout_tokens(lengths: list[int], batches: list[list[int]], shared_prefix: int) -> dict:
    """Tokens the given batches (lists of indices into `lengths`) send through the model, as
    padded rows (each batch as long as its longest sequence, the shared prefix run once) and
    as packed rows in one row without padding."""
    padded = sum(len(b) * max(lengths[i] for i in b) - (len(b) - 1) * shared_prefix
                 for b in batches if b)  # fmt: skip
    packed = sum(lengths[i] for b in batches for i in b)
    return {"padded": padded, "packed": packed}


def one_row(batch: dict) -> dict:
    """A packed batch's sequences side by side in a single row, its padding dropped (each
    sequence stays whole and in place, so targets, positions and `n` are unchanged)."""
    keep = batch["seq_index"] >= 0
    row = {k: batch[k][keep].unsqueeze(0)
           for k in ("input_ids", "labels", "position_ids", "seq_index")}  # fmt: skip
    return {**batch, **row, "segments": spans(row["position_ids"])}
