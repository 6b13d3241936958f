"""The one forward pass every objective shares: logits at the supervised positions only.

Position t predicts token t+1, so the hidden state at t is scored against labels[t+1]. The
language-model head runs only where labels[t+1] is supervised: with a 49k vocabulary and short
answers, the (tokens x vocabulary) logits of the prompt are most of the head's cost, and
never needed.

    logits, targets, seq = supervised_logits(model, batch)
    # logits (N, V), targets (N,), seq (N,): N supervised targets, seq = the sequence each
    # belongs to (batch["seq_index"]), so per-sequence sums (DPO) are an index_add away.

Methods that change the model's inputs rather than its layers (prefix and prompt tuning put
virtual tokens in front) go through the PEFT model's own forward instead, which computes the
full logits; the virtual positions are dropped.

Objectives that need only the log-probability of each target (SFT, DPO, GRPO) call
`supervised_logprobs`: where the head is a frozen bias-free linear layer (every adapter method;
tied or not), it runs in chunks of rows (`head_logprobs`), so the (N x V) float32 logits, their
log-softmax and its gradient, 3 x 4 x N x V bytes (2.4 GiB for 4,000 answer tokens of a 49k
vocabulary), never exist at once, and the head's backward matrix product is done in the forward
pass while its chunk is at hand. Distillation needs the whole distribution and keeps the logits.

A batch whose rows all start with the same prompt tokens (`batch["shared_prefix"]` = P, see
`train/batching.py`: a system prompt, an instruction) runs those P tokens once, as one row,
and the rest of every row on top of their keys and values, expanded over the batch:

    prefix  (1, P)       -> keys and values of P positions (with their autograd history)
    rest    (B, T - P)   -> hidden states at positions P .. T-1, attending to prefix + row

The result is the same function of the weights (the rows' prefix hidden states are identical,
so computing them once changes nothing but the work); the gradient that flows back through
the expansion is the sum over rows, exactly what B copies would have received. With a long
shared instruction this removes most of a batch's tokens from the forward and backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneloop.data.templates import IGNORE_INDEX


def decoder_and_head(model):
    """The transformer body and the LM head of a (possibly PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def is_prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def model_inputs(batch: dict) -> dict:
    """What the transformer reads: a padding mask for padded rows, restarting positions for
    packed ones (and then no mask, which is what makes transformers build per-sequence
    attention). The cache is off: with one, transformers skips the packed-sequence masks."""
    inputs = {"input_ids": batch["input_ids"], "use_cache": False}
    if "position_ids" in batch:
        inputs["position_ids"] = batch["position_ids"]
        if "segments" in batch:  # read by the per-example attention only (train/segments.py)
            inputs["segments"] = batch["segments"]
    else:
        inputs["attention_mask"] = batch["attention_mask"]
    return inputs


def supervised_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (N, V), targets (N,), sequence index (N,)) at the N supervised targets."""
    targets = batch["labels"][:, 1:]  # (B, T-1)
    keep = targets != IGNORE_INDEX
    if is_prompt_learning(model):
        width = batch["input_ids"].shape[1]
        logits = model(**model_inputs(batch)).logits[:, -width:]  # drop virtual tokens
        logits = logits[:, :-1][keep]  # (N, V)
    else:
        _, head = decoder_and_head(model)
        logits = head(supervised_hidden(model, batch, keep))  # (N, V)
    return logits, targets[keep], batch["seq_index"][:, 1:][keep]


def supervised_hidden(model, batch: dict, keep: torch.Tensor) -> torch.Tensor:
    """The last hidden states (N, H) whose next token is a supervised target (`keep`)."""
    decoder, _ = decoder_and_head(model)
    prefix = batch.get("shared_prefix", 0)
    if prefix and not getattr(decoder, "gradient_checkpointing", False):
        # Hidden states from position P on: no target's input lies before P.
        hidden = shared_prefix_hidden(decoder, batch, prefix)  # (B, T - P, H)
        return hidden[:, :-1][keep[:, prefix:]]
    hidden = decoder(**model_inputs(batch)).last_hidden_state  # (B, T, H)
    return hidden[:, :-1][keep]


def supervised_logprobs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(target) (N,) in float32, sequence index (N,)) at the N supervised targets; the
    logits are never materialised where the head allows it (`chunked_head`)."""
    head = chunked_head(model)
    if head is None:
        logits, targets, seq = supervised_logits(model, batch)
        return token_logprobs(logits, targets), seq
    targets = batch["labels"][:, 1:]  # (B, T-1)
    keep = targets != IGNORE_INDEX
    hidden = supervised_hidden(model, batch, keep)
    return head_logprobs(hidden, head.weight, targets[keep]), batch["seq_index"][:, 1:][keep]


def chunked_head(model) -> torch.nn.Linear | None:
    """The LM head if `supervised_logprobs` runs it in chunks (`head_logprobs`): a frozen linear
    layer without bias, outside prefix and prompt tuning (whose logits come from PEFT)."""
    if is_prompt_learning(model):
        return None
    _, head = decoder_and_head(model)
    plain = type(head) is torch.nn.Linear and head.bias is None
    return head if plain and not head.weight.requires_grad else None


HEAD_CHUNK_VALUES = 2**25  # logits computed at once: rows x vocabulary (128 MiB in float32)


class _HeadLogprobs(torch.autograd.Function):
    """log softmax(h W^T)[target] per row, chunk by chunk, with d/dh kept from the forward:

        d log p_i / d h_i = (onehot(target_i) - softmax(h_i W^T)) W

    so the backward pass only scales each row by its incoming gradient. W is frozen (no
    gradient). The matrix products run in `dtype` (the autocast dtype, as `head(h)` would),
    the softmax in float32."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, dtype):
        n, vocab = hidden.shape[0], weight.shape[0]
        chunk = max(1, HEAD_CHUNK_VALUES // vocab)
        logps = torch.empty(n, dtype=torch.float32, device=hidden.device)
        wanted = hidden.requires_grad
        grad = torch.empty_like(hidden) if wanted else None
        w = weight.to(dtype)
        for start in range(0, n, chunk):
            h, t = hidden[start : start + chunk].to(dtype), targets[start : start + chunk]
            logits = (h @ w.t()).float()  # (n, V)
            lse = torch.logsumexp(logits, dim=-1)
            logps[start : start + chunk] = logits.gather(1, t[:, None]).squeeze(1) - lse
            if wanted:
                probs = logits.sub_(lse[:, None]).exp_()  # in place: softmax
                probs[torch.arange(len(t), device=t.device), t] -= 1.0  # softmax - onehot
                grad[start : start + chunk] = -(probs.to(dtype) @ w).to(hidden.dtype)
        if wanted:
            ctx.save_for_backward(grad)
        return logps

    @staticmethod
    def backward(ctx, grad_logps):
        (grad,) = ctx.saved_tensors
        return grad * grad_logps[:, None].to(grad.dtype), None, None, None


def head_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """log p(target) (N,) in float32 of a frozen bias-free head `weight` (V, H) over `hidden`
    (N, H), without the (N, V) logits: see `_HeadLogprobs`. Under autocast the products run
    in its dtype, as `head(hidden)` would."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    with torch.autocast(device, enabled=False):
        return _HeadLogprobs.apply(hidden, weight.detach(), targets, dtype)


def shared_prefix_hidden(decoder, batch: dict, prefix: int) -> torch.Tensor:
    """Hidden states at positions `prefix`.. of every row, the shared prefix run once.
    (Gradient checkpointing is off here: transformers drops the cache under it.)"""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows, width = ids.shape
    out = decoder(input_ids=ids[:1, :prefix], use_cache=True)
    # transformers 5 names the KV cache `cache` (in and out); 4.x `past_key_values`
    name = "cache" if "cache" in out else "past_key_values"
    cache = out[name]
    cache.batch_repeat_interleave(rows)  # (1, ...) -> (rows, ...), gradients summed back
    positions = torch.arange(prefix, width, device=ids.device).expand(rows, -1)
    return decoder(
        input_ids=ids[:, prefix:],
        attention_mask=mask,  # prefix and row: the mask covers all `width` positions
        position_ids=positions,
        use_cache=True,
        **{name: cache},
    ).last_hidden_state


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, in float32: (N, V), (N,) -> (N,)."""
    return -F.cross_entropy(logits.float(), targets, reduction="none")


def sequence_sums(values: torch.Tensor, seq: torch.Tensor, n_seqs: int) -> torch.Tensor:
    """Sum per sequence: values (N,), seq (N,) -> (n_seqs,)."""
    return torch.zeros(n_seqs, dtype=values.dtype, device=values.device).index_add(0, seq, values)


@torch.no_grad()
def check_packing_isolates(model, vocab_size: int) -> bool:
    """True when this model honours restarting position_ids: a sequence packed after another
    gets the same hidden states as alone. A model whose attention ignores them would let packed
    examples see each other, so packing is refused for it."""
    decoder, _ = decoder_and_head(model)
    was_training = decoder.training
    decoder.eval()
    g = torch.Generator().manual_seed(0)
    device = next(decoder.parameters()).device
    a = torch.randint(3, vocab_size, (1, 6), generator=g).to(device)
    b = torch.randint(3, vocab_size, (1, 5), generator=g).to(device)
    alone = decoder(input_ids=b, use_cache=False).last_hidden_state
    packed = decoder(
        input_ids=torch.cat([a, b], dim=1),
        position_ids=torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]], device=device),
        use_cache=False,
    ).last_hidden_state[:, 6:]
    decoder.train(was_training)
    scale = alone.abs().max().clamp_min(1.0)
    return bool(((packed - alone).abs().max() / scale) < 1e-3)


@torch.no_grad()
def check_prefix_sharing(model, vocab_size: int) -> bool:
    """True when running a shared prefix once gives this model's plain hidden states: two rows
    with a common start, through `shared_prefix_hidden` and through the plain forward. A model
    whose cache or masks behave otherwise (custom code) trains on the plain path instead."""
    decoder, _ = decoder_and_head(model)
    was_training = decoder.training
    decoder.eval()
    g = torch.Generator().manual_seed(0)
    device = next(decoder.parameters()).device
    ids = torch.randint(3, vocab_size, (2, 9), generator=g)
    ids[1, :5] = ids[0, :5]
    mask = torch.ones_like(ids)
    mask[1, -1] = 0  # a padded row, as batches have
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    try:
        plain = decoder(**batch, use_cache=False).last_hidden_state[:, 5:]
        shared = shared_prefix_hidden(decoder, batch, 5)
    except Exception:  # noqa: BLE001 - any failure means: do not use it for this model
        return False
    finally:
        decoder.train(was_training)
    keep = mask[:, 5:].bool().to(device)
    scale = plain.abs().max().clamp_min(1.0)
    return bool(((plain - shared)[keep].abs().max() / scale) < 1e-3)
