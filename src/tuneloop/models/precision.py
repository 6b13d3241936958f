"""Which dtype the matrix products run in: fp32, or bf16 autocast where the hardware has it.

Training, evaluation, generation and serving all decide it here, so a model is run at the
precision it was trained with.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(setting: str, device: torch.device) -> str:
    """`auto` means bf16 autocast where the hardware has fast bf16, else fp32."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
