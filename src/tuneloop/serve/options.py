"""What `tuneloop serve` can be told, with its defaults (light: the CLI imports it for --help)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeOptions:
    """Everything `tuneloop serve` can be told, with its defaults (the CLI shows these)."""

    cache_size: int = 4  # adapters kept loaded at once
    max_batch: int = 32  # requests generated together
    batch_wait_ms: float = 2.0  # how long an idle worker waits for a batch to fill
    max_tokens: int = 1024  # the most `max_tokens` a request may ask for
    default_max_tokens: int = 256  # when neither the request nor the adapter's recipe says
    max_prompt_tokens: int = 4096
    max_body_bytes: int = 1_000_000
    max_pending: int = 512  # requests waiting before new ones get 503
    precision: str = "auto"  # auto | bf16 | fp32, as in the recipe's train.precision
