"""How much memory a training run needs, printed before it starts.

    weights      every parameter at its stored size (4-bit NF4 for a QLoRA base), plus frozen
                 copies the objective keeps (the DPO reference of full fine-tuning, a teacher)
    gradients    float32, one per trainable parameter
    optimizer    AdamW: two float32 moments per trainable parameter (plain SGD: none)
    activations  what the backward pass needs from the forward, for one micro-batch:

        per layer and token, a decoder layer keeps about
            11 H + 4 I + 3 KV   values   (norm inputs/outputs, q k v, attention output,
                                          the MLP's gate, up, activation and product)
        with H the hidden size, I the MLP width and KV the key/value width; at 4 bytes in
        float32, about 2.5 with bf16 autocast (matrix products in bf16, norms in float32).
        Under bf16 autocast each matrix product also keeps the bf16 copy of its weight for
        the backward pass: 2 bytes per weight of the layers (none where the frozen weights are
        stored in bf16, see `models.adapters.store_frozen_in_bf16`).
        Gradient checkpointing keeps only each layer's input (H values, float32) plus one
        layer's full set, recomputed in the backward pass. Under bf16 autocast, full
        fine-tuning keeps the bf16 copy of every trained matrix for the backward pass too. The
        LM head adds the logits at the supervised positions: 3 float32 copies of N x V
        (logits, log-softmax, its gradient), N a large sum of B examples' answer tokens (as
        for packed rows below); where the head runs in chunks (`train/forward.py`,
        `head_logprobs`: SFT, DPO, GRPO with a frozen head), two float32 copies of one chunk
        and N x H float32 gradients instead.

        The micro-batch is the largest one the data make: padded rows, `batch_size` rows as
        long as the longest example (the batch that holds it is padded to it); packed rows,
        `batch_size` examples two standard deviations above the mean in total (B x mean +
        2 sqrt(B) x sd, at most the B longest): the peak is the largest batch's.
    overhead     what the process holds beyond those, measured on this stack (torch 2.13,
                 transformers 5, glibc's allocator; `bench/memory_estimate.py`):

        0.2 GiB   what loading a model leaves behind beyond its weights (the same at 135M and
                  360M parameters); QLoRA adds the float32 matrices it read before quantizing,
                  which the allocator keeps
        37%       of the transformer body's activations: the backward pass's temporaries and
                  the freed blocks the allocator keeps from one step to the next (measured
                  36-39% at 1k and 4k tokens per micro-batch); not of the LM head's N x V
                  buffers, single large blocks that malloc returns to the system

    loading      the peak while the weights load, when it is above the training loop's: the
                 weight file's pages, mapped and resident while tensors are made from them,
                 plus those tensors. A float32 file loaded as float32 is used in place (the
                 file is the weights); every other case copies: a bf16 or fp16 file is read
                 into float32 tensors (4 bytes a parameter), and the frozen weights stored in
                 bf16 for training are copies too. The mapping goes once nothing points into
                 it, so the training loop does not hold it (measured at the 1.7B shape: a 6.4
                 GiB float32 file and its 3.4 GiB of copies set the peak of a LoRA run).

Python and its libraries (torch, transformers, peft, tuneloop: about 0.43 GiB resident after
import) are not counted; `bench/memory_estimate.py` compares the estimate with the peak beyond
them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from tuneloop.train.forward import HEAD_CHUNK_VALUES, chunked_head

GIB = 1024**3
RUNTIME_BYTES = int(0.2 * GIB)  # left behind by loading a model, beyond its weights
CHUNKED_HEAD_OBJECTIVES = ("sft", "dpo", "grpo")  # those calling forward.supervised_logprobs
ALLOCATOR_SHARE = 0.37  # of the activations: backward temporaries, blocks kept between steps


@dataclass
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    trainable_params: int
    total_params: int
    tokens_per_micro_batch: int
    loading: int = 0

    @property
    def training(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    @property
    def total(self) -> int:
        """The peak: the training loop's, or loading's where that is higher."""
        return max(self.training, self.loading)

    def as_dict(self) -> dict:
        return {**asdict(self), "training": self.training, "total": self.total}

    def table(self) -> str:
        """Plain text, one component a line.

        >>> print(MemoryEstimate(2**30, 2**20, 2**21, 2**29, 2**28, 2**18, 2**28, 512).table())
        memory estimate (trainable 262,144 of 268,435,456 parameters, 0.10%)
          weights        1.00 GiB
          gradients      0.00 GiB
          optimizer      0.00 GiB
          activations    0.50 GiB   (512 tokens in the largest micro-batch)
          overhead       0.25 GiB   (allocator, loading; not Python and its libraries)
          total          1.75 GiB
        >>> big_file = MemoryEstimate(2**30, 0, 0, 2**29, 2**28, 0, 2**28, 512, loading=2**32)
        >>> for line in big_file.table().splitlines()[-3:]:
        ...     print(line)
          total          1.75 GiB   (training)
          loading        4.00 GiB   (the weight file mapped while tensors are made from it)
          peak           4.00 GiB
        """
        share = self.trainable_params / max(self.total_params, 1)
        rows = [
            f"memory estimate (trainable {self.trainable_params:,} of {self.total_params:,} "
            f"parameters, {share:.2%})",
            f"  weights      {self.weights / GIB:6.2f} GiB",
            f"  gradients    {self.gradients / GIB:6.2f} GiB",
            f"  optimizer    {self.optimizer / GIB:6.2f} GiB",
            f"  activations  {self.activations / GIB:6.2f} GiB   "
            f"({self.tokens_per_micro_batch:,} tokens in the largest micro-batch)",
            f"  overhead     {self.overhead / GIB:6.2f} GiB   "
            "(allocator, loading; not Python and its libraries)",
            f"  total        {self.training / GIB:6.2f} GiB",
        ]
        if self.loading > self.training:
            rows[-1] += "   (training)"
            rows += [
                f"  loading      {self.loading / GIB:6.2f} GiB   "
                "(the weight file mapped while tensors are made from it)",
                f"  peak         {self.total / GIB:6.2f} GiB",
            ]
        return "\n".join(rows)


def estimate_memory(
    model,
    cfg,
    batch_size: int,
    lengths: list[tuple[int, int]],
    precision: str,
    frozen: list | None = None,
    shared_tokens: int = 0,
    files: list | None = None,
) -> MemoryEstimate:
    """Estimate of the peak for `model` (method applied) training on items of (tokens,
    supervised) sizes, with the largest micro-batch the data make (see the module's
    docstring). `shared_tokens`: tokens of such a batch that a shared prompt prefix takes out
    of the transformer body (they run once, not once per sequence; `train/forward.py`).
    `files`: the weight files the model was loaded from, for the peak while loading.
    """
    params = list({id(p): p for p in model.parameters()}.values())  # tied weights once
    weights = sum(_bytes(p) for p in params)
    weights += sum(_bytes(p) for m in frozen or [] for p in m.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(_numel(p) for p in params)

    longest = sorted((t for t, _ in lengths), reverse=True)
    packed = getattr(cfg, "packing", False) is True  # `auto` is decided before this is called
    if packed and longest:  # no padding: a large sum of B examples
        tokens = _large_sum(longest, batch_size)
    else:
        tokens = batch_size * (longest[0] if longest else 0)  # padded to the longest
    supervised = _large_sum([s for _, s in lengths], batch_size)
    if packed or getattr(cfg, "gradient_checkpointing", False):
        shared_tokens = 0  # packed rows share nothing; the shared pass is off under checkpointing
    body, head = _activation_bytes(model, cfg, tokens - shared_tokens, supervised, precision)
    activations = body + head
    # the head's N x V buffers are single large blocks, which malloc returns to the system
    overhead = RUNTIME_BYTES + int(ALLOCATOR_SHARE * body)
    if cfg.method == "qlora":  # the float32 matrices read before quantizing, kept by malloc
        overhead += 4 * sum(_numel(p) for p in params if getattr(p, "quant_state", None))
    return MemoryEstimate(
        loading=_loading_bytes(files or [], params, total),
        weights=weights,
        gradients=4 * trainable,
        optimizer=(8 if getattr(cfg, "optimizer", "adamw") == "adamw" else 0) * trainable,
        activations=activations,
        overhead=overhead,
        trainable_params=trainable,
        total_params=total,
        tokens_per_micro_batch=tokens,
    )


def _activation_bytes(model, cfg, tokens: int, supervised: int, precision: str) -> tuple[int, int]:
    """(transformer body, LM head) bytes kept for the backward pass."""
    config = getattr(model, "config", None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", config)
    hidden = getattr(config, "hidden_size", 0)
    width = getattr(config, "intermediate_size", 4 * hidden)
    layers = getattr(config, "num_hidden_layers", 0)
    heads = getattr(config, "num_attention_heads", 1) or 1
    kv_heads = getattr(config, "num_key_value_heads", heads) or heads
    kv = 2 * hidden * kv_heads // heads
    vocab = getattr(config, "vocab_size", 0)
    per_value = 4.0 if precision == "fp32" else 2.5
    per_layer = tokens * (11 * hidden + 4 * width + 3 * kv // 2) * per_value
    if precision == "bf16" and (_frozen_linears_float32(base) or cfg.method == "full"):
        # the bf16 weight copies autocast keeps for the backward pass
        per_layer += 2 * (2 * hidden * hidden + 2 * hidden * kv // 2 + 3 * hidden * width)
    if getattr(cfg, "gradient_checkpointing", False):
        body = layers * tokens * hidden * 4 + per_layer
    else:
        body = layers * per_layer
    if cfg.method in ("prefix", "prompt"):  # full logits through PEFT's forward
        supervised = tokens
    if getattr(cfg, "objective", "sft") in CHUNKED_HEAD_OBJECTIVES and chunked_head(model):
        # `forward.head_logprobs`: one chunk's float32 logits and their bf16 copies at a time
        head = 2 * min(supervised * vocab, HEAD_CHUNK_VALUES) * 4 + supervised * hidden * 4
    else:
        head = 3 * supervised * vocab * 4
    return int(body), int(head)


def _loading_bytes(files: list, params: list, total: int) -> int:
    """The peak while loading (see the module's docstring): the mapped file, plus the tensors
    copied out of it, unless the parameters are the file's float32 tensors in place."""
    import torch

    file_bytes = sum(Path(f).stat().st_size for f in files)
    if not file_bytes:
        return 0
    stored = sum(_bytes(p) for p in params)
    float32_file = file_bytes >= 3.5 * total  # 4 bytes a parameter (2 for bf16 or fp16)
    if float32_file and all(p.dtype == torch.float32 for p in params):
        return file_bytes + RUNTIME_BYTES  # used in place
    copies = stored if float32_file else max(stored, 4 * total)  # read into float32 first
    return file_bytes + copies + RUNTIME_BYTES


def _frozen_linears_float32(model) -> bool:
    """Whether the layers' linear weights are float32 (cast to bf16 copies by autocast) rather
    than stored in bf16 (`models.adapters.store_frozen_in_bf16`) or quantized."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return any(type(m) is torch.nn.Linear and m is not head and m.weight.dtype == torch.float32
               and not m.weight.requires_grad for m in model.modules())  # fmt: skip


def _bytes(p) -> int:
    return p.numel() * p.element_size()


def _numel(p) -> int:
    """Parameters a tensor stands for: a packed 4-bit tensor holds two per byte."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    if shape is not None:
        n = 1
        for d in shape:
            n *= int(d)
        return n
    return p.numel()


def _large_sum(values: list[int], n: int) -> int:
    """A sum of `n` of the values that few batches exceed: n x mean + 2 sqrt(n) x sd (two
    standard deviations of a sum of n random draws), at most the n largest values."""
    if not values:
        return 0
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return min(sum(sorted(values, reverse=True)[:n]), math.ceil(n * mean + 2 * n**0.5 * sd))
