"""What `tuneloop serve` can be told, with its defaults (light: the CLI imports it for --help)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeOptions:
    """Everything `tuneloop serve` can be told, with its defaults (the CLI shows these)."""

    cache_size: int = 4  # adapters kept loaded at once
    max_batch: int = 32  # rows decoded together (per running batch)
    batch_wait_ms: float = 2.0  # how long an idle worker waits for a burst to arrive
    max_prefill_tokens: int = 4096  # prompt tokens admitted into a running batch per step
    batching: str = "continuous"  # continuous | static (a batch runs to its end; benchmarks)
    request_timeout_s: float = 600.0  # a request not answered by then gets a 504
    max_tokens: int = 1024  # the most `max_tokens` a request may ask for
    default_max_tokens: int = 256  # when neither the request nor the adapter's recipe says
    max_prompt_tokens: int = 4096
    max_body_bytes: int = 1_000_000
    max_pending: int = 512  # requests waiting before new ones get 429 with Retry-After
    precision: str = "auto"  # auto | bf16 | fp32, as in the recipe's train.precision
    bf16_weights: bool = True  # under bf16, keep the base's linear weights in bf16 (same answers)
