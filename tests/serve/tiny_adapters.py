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


def make_peft_adapter(
    folder: Path, tokenizer, base_dir: Path, config, method: str, seed: int
) -> Path:
    """An adapter of any PEFT type (`config`) whose trainable weights look trained (random
    values added), with its tokenizer and a tuneloop.json naming `method`."""
    from peft import get_peft_model

    model = get_peft_model(build_tiny_model(len(tokenizer)), config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    recipe = {"train": {"method": method}, "eval": {"max_new_tokens": 12}}
    meta = {"run": folder.name, "base_model": str(base_dir), "recipe": recipe}
    (folder / "tuneloop.json").write_text(json.dumps(meta))
    return folder


def make_every_kind(root: Path, tokenizer, base_dir: Path) -> dict[str, Path]:
    """One adapter of each kind the server runs besides LoRA: DoRA, IA3, prompt tuning,
    prefix tuning."""
    from peft import IA3Config, PrefixTuningConfig, PromptTuningConfig

    return {
        "dora": make_adapter(
            root / "dora", tokenizer, base_dir, ["q_proj", "v_proj"], 4, seed=99, use_dora=True
        ),  # fmt: skip
        "ia3": make_peft_adapter(
            root / "ia3",
            tokenizer,
            base_dir,
            IA3Config(
                target_modules=["k_proj", "v_proj", "down_proj"],
                feedforward_modules=["down_proj"],
                task_type="CAUSAL_LM",
            ),
            "ia3",
            seed=5,
        ),  # fmt: skip
        "prompt": make_peft_adapter(
            root / "prompt",
            tokenizer,
            base_dir,
            PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
            "prompt",
            seed=6,
        ),  # fmt: skip
        "prefix": make_peft_adapter(
            root / "prefix",
            tokenizer,
            base_dir,
            PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
            "prefix",
            seed=7,
        ),  # fmt: skip
    }
