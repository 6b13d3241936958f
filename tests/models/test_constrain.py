"""Grammar-constrained JSON answers: valid under the schema, ended, cached apart, compiled once."""

from __future__ import annotations

import doctest
import json

import jsonschema
import pytest

from conftest import build_tiny_model, count_generate_calls
from tuneloop.errors import UserError
from tuneloop.models import constrain
from tuneloop.models.constrain import (
    JsonConstraint,
    compiled_count,
    from_response_format,
    rows_processor,
)
from tuneloop.models.generate import GenerationCache, generate

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = {"type": "string", "enum": ["alpha", "beta", "gamma"]}
SCHEMAS = {
    "enum and required": {
        "type": "object",
        "properties": {"label": LABELS, "urgent": {"type": "boolean"}},
        "required": ["label", "urgent"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "topic": {
                "type": "object",
                "properties": {
                    "name": LABELS,
                    "score": {"type": "integer", "minimum": 0, "maximum": 9},
                },
                "required": ["name", "score"],
                "additionalProperties": False,
            }
        },
        "required": ["topic"],
        "additionalProperties": False,
    },  # fmt: skip
    "array and optional": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": LABELS, "minItems": 1, "maxItems": 3},
            "note": {"type": "string", "maxLength": 6},
        },
        "required": ["tags"],
        "additionalProperties": False,
    },
}
PROMPTS = [[{"role": "user", "content": f"message number {i}: " + "please " * (i % 3)}]
           for i in range(6)]  # fmt: skip
NEW_TOKENS = 48


@pytest.fixture(scope="module")
def padded_model(tiny_tokenizer):
    """The tiny model with 16 embedding rows past the tokenizer (as padded vocabularies have):
    the constraint must never let one of those be chosen."""
    return build_tiny_model(len(tiny_tokenizer) + 16)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_answer_is_valid_and_ends(name, tiny_tokenizer, padded_model):
    schema = SCHEMAS[name]
    usage: list[dict] = []
    answers = generate(padded_model, tiny_tokenizer, PROMPTS, max_new_tokens=NEW_TOKENS,
                       batch_size=4, precision="fp32", usage=usage,
                       constraint=JsonConstraint(tiny_tokenizer, schema))  # fmt: skip
    for answer, spent in zip(answers, usage, strict=True):
        jsonschema.validate(json.loads(answer), schema)
        # the end-of-turn token came before the budget: the answer ended, it was not cut
        assert spent["completion_tokens"] < NEW_TOKENS, answer
    # one line, json.dumps's separators: nothing spent on whitespace
    assert all(json.dumps(json.loads(a), ensure_ascii=False) == a for a in answers)


def test_unconstrained_tiny_model_is_not_json(tiny_tokenizer, padded_model):
    """The control: without the constraint the random tiny model writes no JSON at all."""
    answers = generate(padded_model, tiny_tokenizer, PROMPTS[:2], max_new_tokens=12,
                       precision="fp32")  # fmt: skip
    for answer in answers:
        with pytest.raises(json.JSONDecodeError):
            json.loads(answer)


def test_rows_under_different_constraints_or_none(tiny_tokenizer, padded_model):
    import torch

    a = JsonConstraint(tiny_tokenizer, SCHEMAS["enum and required"])
    b = JsonConstraint(tiny_tokenizer, SCHEMAS["nested"])
    ids = torch.tensor([tiny_tokenizer("message number 1")["input_ids"]] * 3)  # (3, T)
    with torch.no_grad():
        out = padded_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    max_new_tokens=NEW_TOKENS, do_sample=False,
                                    eos_token_id=a.stops, pad_token_id=tiny_tokenizer.pad_token_id,
                                    logits_processor=[rows_processor([a, None, b])])  # fmt: skip
    texts = tiny_tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    jsonschema.validate(json.loads(texts[0]), SCHEMAS["enum and required"])
    jsonschema.validate(json.loads(texts[2]), SCHEMAS["nested"])
    assert not texts[1].startswith("{")  # the free row is the model's own


def test_a_stuck_row_may_only_stop(tiny_tokenizer):
    """A token the grammar refuses (another processor, a sampler's slip) leaves the matcher in
    error: from then on the row may only stop, so it ends instead of writing on unchecked."""
    import torch

    constraint = JsonConstraint(tiny_tokenizer, None)
    processor = constraint.logits_processor(1)
    prompt = torch.tensor([tiny_tokenizer("message number 1")["input_ids"]])  # (1, T)
    first = processor(prompt, torch.zeros(1, len(tiny_tokenizer)))
    assert first[0, tiny_tokenizer.convert_tokens_to_ids("{")] == 0  # an object may start
    refused = tiny_tokenizer("please")["input_ids"][0]
    scores = processor(torch.cat([prompt, torch.tensor([[refused]])], 1),
                       torch.zeros(1, len(tiny_tokenizer)))  # fmt: skip
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == constraint.stops


@pytest.mark.e2e
def test_embedded_model_json_object_and_schema():
    """The embedded model in `json_object` mode writes an object and stops; under a schema
    its answer validates (the module docstring's example)."""
    from tuneloop.models.load import load

    model, tok, _ = load("smollm2-135m-instruct")
    chats = [
        [{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
        [{"role": "user", "content": "Give me a JSON object with your name and age."}],
    ]
    usage: list[dict] = []
    objects = generate(
        model,
        tok,
        chats,
        max_new_tokens=NEW_TOKENS,
        precision="fp32",
        usage=usage,
        constraint=from_response_format(tok, {"type": "json_object"}),
    )
    assert all(isinstance(json.loads(a), dict) for a in objects), objects
    assert all(u["completion_tokens"] < NEW_TOKENS for u in usage)
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
              "population": {"type": "integer", "minimum": 0, "maximum": 100000000}},
              "required": ["city", "population"], "additionalProperties": False}  # fmt: skip
    [answer] = generate(model, tok, chats[:1], max_new_tokens=NEW_TOKENS, precision="fp32",
                        constraint=JsonConstraint(tok, schema))  # fmt: skip
    jsonschema.validate(json.loads(answer), schema)
    assert json.loads(answer)["city"] == "Paris"


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"type": "object", "properties": {"n": {"type": "int"}}}, "$.properties.n.type"),
        ("an object please", "a JSON Schema is an object"),
        ({"type": "object", "properties": {"n": {"not": {"type": "string"}}}}, "not"),
        ({"type": "object", "properties": {"s": {"type": "string", "pattern": "[a-"}}},
         "is not a 'regex'"),
        ({"type": "object", "properties": {"n": {"type": "integer"}}, "if": {}, "then": {}},
         "Unimplemented keys"),
    ],
)  # fmt: skip
def test_invalid_schema_is_a_user_error(tiny_tokenizer, schema, said):
    with pytest.raises(UserError) as caught:
        JsonConstraint(tiny_tokenizer, schema, where="task.json_schema")
    [problem] = caught.value.problems
    assert problem.where == "task.json_schema"
    assert said in problem.what
    assert problem.fix


def test_response_format_mistakes_name_the_field(tiny_tokenizer):
    assert from_response_format(tiny_tokenizer, {"type": "text"}) is None
    with pytest.raises(UserError, match=r"response_format\.json_schema\.schema"):
        from_response_format(tiny_tokenizer, {"type": "json_schema", "json_schema": {}})
    with pytest.raises(UserError, match=r"response_format\.type: unknown response format"):
        from_response_format(tiny_tokenizer, {"type": "yaml"})


def test_compiled_once_per_tokenizer_and_schema(tiny_tokenizer):
    schema = {"type": "object", "properties": {"only_here": {"type": "boolean"}},
              "required": ["only_here"]}  # fmt: skip
    before = compiled_count()
    first = JsonConstraint(tiny_tokenizer, schema)
    again = JsonConstraint(tiny_tokenizer, json.loads(json.dumps(schema)))  # an equal copy
    assert compiled_count() == before + 1
    assert first._template is again._template
    JsonConstraint(tiny_tokenizer, {**schema, "required": []})
    assert compiled_count() == before + 2


def test_cache_keeps_constrained_answers_apart(tiny_tokenizer, padded_model, tmp_path,
                                               monkeypatch):  # fmt: skip
    monkeypatch.delenv("TUNELOOP_NO_CACHE")
    cache = GenerationCache(tmp_path)
    calls = count_generate_calls(padded_model)
    constraint = JsonConstraint(tiny_tokenizer, SCHEMAS["enum and required"])
    ask = dict(max_new_tokens=16, precision="fp32", cache=cache)
    constrained = generate(padded_model, tiny_tokenizer, PROMPTS[:2], constraint=constraint,
                           **ask)  # fmt: skip
    free = generate(padded_model, tiny_tokenizer, PROMPTS[:2], **ask)
    assert len(calls) == 2  # the free request was generated, not served the JSON answers
    assert free != constrained
    other = JsonConstraint(tiny_tokenizer, SCHEMAS["nested"])
    generate(padded_model, tiny_tokenizer, PROMPTS[:2], constraint=other, **ask)
    assert len(calls) == 3  # another schema, another key
    again = generate(padded_model, tiny_tokenizer, PROMPTS[:2], constraint=constraint, **ask)
    assert again == constrained and len(calls) == 3  # the same schema: from the cache


def test_docstrings():
    assert doctest.testmod(constrain, optionflags=doctest.ELLIPSIS).failed == 0
