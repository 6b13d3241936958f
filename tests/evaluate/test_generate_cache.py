"""The cache of generated answers, the answer length derived from the references, and the
choice of torch threads."""

import warnings

import pytest

from conftest import count_generate_calls
from tuneloop.models import generate as gen
from tuneloop.models.generate import GenerationCache, generate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def cache_on(monkeypatch):
    monkeypatch.delenv("TUNELOOP_NO_CACHE", raising=False)  # conftest switches it off


PROMPTS = [
    [{"role": "user", "content": "I forgot my password"}],
    [{"role": "system", "content": "Classify."}, {"role": "user", "content": "cancel it"}],
    [{"role": "user", "content": "Where is my order?"}],
]


def test_cached_answers_equal_fresh_ones_and_the_model_is_not_asked_again(
    tmp_path, tiny_model, tiny_tokenizer
):
    fresh = generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=5, cache=False)
    calls = count_generate_calls(tiny_model)
    cache = GenerationCache(tmp_path / "cache")
    first = generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=5, cache=cache)
    assert first == fresh and calls == [3] and (cache.hits, cache.generated) == (0, 3)

    again = GenerationCache(tmp_path / "cache")  # as a later process finds it on disk
    second = generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=5, cache=again)
    assert second == fresh and calls == [3] and (again.hits, again.generated) == (3, 0)

    # only the prompt the cache lacks reaches the model
    extra = [{"role": "user", "content": "refund please"}]
    mixed = generate(tiny_model, tiny_tokenizer, [extra, *PROMPTS], max_new_tokens=5, cache=again)
    assert mixed[1:] == fresh and calls == [3, 1]


def test_other_settings_or_other_weights_are_other_keys(tmp_path, tiny_model, tiny_tokenizer):
    import torch

    cache = GenerationCache(tmp_path)
    generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=5, cache=cache)
    calls = count_generate_calls(tiny_model)
    generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=4, cache=cache)
    generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=5, batch_size=2, cache=cache)
    assert calls == [3, 2, 1]
    with torch.no_grad():  # a training step, in place: the fingerprint follows the weights
        next(tiny_model.parameters()).add_(0.5)
    changed = generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=5, cache=False)
    cached = generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=5, cache=cache)
    assert cached == changed and calls == [3, 2, 1, 3, 3]


def test_the_active_cache_and_its_bypass(tmp_path, monkeypatch, tiny_model, tiny_tokenizer):
    cache = GenerationCache(tmp_path)
    before = gen.use_cache(cache)
    try:
        generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=3)  # cache=None: active
        assert cache.generated == 3
        calls = count_generate_calls(tiny_model)
        generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=3)
        assert calls == [] and cache.hits == 3
        monkeypatch.setenv("TUNELOOP_NO_CACHE", "1")
        assert gen.active_cache() is None
        generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=3)
        assert calls == [3] and cache.hits == 3
    finally:
        gen.use_cache(before)


def test_evaluate_rung_reports_cache_hits_and_the_answer_length(
    tmp_path, tiny_model, tiny_tokenizer
):
    from tuneloop.config import Recipe
    from tuneloop.evaluate import run as run_mod

    recipe = Recipe.model_validate({"data": {"train": "x"}, "task": {"kind": "label"}})
    assert recipe.eval.max_new_tokens is None  # derived unless set
    examples = [run_mod.Example(messages=[{"role": "user", "content": f"item {i}"},
                                          {"role": "assistant", "content": ref}])
                for i, ref in enumerate(["alpha", "beta", "gamma alpha beta"])]  # fmt: skip
    before = gen.use_cache(GenerationCache(tmp_path))
    try:
        args = (tiny_model, tiny_tokenizer, "zero-shot", examples, recipe, "fp32", False)
        first = run_mod.evaluate_rung(*args).summary
        second = run_mod.evaluate_rung(*args).summary
    finally:
        gen.use_cache(before)
    assert first["generation_cache"]["hits"] == 0 and first["generation_cache"]["generated"] == 3
    assert second["generation_cache"]["hits"] == 3 and second["generation_cache"]["generated"] == 0
    longest = max(len(tiny_tokenizer(ex.reference)["input_ids"]) for ex in examples)
    budget = first["max_new_tokens"]
    assert budget["source"] == "derived" and budget["value"] == longest + 8
    assert budget["references_cut"] == 0 and "not set" in budget["why"]


def test_a_short_max_new_tokens_warns_once_naming_the_references_it_cuts(tiny_tokenizer):
    from tuneloop.evaluate import run as run_mod

    refs = ["x", "x x x x x x x x x x x x", "x x", "x x x x x x x x x x x x x x x x x x x"]
    lengths = [len(tiny_tokenizer(r)["input_ids"]) for r in refs]
    short = sorted(lengths)[1]  # shorter than two of the four
    assert sorted(lengths)[2] > short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        budget = run_mod.answer_budget(tiny_tokenizer, refs, short)
        run_mod.answer_budget(tiny_tokenizer, refs, short)  # the next rung: no second warning
    assert budget["source"] == "eval.max_new_tokens" and budget["references_cut"] == 2
    assert len(caught) == 1
    assert "cuts 2 of 4 reference answers" in str(caught[0].message)


def test_new_token_budget_derives_margins_and_caps():
    assert gen.new_token_budget([3, 5], None)["value"] == 13  # at least 8 tokens of margin
    assert gen.new_token_budget([100], None)["value"] == 125  # a quarter
    capped = gen.new_token_budget([40, 600], None)
    assert capped["value"] == 512 and capped["references_cut"] == 1 and "capped" in capped["why"]
    assert gen.new_token_budget([10, 40, 33], 32)["references_cut"] == 2


@pytest.mark.parametrize(
    ("cores", "load", "want"),
    [
        (2, 6.3, 1),  # the loaded 2-core machine of the issue: 1 thread
        (2, 0.1, 2),  # quiet: one per physical core
        (2, 0.6, 1),  # a core mostly taken
        (16, 4.0, 12),
        (8, None, 8),  # no load average (Windows): every core
        (0, 1.0, 1),  # never fewer than one
    ],
)
def test_choose_threads(cores, load, want):
    threads, why = gen.choose_threads(cores, load)
    assert threads == want and "core" in why


def test_usable_cores_is_a_positive_count_no_larger_than_the_cpus():
    import os

    assert 1 <= gen.usable_cores() <= (os.cpu_count() or 1)
