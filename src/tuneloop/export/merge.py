"""Merge an adapter into its base model and prove the merged weights behave the same.

`W' = W + scale * B @ A` for every adapted matrix (PEFT's `merge_and_unload`), then the merged
model's logits are compared with the adapter model's on the probe prompts; the export is kept only
when they agree within `tolerance` times the largest logit (1e-5 by default: about 2.5e-4 for
logits near 25), both in memory and read back from disk.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


@torch.no_grad()
def probe_logits(model, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Float32 logits of each probe; batches: list of (1, T) token ids."""
    model.eval()
    return [model(input_ids=ids).logits.float() for ids in batches]


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def merge_adapter(peft_model):
    """The plain transformers model with every adapter matrix folded into its base weight."""
    from tuneloop.errors import UserError

    try:
        return peft_model.merge_and_unload(safe_merge=True)
    except (ValueError, AttributeError, NotImplementedError) as exc:  # prompt tuning, ...
        raise UserError(
            f"this adapter cannot be merged into the base weights: {exc}",
            "--merge",
            "serve the adapter with tuneloop serve instead of exporting merged weights",
        ) from None


def save_merged(model, tokenizer, folder: Path, chat_template: str | None = None) -> Path:
    """Safetensors weights, config and the training tokenizer/chat template (`chat_template`
    replaces the template written, e.g. one that carries the task instruction); all or nothing.
    Config and tokenizer are written so transformers 4.5x and 5.x read them alike (portable.py).
    """
    from tuneloop.export.portable import make_portable

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if chat_template is not None:
        (tmp / "chat_template.jinja").write_text(chat_template)
    make_portable(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def reload(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
