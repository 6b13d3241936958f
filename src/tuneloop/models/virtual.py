"""Prompt-learning adapters (prompt tuning, P-tuning, prefix tuning) inside our own decode loop.

These adapters learned inputs, not weights: `n` virtual token embeddings put before the prompt
(prompt tuning, P-tuning), or `n` key/value columns put in front of every layer's cache (prefix
tuning). Nothing changes in the model, so any row of a batch can carry its adapter's virtual
tokens while the other rows carry none, or another adapter's.

The rule, taken from what PEFT trains with (`PeftModelForCausalLM.forward`, peft 0.21.2):

- mask: the `n` virtual columns are real (1), and come right before the prompt
  (`forward`: `prefix_attention_mask = torch.ones(batch_size, num_virtual_tokens)`, concatenated
  in front of the prompt's mask).
- positions: the virtual columns count as tokens. Prompt tuning passes no position ids, so Llama
  numbers the `n + T` input columns 0.. (`position_ids = arange(...) + past_seen_tokens`): the
  virtual tokens take 0..n-1, the prompt n..n+T-1. Prefix tuning passes the prefix as the cache,
  so `past_seen_tokens = n` and the prompt again takes n..n+T-1; its generate path says the same
  (`_adjust_prompt_learning_kwargs`: "Offset position_ids by num_virtual_tokens").
  Either way a row's position ids are its mask's `cumsum - 1`, virtual columns included: the
  decode loop's ordinary rule, unchanged.

`PeftModel.generate` is not the reference here: with transformers 5.24 it does not follow that
rule (measured in tests/serve/test_virtual.py: it drops a prefix altogether, because transformers
now calls the cache `cache` and PEFT passes `past_key_values` beside it; for prompt tuning it
injects the virtual tokens again at every decoding step).

    >>> import torch
    >>> vt = VirtualTokens(kind="prompt", n=2, embeds=torch.zeros(2, 4))
    >>> row = prefill_inputs(vt, [7, 8, 9], lambda ids: torch.ones(len(ids), 4))
    >>> row.inputs_embeds.shape, row.positions, row.mask_len
    (torch.Size([5, 4]), [0, 1, 2, 3, 4], 5)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.errors import UserError

if TYPE_CHECKING:
    import torch

# PEFT type -> how its virtual tokens enter the model.
KINDS = {"PROMPT_TUNING": "prompt", "P_TUNING": "prompt", "PREFIX_TUNING": "prefix"}


@dataclass
class VirtualTokens:
    """One adapter's virtual tokens, in the base model's dtype.

    `embeds` (n, hidden) for `kind == "prompt"`; `past`, one (key, value) per layer, each
    (1, kv_heads, n, head_dim), for `kind == "prefix"`. Prefix keys are used as saved: PEFT
    puts them straight into the cache, so no rotary embedding is ever applied to them.
    """

    kind: str
    n: int
    embeds: torch.Tensor | None = None
    past: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    peft_type: str = ""
    folder: str = ""

    @classmethod
    def from_folder(cls, folder: str | Path, model) -> VirtualTokens:
        """Read a saved adapter for `model` (the base it was trained on; only its config and
        dtype are read, nothing in it changes). See `read_virtual_tokens`."""
        return read_virtual_tokens(folder, model)


def read_virtual_tokens(folder: str | Path, model) -> VirtualTokens:
    """The virtual tokens saved in `folder`, shaped exactly as PEFT's `get_prompt` shapes them.

    PEFT saves `prompt_embeddings`, the prompt encoder's *output* (`get_prompt_embedding_to_save`):
    for P-tuning the MLP is already applied, for a projected prefix the projection. Loaded for
    inference, PEFT uses that tensor as is (`get_prompt`, `inference_mode` branch), so it is all
    we need. A prefix is (n, layers * 2 * kv_heads * head_dim): `_prepare_prompt_learning_config`
    saved `token_dim = head_dim * num_key_value_heads` and `num_attention_heads =
    num_key_value_heads` for a grouped-query model, and `get_prompt` views it as (n, layers * 2,
    heads, head_dim), layer l's key at 2l and its value at 2l + 1.
    """
    folder = Path(folder)
    config = _adapter_config(folder)
    peft_type = str(config.get("peft_type", ""))
    if peft_type not in KINDS:
        raise _refusal(folder, peft_type)
    saved = _read_weights(folder)["prompt_embeddings"]
    return _shaped(saved, peft_type, int(config["num_virtual_tokens"]), model, folder)


def virtual_tokens_of(model) -> VirtualTokens | None:
    """The virtual tokens of a PEFT prompt-learning model's active adapter (what it would save:
    `get_prompt_embedding_to_save`), shaped for its base model; None for any other model.

    `tuneloop eval` decodes such a model through `greedy_batch` with these, not through
    `PeftModel.generate` (see the module docstring)."""
    config = getattr(model, "active_peft_config", None)
    if not getattr(config, "is_prompt_learning", False):
        return None
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    folder = Path(f"<adapter {model.active_adapter}>")
    if peft_type not in KINDS:
        raise _refusal(folder, peft_type)
    saved = model.get_prompt_embedding_to_save(model.active_adapter)
    return _shaped(saved, peft_type, int(config.num_virtual_tokens), model.get_base_model(), folder)


def _shaped(saved, peft_type: str, n: int, model, folder: Path) -> VirtualTokens:
    """`prompt_embeddings` (n, width) as the virtual tokens of `model` (the base)."""
    kind = KINDS[peft_type]
    dtype = model.get_input_embeddings().weight.dtype
    device = model.get_input_embeddings().weight.device
    saved = saved.to(device=device, dtype=dtype)
    text = model.config.get_text_config()
    if saved.shape[0] != n:
        raise _mismatch(folder, f"{saved.shape[0]} saved virtual tokens, config says {n}")
    if kind == "prompt":
        if saved.shape[1] != text.hidden_size:
            raise _mismatch(folder, f"width {saved.shape[1]}, the model's is {text.hidden_size}")
        return VirtualTokens(kind, n, embeds=saved, peft_type=peft_type, folder=str(folder))
    layers = text.num_hidden_layers
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    if saved.shape[1] != layers * 2 * kv_heads * head_dim:
        raise _mismatch(
            folder,
            f"prefix width {saved.shape[1]}, the model needs {layers} layers x 2 x "
            f"{kv_heads} kv heads x {head_dim} = {layers * 2 * kv_heads * head_dim}",
        )
    # (n, 2L * kvh * hd) -> (2L, kvh, n, hd): the permute([2, 0, 3, 1, 4]) of get_prompt, batch 1
    stacked = saved.view(n, 2 * layers, kv_heads, head_dim).permute(1, 2, 0, 3)
    past = [
        (stacked[2 * i].unsqueeze(0).contiguous(), stacked[2 * i + 1].unsqueeze(0).contiguous())
        for i in range(layers)
    ]
    return VirtualTokens(kind, n, past=past, peft_type=peft_type, folder=str(folder))


def _adapter_config(folder: Path) -> dict:
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise UserError(
            f"{folder} holds no adapter_config.json",
            str(folder),
            "pass the `adapter` folder of a finished run (tuneloop train writes it)",
        )
    return json.loads(path.read_text())


def _read_weights(folder: Path) -> dict:
    safe = folder / "adapter_model.safetensors"
    if safe.is_file():
        from safetensors.torch import load_file

        return load_file(safe)
    legacy = folder / "adapter_model.bin"
    if legacy.is_file():
        import torch

        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise UserError(
        f"{folder} holds adapter_config.json but no adapter_model.safetensors",
        str(folder),
        "copy the whole adapter folder that tuneloop train (or PEFT's save_pretrained) wrote",
    )


def _refusal(folder: Path, peft_type: str) -> UserError:
    if peft_type == "MULTITASK_PROMPT_TUNING":
        return UserError(
            f"{folder} is a MULTITASK_PROMPT_TUNING adapter: its virtual tokens depend on a task "
            "id given with every request, which the server has no way to receive",
            str(folder / "adapter_config.json"),
            "train the task with train.method prompt (one task, one set of virtual tokens), "
            "or run this adapter in Python with PEFT, passing task_ids to generate",
        )
    return UserError(
        f"{folder} is a {peft_type or 'untyped'} adapter, not one with virtual tokens (prompt "
        "tuning, P-tuning or prefix tuning)",
        str(folder / "adapter_config.json"),
        "serve LoRA-style adapters through the adapter pool; only PROMPT_TUNING, P_TUNING and "
        "PREFIX_TUNING folders are read here",
    )


def _mismatch(folder: Path, what: str) -> UserError:
    return UserError(
        f"{folder} does not fit this base model: {what}",
        str(folder / "adapter_model.safetensors"),
        "serve it on the base model it was trained on (`base_model` in its tuneloop.json)",
    )


# -- one row's prefill --------------------------------------------------------------------------


@dataclass
class RowPrefill:
    """What one row brings to its prefill forward.

    `past`: cache columns the row starts with, one (key, value) per layer, (1, kv_heads, P,
    head_dim); None for none. Then the input columns: `input_ids`, or, when some of them are not
    tokens (virtual embeddings), `inputs_embeds` (T, hidden). Every one of those P + T columns
    is real (mask 1), and the input columns take positions `first_position`, +1, ...
    `prompt_len` counts the prompt's own tokens (what a reply's usage reports).
    """

    past: list[tuple[torch.Tensor, torch.Tensor]] | None
    input_ids: list[int] | None
    inputs_embeds: torch.Tensor | None
    first_position: int
    prompt_len: int = 0

    @property
    def past_len(self) -> int:
        return 0 if self.past is None else self.past[0][0].shape[2]

    @property
    def input_len(self) -> int:
        return len(self.input_ids) if self.input_ids is not None else self.inputs_embeds.shape[0]

    @property
    def mask_len(self) -> int:
        """Real columns of the row after its prefill: virtual columns plus the prompt."""
        return self.past_len + self.input_len

    @property
    def positions(self) -> list[int]:
        return list(range(self.first_position, self.first_position + self.input_len))

    def embeds(self, embed_fn: Callable) -> torch.Tensor:
        """The input columns as embeddings (T, hidden), for a batch where some row needs them."""
        if self.inputs_embeds is not None:
            return self.inputs_embeds
        import torch

        return embed_fn(torch.tensor(self.input_ids, device=_device(embed_fn)))


def prefill_inputs(
    vt: VirtualTokens | None, prompt_ids: list[int], embed_fn: Callable | None = None
) -> RowPrefill:
    """A row's prefill under the rule in the module docstring. `embed_fn` maps token ids (T,)
    to embeddings (T, hidden): the model's `get_input_embeddings()`; needed for prompt kinds.

    - no adapter: input_ids = prompt, positions 0..T-1
    - prompt / P-tuning: inputs_embeds = [virtual (n); embed(prompt) (T)], positions 0..n+T-1
    - prefix: cache starts with the n prefix columns, input_ids = prompt, positions n..n+T-1
    """
    ids = list(prompt_ids)
    if vt is None:
        return RowPrefill(None, ids, None, 0, len(ids))
    if vt.kind == "prefix":
        return RowPrefill(vt.past, ids, None, vt.n, len(ids))
    if embed_fn is None:
        raise ValueError("prompt-tuning rows need embed_fn (the model's input embeddings)")
    import torch

    tokens = embed_fn(torch.tensor(ids, dtype=torch.long, device=vt.embeds.device))
    embeds = torch.cat([vt.embeds.to(tokens.dtype), tokens], dim=0)  # (n + T, hidden)
    return RowPrefill(None, None, embeds, 0, len(ids))


def _device(embed_fn) -> Any:
    weight = getattr(embed_fn, "weight", None)
    return weight.device if weight is not None else "cpu"


# -- a reference decode loop ----------------------------------------------------------------------


def greedy(
    model,
    vt: VirtualTokens | None,
    stops,
    prompt_ids: list[int],
    max_new_tokens: int,
    **forward_kwargs,
) -> list[int]:
    """Greedy tokens for one prompt: `greedy_batch` with a batch of one."""
    return greedy_batch(model, [(vt, prompt_ids)], stops, max_new_tokens, **forward_kwargs)[0]


def greedy_batch(
    model,
    rows: list[tuple[VirtualTokens | None, list[int]]],
    stops,
    max_new_tokens: int,
    **forward_kwargs,
) -> list[list[int]]:
    """Greedy tokens for a batch of (virtual tokens or None, prompt ids) rows, decoded together
    the way the serving loop does it: a left-padded `DynamicCache` with every row's last token
    in the last column, a 2D mask with 0 for padding, position ids = mask cumsum - 1.

    `model` is the plain causal LM (never a PEFT prompt-learning wrapper, which would add its
    own virtual tokens again); `forward_kwargs` go to every forward (e.g. a LoRA PeftModel's
    `adapter_names`). `stops`: the stop token ids (`generate.stop_token_ids`). Each row's
    tokens end with the first stop token, which is kept, as `generate` returns it.

    Layout after the prefill, P = the longest prefix, W = the longest input:

        cache columns   [ prefix columns (P) | input columns (W)             ]
        prefix row      [ 0 0 k k k          | 0 0 0 t t t t                 ]
        prompt row      [ 0 0 0 0 0          | v v v t t t t                 ]
        plain row       [ 0 0 0 0 0          | 0 0 0 0 t t t                 ]
    """
    import torch

    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        raise ValueError("pass the base model, not a PEFT prompt-learning model")
    with torch.no_grad():
        return _greedy_batch(model, rows, set(_stop_ids(stops)), max_new_tokens, forward_kwargs)


def prefill_batch(model, rows: list[tuple[VirtualTokens | None, list[int]]], pad_id: int = 0):
    """The model inputs that prefill `rows` (virtual tokens or None, prompt ids) together:
    `input_ids` or, when a row has prompt-tuning tokens, `inputs_embeds`; `attention_mask`,
    `position_ids` and `cache` (a `DynamicCache` holding the prefix columns, when any row has
    a prefix). The layout is the one in `greedy_batch`'s docstring; the serving loop stacks
    these rows under its running batch."""
    import torch
    from transformers import DynamicCache

    embed = model.get_input_embeddings()
    device = embed.weight.device
    prefills = [prefill_inputs(vt, ids, embed) for vt, ids in rows]
    batch = len(prefills)
    width_past = max(p.past_len for p in prefills)
    width = max(p.input_len for p in prefills)

    cache = DynamicCache(config=model.config)
    mask = torch.zeros(batch, width_past + width, dtype=torch.long, device=device)  # (B, P + W)
    for r, p in enumerate(prefills):
        mask[r, width_past - p.past_len : width_past] = 1
        mask[r, width_past + width - p.input_len :] = 1
    if width_past:
        for layer, (key, value) in enumerate(_batched_past(prefills, width_past)):
            cache.update(key, value, layer)
    # Each row's own positions, right-aligned; padding gets 0 (masked anyway). These equal the
    # mask's cumsum - 1 with the virtual columns counted, the rule for plain rows too.
    positions = torch.zeros(batch, width, dtype=torch.long, device=device)  # (B, W)
    for r, p in enumerate(prefills):
        positions[r, width - p.input_len :] = torch.tensor(p.positions, device=device)

    inputs: dict = {"attention_mask": mask, "position_ids": positions, "cache": cache}
    if any(p.input_ids is None for p in prefills):
        embeds = torch.zeros(batch, width, embed.embedding_dim, dtype=embed.weight.dtype,
                             device=device)  # fmt: skip
        for r, p in enumerate(prefills):
            embeds[r, width - p.input_len :] = p.embeds(embed)
        inputs["inputs_embeds"] = embeds  # (B, W, hidden)
    else:
        ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
        for r, p in enumerate(prefills):
            ids[r, width - p.input_len :] = torch.tensor(p.input_ids, device=device)
        inputs["input_ids"] = ids  # (B, W)
    return inputs


def _greedy_batch(model, rows, stop_ids: set[int], max_new_tokens: int, forward_kwargs: dict):
    import torch

    inputs = prefill_batch(model, rows)
    mask, positions, cache = (
        inputs.pop("attention_mask"),
        inputs.pop("position_ids"),
        inputs.pop("cache"),
    )
    batch = mask.shape[0]
    out: list[list[int]] = [[] for _ in rows]
    done = [False] * batch
    for _ in range(max_new_tokens):
        logits = model(**inputs, attention_mask=mask, position_ids=positions, cache=cache,
                       use_cache=True, logits_to_keep=1, **forward_kwargs).logits  # fmt: skip
        nxt = logits[:, -1].argmax(-1)  # (B,)
        for r, token in enumerate(nxt.tolist()):
            if not done[r]:
                out[r].append(token)
                done[r] = token in stop_ids
        if all(done):
            break
        inputs = {"input_ids": nxt[:, None]}  # (B, 1)
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
    return out


def _batched_past(prefills: list[RowPrefill], width: int) -> list[tuple]:
    """Each layer's prefix columns for the whole batch, right-aligned in `width` columns:
    (B, kv_heads, width, head_dim), zeros where a row has none (those columns are masked)."""
    first = next(p.past for p in prefills if p.past is not None)
    layers = []
    for layer, (k0, v0) in enumerate(first):
        key = k0.new_zeros(len(prefills), k0.shape[1], width, k0.shape[3])
        value = v0.new_zeros(len(prefills), v0.shape[1], width, v0.shape[3])
        for r, p in enumerate(prefills):
            if p.past is not None:
                k, v = p.past[layer]
                key[r, :, width - k.shape[2] :] = k[0]
                value[r, :, width - v.shape[2] :] = v[0]
        layers.append((key, value))
    return layers


def _stop_ids(stops) -> list[int]:
    return [int(s) for s in stops] if isinstance(stops, Iterable) else [int(stops)]
