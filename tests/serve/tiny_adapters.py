"""Tiny LoRA adapters on the tiny model, saved the way `tuneloop train` saves them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import build_tiny_model

# (name, target modules, rank): different layers and ranks, so a mixed batch really mixes.
ADAPTERS = [
    ("alpha", ["q_proj", "v_proj"], 4),
    ("beta", ["q_proj", "k_proj", "v_proj", "o_proj"], 8),
    ("gamma", ["gate_proj", "up_proj", "down_proj"], 2),
]


def make_adapter(
    folder: Path,
    tokenizer,
    base_dir: Path,
    targets: list[str],
    r: int,
    seed: int,
    instruction: str | None = None,
    max_new_tokens: int = 12,
    **lora,
) -> Path:
    """A LoRA adapter with random (non-zero) weights, its tokenizer and tuneloop.json."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=targets,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        **lora,
    )
    model = get_peft_model(build_tiny_model(len(tokenizer)), config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    recipe = {"task": {"instruction": instruction}, "eval": {"max_new_tokens": max_new_tokens}}
    meta = {"run": folder.name, "base_model": str(base_dir), "recipe": recipe}
    (folder / "tuneloop.json").write_text(json.dumps(meta))
    return folder


def make_adapters(root: Path, tokenizer, base_dir: Path) -> dict[str, Path]:
    return {
        name: make_adapter(root / name, tokenizer, base_dir, targets, r, seed=10 + i)
        for i, (name, targets, r) in enumerate(ADAPTERS)
    }
