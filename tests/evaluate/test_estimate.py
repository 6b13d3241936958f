"""The training estimate measures the method the recipe plans (`train.method`): tiny model."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import build_tiny_model
from tuneloop.config import validate_recipe
from tuneloop.data.records import Example
from tuneloop.evaluate.estimate import measure_training
from tuneloop.models.adapters import apply_method
from tuneloop.models.load import resolve

pytestmark = pytest.mark.usefixtures("one_thread")


def recipe_for(tmp_path, model_dir, method: str, **train):
    path = tmp_path / "train.jsonl"
    row = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    path.write_text(json.dumps(row) + "\n")
    return validate_recipe({
        "name": "estimate",
        "workspace": str(tmp_path / "ws"),
        "model": {"name": str(model_dir)},
        "data": {"train": str(path)},
        "train": {"method": method, "batch_size": 2, "precision": "fp32", "max_steps": 10,
                  "lora": {"r": 4, "alpha": 8}, **train},
    })  # fmt: skip


def examples() -> list[Example]:
    chat = [{"role": "user", "content": "item about alpha"}, {"role": "assistant", "content": "a"}]
    return [Example(chat, {}, f"t:{i}") for i in range(6)]


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["full", "lora", "dora", "ia3", "prefix", "prompt"])
def test_the_estimate_measures_the_planned_method(method, tmp_path, tiny_tokenizer, tiny_model_dir):
    recipe = recipe_for(tmp_path, tiny_model_dir, method)
    vocab = len(tiny_tokenizer)
    estimate = measure_training(build_tiny_model(vocab), tiny_tokenizer, examples(), recipe,
                                steps=1, source=resolve(str(tiny_model_dir)))  # fmt: skip
    assert (estimate["method_measured"], estimate["method_planned"]) == (method, method)
    assert estimate["method_note"] is None
    # The weights that trained are the method's, as training builds them.
    expected = trainable_count(apply_method(build_tiny_model(vocab), recipe.train))
    assert estimate["trainable_parameters"] == expected
    if method == "full":
        assert expected == sum(p.numel() for p in build_tiny_model(vocab).parameters())
    assert estimate["micro_batches"] == 10 and estimate["measured_steps"] == 1


def test_qlora_is_measured_over_a_4bit_base_or_said_plainly(tmp_path, tiny_tokenizer,
                                                            tiny_model_dir):  # fmt: skip
    recipe = recipe_for(tmp_path, tiny_model_dir, "qlora", qlora={})
    model = build_tiny_model(len(tiny_tokenizer))
    # Without the model's folder no 4-bit base can be loaded: LoRA is measured, and said so.
    estimate = measure_training(model, tiny_tokenizer, examples(), recipe, steps=1)
    assert (estimate["method_measured"], estimate["method_planned"]) == ("lora", "qlora")
    assert "4-bit qlora base could not be built" in estimate["method_note"]
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    estimate = measure_training(build_tiny_model(len(tiny_tokenizer)), tiny_tokenizer, examples(),
                                recipe, steps=1, source=resolve(str(tiny_model_dir)))  # fmt: skip
    assert estimate["method_measured"] == "qlora", estimate["method_note"]
