"""Tool calling for `tuneloop serve`: requests checked field by field, chats rendered byte for
byte as in training, answers read back into OpenAI's shape, and constrained decoding that
makes the embedded model's calls parse and validate."""

from __future__ import annotations

import copy
import doctest
import json
import re

import jsonschema
import pytest

from conftest import EMBEDDED, needs_embedded
from tuneloop.data.formats import read_examples
from tuneloop.data.templates import assistant_spans, render_chat, render_prompt
from tuneloop.models.constrain import compiled_count, rows_processor
from tuneloop.serve import tools as served_tools
from tuneloop.serve.protocol import RequestError
from tuneloop.serve.tools import (
    check_tool_choice,
    check_tools,
    parse_tool_calls,
    template_messages,
    tool_constraint,
    tool_grammar,
)

CITY = {"type": "string", "minLength": 1, "maxLength": 24}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": CITY,
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": CITY},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
FLIGHT = {
    "type": "function",
    "function": {
        "name": "book_flight",
        "description": "Book a flight for some passengers.",
        "parameters": {
            "type": "object",
            "properties": {
                "origin": CITY,
                "destination": CITY,
                "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            "required": ["origin", "destination", "passengers"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME, FLIGHT]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def call(call_id: str, name: str, **arguments) -> dict:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def strict(tool: dict) -> dict:
    return {**tool, "function": {**tool["function"], "strict": True}}


@pytest.fixture(scope="module")
def tok():
    from tuneloop.models.load import load_tokenizer, resolve

    return load_tokenizer(resolve(EMBEDDED), chat_template="chatml-tools")


def accepts(constraint, tok, text: str) -> bool:
    """Whether the constraint lets `text` be the whole answer."""
    matcher = constraint.matcher()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()


def answer_of(tok, messages: list[dict], tools: list[dict]) -> str:
    """What the template renders as the last (assistant) turn's answer: the text after the
    prompt of the chat before it, up to the end-of-turn token."""
    prompt = render_prompt(tok, messages[:-1], tools)
    whole = render_chat(tok, messages, tools)
    assert whole.startswith(prompt)
    return whole[len(prompt) :].split(tok.eos_token)[0]


# ---------------------------------------------------------------------------------- requests


def bad_tool(**function) -> list:
    return [WEATHER, {"type": "function", "function": function}]


@pytest.mark.parametrize(
    ("tools", "param", "said"),
    [
        ({"type": "function"}, "tools", "must be a list"),
        ([WEATHER, "get_time"], "tools[1]", "must be a function tool"),
        ([{"type": "retrieval", "function": {"name": "f"}}], "tools[0].type", "only function"),
        ([{"type": "function"}], "tools[0].function", "must be an object"),
        (bad_tool(description="no name"), "tools[1].function.name", "not a function name"),
        (bad_tool(name="get weather"), "tools[1].function.name", "not a function name"),
        (bad_tool(name="get_weather"), "tools[1].function.name", "offered twice"),
        (bad_tool(name="f", description=3), "tools[1].function.description", "string"),
        (bad_tool(name="f", strict="yes"), "tools[1].function.strict", "true or false"),
        (bad_tool(name="f", parameters={"type": "object", "properties": {"n": {"type": "int"}}}),
         "tools[1].function.parameters", "$.properties.n.type"),
        (bad_tool(name="f", parameters=["city"]), "tools[1].function.parameters",
         "a JSON Schema is an object"),
        (bad_tool(name="f", parameters={"type": "string"}), "tools[1].function.parameters",
         "JSON Schema of an object"),
    ],
)  # fmt: skip
def test_tool_mistakes_name_the_field(tools, param, said):
    with pytest.raises(RequestError) as caught:
        check_tools(tools)
    err = caught.value
    assert (err.status, err.param, err.code) == (400, param, "invalid_value")
    assert said in err.message


def test_tools_are_returned_as_given():
    tools = [WEATHER, {"type": "function", "function": {"name": "no-args_2"}}]
    assert check_tools(tools) is tools and check_tools([]) == []


def test_tool_choice():
    named = {"type": "function", "function": {"name": "get_time"}}
    assert [check_tool_choice(c, TOOLS) for c in (None, "none", "auto", "required", named)] == [
        "auto", "none", "auto", "required", named]  # fmt: skip
    assert check_tool_choice(None, []) == "none"
    for choice, tools in [
        ("sometimes", TOOLS),
        ({"type": "function", "function": {"name": "get_date"}}, TOOLS),
        ({"type": "function", "name": "get_time"}, TOOLS),
        (["get_time"], TOOLS),
        ("required", []),
    ]:
        with pytest.raises(RequestError) as caught:
            check_tool_choice(choice, tools)
        assert (caught.value.status, caught.value.param) == (400, "tool_choice")


# ---------------------------------------------------------------------------------- messages


def openai_chat(words: str | None = "Checking both.") -> list[dict]:
    """A chat with a weight-0 answer, two parallel calls (after `words`), their results and a
    final answer."""
    return [
        {"role": "system", "content": "You are Acme's travel assistant. Use the tools."},
        {"role": "user", "content": "Weather and time in Lima?"},
        {"role": "assistant", "content": "It is always nice there!", "weight": 0},
        {"role": "user", "content": "Please check."},
        {"role": "assistant", "content": words, "tool_calls": [
            call("call_a", "get_weather", city="Lima", unit="celsius"),
            call("call_b", "get_time", city="Lima")]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
        {"role": "assistant", "content": "18°C and sunny; it is 14:05 in Lima."},
    ]  # fmt: skip


@needs_embedded
@pytest.mark.parametrize("words", ["Checking both.", None])
def test_a_served_chat_renders_as_training_rendered_it(tok, tmp_path, words):
    """The chat read from OpenAI's fine-tuning format and trained on, and the same chat sent to
    the server as OpenAI's API has it (no weights, `refusal` and `name` keys, content parts):
    every serving prompt is the training text up to that answer, byte for byte."""
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": openai_chat(words), "tools": TOOLS}) + "\n")
    [example] = read_examples(path)
    text, spans = assistant_spans(tok, example.messages, example.tools)
    sent = copy.deepcopy(openai_chat(words))
    for message in sent:
        message.pop("weight", None)
        if message["role"] == "assistant":
            message["refusal"] = None
    parts = [{"type": "text", "text": "Weather and time "}, {"type": "text", "text": "in Lima?"}]
    sent[1] = {"role": "user", "name": "ana", "content": parts}

    turns = [i for i, m in enumerate(sent) if m["role"] == "assistant"]
    for turn, (start, _) in zip(turns, spans, strict=True):
        prompt = render_prompt(tok, template_messages(sent[:turn]), check_tools(TOOLS))
        assert prompt == text[:start]
    assert render_chat(tok, template_messages(sent), TOOLS) == render_chat(
        tok, example.messages, example.tools
    )
    assert "<tool_call>\n" in text and "<tool_response>\n14:05" in text


HI = {"role": "user", "content": "Hi"}
CALLS_C1 = {
    "role": "assistant",
    "content": None,
    "tool_calls": [call("c1", "get_time", city="Lima")],
}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ({"role": "user", "content": "Hi"}, "messages"),
        ([], "messages"),
        (["Hi"], "messages[0]"),
        ([{"role": "function", "content": "Hi"}], "messages[0].role"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
         "messages[0].content"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}],
         "messages[1].content"),
        ([{"role": "user", "content": "Hi"},
          {"role": "assistant", "content": None, "tool_calls": [
              {"id": "c1", "type": "function",
               "function": {"name": "get_time", "arguments": "{city: Lima}"}}]},
          {"role": "tool", "tool_call_id": "c1", "content": "14:05"}],
         "messages[1].tool_calls[0].function.arguments"),
        ([{"role": "user", "content": "Hi"},
          {"role": "assistant", "content": None, "tool_calls": [
              {"type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}],
         "messages[1].tool_calls[0].id"),
        ([HI, {"role": "tool", "tool_call_id": "c1", "content": "x"}], "messages[1].tool_call_id"),
        ([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "x"}],
         "messages[1].tool_call_id"),
        ([HI, CALLS_C1, {"role": "tool", "tool_call_id": "c2", "content": "14:05"}],
         "messages[2].tool_call_id"),
        ([HI, CALLS_C1, {"role": "user", "content": "Well?"}],
         "messages[1].tool_calls"),
    ],
)  # fmt: skip
def test_message_mistakes_name_the_field(messages, param):
    with pytest.raises(RequestError) as caught:
        template_messages(messages)
    assert (caught.value.status, caught.value.param, caught.value.code) == (
        400, param, "invalid_value")  # fmt: skip


# ---------------------------------------------------------------------------------- answers


@needs_embedded
def test_a_rendered_answer_parses_back_to_the_same_calls(tok):
    """The template's rendering of a turn with words and two calls, cut from the chat, parses
    back to the same words and calls; sent back as the assistant turn, it renders the same."""
    chat = openai_chat()[:5]
    answer = answer_of(tok, template_messages(chat), TOOLS)
    assert answer.count("<tool_call>") == 2
    content, calls = parse_tool_calls(answer)
    assert content == "Checking both."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Lima", "unit": "celsius"}),
        ("get_time", {"city": "Lima"}),
    ]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c["id"]) for c in calls)
    assert calls[0]["id"] != calls[1]["id"] and {c["type"] for c in calls} == {"function"}
    again = [*chat[:4], {"role": "assistant", "content": content, "tool_calls": calls}]
    assert render_chat(tok, template_messages(again), TOOLS) == render_chat(
        tok, template_messages(chat), TOOLS
    )


@pytest.mark.parametrize(
    ("text", "content", "names"),
    [
        ("It is 14:05.", "It is 14:05.", []),
        ("", None, []),
        ('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>', None, ["get_time"]),
        # cut by max_tokens: the text stays
        ('<tool_call>\n{"name": "get_time", "argu', '<tool_call>\n{"name": "get_time", "argu', []),
        # malformed JSON, arguments that are not an object, a missing name: the text stays
        ("<tool_call>\n{name: f}\n</tool_call>", "<tool_call>\n{name: f}\n</tool_call>", []),
        ('<tool_call>{"name": "f", "arguments": "x"}</tool_call>',
         '<tool_call>{"name": "f", "arguments": "x"}</tool_call>', []),
        ('A\n<tool_call>\n{"arguments": {}}\n</tool_call>\n<tool_call>\n'
         '{"name": "g", "arguments": {"a": [1]}}\n</tool_call>',
         'A\n<tool_call>\n{"arguments": {}}\n</tool_call>', ["g"]),
    ],
)  # fmt: skip
def test_parse_keeps_every_character_that_is_not_a_call(text, content, names):
    got, calls = parse_tool_calls(text)
    assert got == content
    assert [c["function"]["name"] for c in calls] == names


# ---------------------------------------------------------------------------------- grammar


def test_when_the_answer_is_free():
    assert tool_grammar(TOOLS, "none") is None
    assert tool_grammar(TOOLS, "auto") is None  # no strict function: nothing to enforce
    assert tool_grammar([], "auto") is None
    assert tool_grammar([strict(TIME)], "auto").startswith("%llguidance {}\nstart: TEXT | head")


@needs_embedded
def test_required_admits_exactly_the_templates_calls(tok):
    required = tool_constraint(tok, TOOLS, "required")
    one = [*openai_chat()[:4], {"role": "assistant", "content": None,
                                "tool_calls": [call("c", "get_time", city="Lima")]}]  # fmt: skip
    two = openai_chat()[:5]
    two[4]["content"] = None
    for chat in (one, two):
        assert accepts(required, tok, answer_of(tok, template_messages(chat), TOOLS))
    rendered = answer_of(tok, template_messages(one), TOOLS)
    assert (
        rendered == '<tool_call>\n{"name": "get_time", "arguments": {"city": "Lima"}}\n</tool_call>'
    )
    refused = [
        "It is 14:05.",  # no call
        "Sure.\n" + rendered,  # words before the call
        rendered.replace('": ', '":'),  # not the template's separators
        rendered.replace("get_time", "get_date"),  # a function not offered
        rendered.replace('"city"', '"town"'),  # arguments outside the schema
        rendered.replace('"Lima"', '"' + "L" * 25 + '"'),  # past maxLength
        rendered.replace("get_time", "get_weather"),  # get_weather's required unit missing
    ]  # fmt: skip
    assert not any(accepts(required, tok, text) for text in refused)

    single = tool_constraint(tok, TOOLS, "required", parallel_tool_calls=False)
    assert accepts(single, tok, rendered)
    assert not accepts(single, tok, answer_of(tok, template_messages(two), TOOLS))
    named = tool_constraint(tok, TOOLS, {"type": "function", "function": {"name": "get_weather"}})
    assert not accepts(named, tok, rendered)
    assert accepts(named, tok, rendered.replace(
        '"get_time", "arguments": {"city": "Lima"}',
        '"get_weather", "arguments": {"city": "Lima", "unit": "celsius"}'))  # fmt: skip


@needs_embedded
def test_auto_with_a_strict_function_lets_text_through_but_not_a_bad_call(tok):
    auto = tool_constraint(tok, [strict(WEATHER), TIME], "auto")
    call_time = '<tool_call>\n{"name": "get_time", "arguments": {"zone": 3}}\n</tool_call>'
    weather = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lima", "unit": "%s"}}'
               "\n</tool_call>")  # fmt: skip
    assert accepts(auto, tok, "It is sunny in Lima.\n\nAsk me anything.")
    assert accepts(auto, tok, "")
    assert accepts(auto, tok, "Let me look.\n" + weather % "celsius")
    assert accepts(auto, tok, call_time)  # not strict: any object of arguments
    assert accepts(auto, tok, weather % "celsius" + "\n" + call_time)
    assert not accepts(auto, tok, weather % "kelvin")  # strict: its schema
    assert not accepts(auto, tok, "See <tool_call> here")  # a call cannot escape the grammar
    assert not accepts(auto, tok, call_time + "\nDone.")  # words come before the calls


@needs_embedded
def test_a_schema_the_engine_cannot_compile_is_a_400_naming_it(tok):
    odd = {"type": "function", "function": {"name": "odd", "parameters": {
        "type": "object", "properties": {"n": {"not": {"type": "string"}}}}}}  # fmt: skip
    with pytest.raises(RequestError) as caught:
        tool_constraint(tok, [WEATHER, odd], "required")
    assert caught.value.param == "tools[1].function.parameters"
    assert "Unimplemented keys" in caught.value.message
    assert tool_constraint(tok, [WEATHER, odd], "auto") is None  # not constrained: not compiled


@needs_embedded
def test_compiled_once_and_keyed_by_its_grammar(tok):
    first = tool_constraint(tok, TOOLS, "required")
    before = compiled_count()
    again = tool_constraint(tok, TOOLS, "required")
    assert compiled_count() == before
    assert again.cache_key == first.cache_key
    assert tool_constraint(tok, TOOLS, "required", False).cache_key != first.cache_key
    assert again.stops == [tok.convert_tokens_to_ids("<|im_end|>")] and again.vocab == len(tok)


# ---------------------------------------------------------------------------------- the model

PROMPTS = [
    "What's the weather in Paris right now?",
    "What time is it in Tokyo?",
    "Book a flight from Oslo to Rome for two people.",
]


@pytest.mark.e2e
@needs_embedded
@pytest.mark.usefixtures("one_thread")  # steady under a loaded CPU, as in test_constrain
def test_embedded_model_calls_tools_that_parse_and_validate():
    """SmolLM2-135M-Instruct, never trained on tools, greedy: under `required` every answer is
    one call of an offered function with valid arguments, and under a named function, a call
    of that function; rows under different constraints share one batch."""
    import torch

    from tuneloop.models.load import load

    model, tok, _ = load(EMBEDDED, chat_template="chatml-tools")
    tok.padding_side = "left"
    tools = check_tools(TOOLS)
    required = tool_constraint(tok, tools, "required", parallel_tool_calls=False)
    named = tool_constraint(tok, tools, check_tool_choice(
        {"type": "function", "function": {"name": "book_flight"}}, tools), False)  # fmt: skip
    prompts = [*PROMPTS, PROMPTS[1]]
    constraints = [required, required, required, named]
    texts = [render_prompt(tok, template_messages([{"role": "user", "content": p}]), tools)
             for p in prompts]  # fmt: skip
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=64, do_sample=False,
                             logits_processor=[rows_processor(constraints)],
                             pad_token_id=tok.pad_token_id)  # fmt: skip
    new = out[:, batch["input_ids"].shape[1] :]
    answers = tok.batch_decode(new, skip_special_tokens=True)
    names = []
    for row, answer in zip(new.tolist(), answers, strict=True):
        assert tok.eos_token_id in row, f"cut, not ended: {answer!r}"
        content, calls = parse_tool_calls(answer)
        assert content is None and len(calls) == 1, answer
        function = calls[0]["function"]
        jsonschema.validate(json.loads(function["arguments"]), SCHEMAS[function["name"]])
        names.append(function["name"])
    assert names[3] == "book_flight"  # which function `required` calls is the model's choice


def test_docstrings():
    assert doctest.testmod(served_tools, optionflags=doctest.ELLIPSIS).failed == 0
