"""A tiny finished tuneloop run (a few LoRA steps on the tiny model) to export."""

from __future__ import annotations

import json
from pathlib import Path

from tuneloop.config import validate_recipe
from tuneloop.workspace import Run

LABELS = ["alpha", "beta", "gamma"]


def train_tiny_run(folder: Path, model_dir: Path, steps: int = 16) -> Run:
    from tuneloop.train.sft import train

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"item {i} about {LABELS[i % 3]} things"},
                {"role": "assistant", "content": LABELS[i % 3]},
            ]
        }
        for i in range(30)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    recipe = validate_recipe(
        {
            "name": "tiny",
            "workspace": str(folder / "ws"),
            "model": {"name": str(model_dir)},
            "data": {
                "train": str(folder / "train.jsonl"),
                "heldout": str(folder / "heldout.jsonl"),
            },
            "task": {"instruction": "Name the topic of the item."},
            "train": {
                "max_steps": steps,
                "batch_size": 4,
                "lr": 0.02,
                "precision": "fp32",
                "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]},
            },
            "eval": {"max_new_tokens": 6},
        }
    )
    return train(recipe, progress=False)
