"""A hosted (OpenAI) fine-tuning job's data: OpenAI's chat JSONL with tools, tool calls, tool
results, turn weights and `parallel_tool_calls`, read, linted, converted, rendered with the
`chatml-tools` template, masked token by token, and trained on with the embedded model."""

from __future__ import annotations

import copy
import doctest
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import EMBEDDED, needs_embedded
from tuneloop.cli.main import app
from tuneloop.data import chat_templates, records, tooluse
from tuneloop.data.chat_templates import CHATML_TOOLS
from tuneloop.data.formats import read_examples, write_examples
from tuneloop.data.lint import lint_examples
from tuneloop.data.records import Example, content_hash, prompt_hash
from tuneloop.data.templates import (
    IGNORE_INDEX,
    assistant_spans,
    render_prompt,
    tokenize_example,
)
from tuneloop.errors import DataError, UserError

CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Hanoi", "Quito", "Perth", "Turin"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def call(call_id: str, name: str, **arguments) -> dict:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def record(i: int) -> dict:
    """Record `i` of a realistic export: a weight-0 first answer, a tool call and its result,
    a final answer; every fourth record ends on the call itself, and every third makes two
    calls at once (with parallel_tool_calls true)."""
    city = CITIES[i % len(CITIES)]
    both = i % 3 == 2
    calls = [call(f"call_{i}a", "get_weather", city=city)]
    results = [{"role": "tool", "tool_call_id": f"call_{i}a", "content": f"{10 + i}°C, sunny"}]
    if both:
        calls.append(call(f"call_{i}b", "get_time", city=city))
        results.append({"role": "tool", "tool_call_id": f"call_{i}b", "content": "14:05"})
    messages = [
        {"role": "system", "content": "You are Acme's travel assistant. Use the tools."},
        {"role": "user", "content": f"What's the weather like in {city} today?"},
        {"role": "assistant", "content": "It is always nice there!", "weight": 0},
        {"role": "user", "content": "Please check the live weather."},
        {"role": "assistant", "content": None, "tool_calls": calls, "weight": 1},
    ]
    if i % 4 != 3:
        messages += [*results, {"role": "assistant", "content": f"{10 + i}°C and sunny in {city}."}]
    return {"messages": messages, "tools": [WEATHER, TIME], "parallel_tool_calls": both}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def tuneloop(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def openai_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "openai.jsonl", [record(i) for i in range(8)])


@pytest.fixture(scope="module")
def embedded_tokenizer():
    from tuneloop.models.load import load_tokenizer, resolve

    return load_tokenizer(resolve(EMBEDDED))


@pytest.fixture(scope="module")
def tools_tokenizer():
    from tuneloop.models.load import load_tokenizer, resolve

    return load_tokenizer(resolve(EMBEDDED), chat_template="chatml-tools")


# ---------------------------------------------------------------------------------- reading


def test_an_openai_file_is_read_with_its_tools_calls_results_and_weights(openai_file):
    examples = read_examples(openai_file)
    assert len(examples) == 8
    ex = examples[0]
    assert ex.source == f"{openai_file}:1"
    assert ex.tools == [WEATHER, TIME] and ex.parallel_tool_calls is False
    assert ex.meta == {}  # tools and parallel_tool_calls are fields, not metadata
    roles = [m["role"] for m in ex.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "tool", "assistant"]
    assert ex.messages[2]["weight"] == 0
    assert ex.messages[4]["content"] is None
    assert ex.messages[4]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert ex.messages[5]["tool_call_id"] == "call_0a"
    assert ex.reference == "10°C and sunny in Paris."
    assert (
        examples[2].parallel_tool_calls is True and len(examples[2].messages[4]["tool_calls"]) == 2
    )
    # A final turn that is a tool call: the calls as compact JSON, for JSON scoring.
    assert examples[3].reference == '[{"name":"get_weather","arguments":{"city":"Cairo"}}]'
    assert examples[3].prompt_messages[-1]["content"] == "Please check the live weather."


def test_convert_round_trips_the_openai_fields(openai_file, tmp_path):
    out = tmp_path / "out.jsonl"
    result = tuneloop("data", "convert", openai_file, out, "--to", "messages")
    assert result.exit_code == 0, result.output
    original = [json.loads(line) for line in openai_file.read_text().splitlines()]
    assert [json.loads(line) for line in out.read_text().splitlines()] == original
    again = tmp_path / "again.jsonl"
    assert tuneloop("data", "convert", out, again).exit_code == 0
    assert again.read_bytes() == out.read_bytes()


def test_formats_without_tools_refuse_them_instead_of_dropping_them(openai_file, tmp_path):
    examples = read_examples(openai_file)
    for fmt in ("sharegpt", "alpaca", "prompt_completion"):
        with pytest.raises(UserError, match=f"cannot be written as {fmt}") as info:
            write_examples(tmp_path / "x.jsonl", examples, format=fmt)
        assert "messages" in info.value.problems[0].fix
    assert not (tmp_path / "x.jsonl").exists()


def set_call(key: str, value):
    """Set a key of the first call's function in a record made by `record`."""
    return lambda r: r["messages"][4]["tool_calls"][0]["function"].__setitem__(key, value)


def set_turn(n: int, key: str, value):
    return lambda r: r["messages"][n].__setitem__(key, value)


def zero_weights(r: dict) -> None:
    for m in r["messages"]:
        if m["role"] == "assistant":
            m["weight"] = 0


SECOND_CALL = call("call_0b", "get_time", city="Paris")
# One broken variant of record(0) per rule: (change, code, field, phrase of the message).
BROKEN = [
    (set_call("name", ""), "invalid-tool-call", "messages[4].tool_calls[0].function.name",
     "no function name"),
    (set_call("arguments", {"city": "Paris"}), "invalid-tool-call",
     "messages[4].tool_calls[0].function.arguments", "an object, not a string"),
    (set_call("arguments", "{city: Paris}"), "invalid-tool-call",
     "messages[4].tool_calls[0].function.arguments", "not valid JSON"),
    (set_turn(5, "tool_call_id", "call_9"), "unknown-tool-call", "messages[5].tool_call_id",
     "'call_9', which matches no unanswered call of turn 5"),
    (lambda r: r["messages"][4]["tool_calls"].append(SECOND_CALL), "parallel-tool-calls",
     "messages[4].tool_calls", '2 tool calls, but the record sets "parallel_tool_calls": false'),
    (set_turn(2, "weight", 0.5), "invalid-weight", "messages[2].weight",
     "weight 0.5; a weight is 0"),
    (set_turn(6, "weight", 0), "nothing-to-learn", "messages[6].weight",
     "the last turn has weight 0"),
    (zero_weights, "nothing-to-learn", None, "every assistant turn has weight 0"),
    (lambda r: r["messages"].insert(5, {"role": "user", "content": "Well?"}),
     "unanswered-tool-call", "messages[4].tool_calls",
     "turn 5 calls get_weather ('call_0a') but no tool turn answers"),
    (set_turn(4, "tool_calls", None), "wrong-type", "messages[4].content",
     "'content' must be a string, got null"),
    (lambda r: r.__setitem__("functions", [WEATHER["function"]]), "legacy-functions",
     "functions", "deprecated function-calling form"),
    (lambda r: r.__setitem__("parallel_tool_calls", "no"), "wrong-type", "parallel_tool_calls",
     "must be true or false"),
    (lambda r: r["tools"][0]["function"].pop("name"), "invalid-tool", "tools[0].function.name",
     "tools[0] has no function name"),
]  # fmt: skip


def broken(tmp_path: Path) -> tuple[Path, dict[int, tuple[str, str | None, str]]]:
    """A file of a good line 1 and each of `BROKEN` on lines 2, 3, ...: the file and
    {line: (code, field, phrase)}."""
    rows, expected = [record(0)], {}
    for change, code, field, phrase in BROKEN:
        row = copy.deepcopy(record(0))
        change(row)
        rows.append(row)
        expected[len(rows)] = (code, field, phrase)
    return write_jsonl(tmp_path / "broken.jsonl", rows), expected


def test_lint_from_the_command_line_passes_the_file(openai_file):
    result = tuneloop("data", "lint", openai_file)
    assert result.exit_code == 0, result.output
    assert "0 errors" in result.output
    findings = json.loads(tuneloop("data", "lint", openai_file, "--json").stdout)
    # The chats differ only in the city, so they are near-duplicates: a fair warning.
    assert {f["code"] for f in findings} == {"too-few-examples", "near-duplicate"}, findings


@needs_embedded
def test_lint_with_the_model_names_a_template_that_cannot_render_the_calls(openai_file):
    result = tuneloop("data", "lint", openai_file, "--model", EMBEDDED, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = [f for f in json.loads(result.stdout) if f["severity"] == "error"]
    assert finding["code"] == "chat-template" and "cannot render tool use" in finding["message"]
    assert "model.chat_template: chatml-tools" in finding["fix"]


def test_lint_flags_every_broken_record_with_its_line_and_field(tmp_path):
    path, expected = broken(tmp_path)
    result = tuneloop("data", "lint", path, "--json")
    assert result.exit_code == 1, result.output
    errors = {f["line"]: f for f in json.loads(result.stdout) if f["severity"] == "error"}
    assert set(errors) == set(expected)
    for line, (code, field, phrase) in expected.items():
        finding = errors[line]
        assert (finding["code"], finding.get("field")) == (code, field), finding
        assert phrase in finding["message"], finding
        assert finding["where"] == f"{path}:{line}" and finding["fix"], finding
    text = tuneloop("data", "lint", path).output
    assert f"{path}:5" in text and "Traceback" not in text


def test_training_reader_stops_at_the_first_problem_with_file_line_value_and_fix(tmp_path):
    r = record(0)
    r["messages"][2]["weight"] = 2
    path = write_jsonl(tmp_path / "d.jsonl", [record(1), r])
    with pytest.raises(DataError) as info:
        read_examples(path)
    problem = info.value.problems[0]
    assert problem.where == f"{path}:2"
    assert "weight 2" in problem.what and '"weight": 0 or "weight": 1' in problem.fix


def test_a_call_to_a_tool_not_offered_is_a_warning(tmp_path):
    r = record(0)
    r["tools"] = [TIME]
    result = tuneloop("data", "lint", write_jsonl(tmp_path / "d.jsonl", [r]), "--json")
    assert result.exit_code == 0, result.output
    (warning,) = [f for f in json.loads(result.stdout) if f["code"] == "unknown-tool"]
    assert "'get_weather'" in warning["message"] and warning["line"] == 1


# ------------------------------------------------------------------------ downstream checks


def test_hashes_see_the_calls_and_keep_plain_chats_as_they_were():
    a, b = Example(record(0)["messages"]), Example(record(0)["messages"])
    b.messages[4]["tool_calls"][0]["function"]["arguments"] = '{"city": "Rome"}'
    assert content_hash(a) != content_hash(b) and prompt_hash(a) != prompt_hash(b)
    spaced = Example(copy.deepcopy(a.messages))
    spaced.messages[4]["tool_calls"][0]["function"]["arguments"] = '{ "city" :  "Paris" }'
    spaced.messages[4]["tool_calls"][0]["id"] = "call_other"
    assert content_hash(spaced) == content_hash(a)  # ids and JSON spacing are not content
    assert content_hash(Example(a.messages, tools=[WEATHER])) != content_hash(a)
    # A chat without tools hashes exactly as before tool use existed.
    plain = [{"role": "user", "content": " Hi  there"}, {"role": "assistant", "content": "Yo"}]
    blob = json.dumps([["user", "Hi there"], ["assistant", "Yo"]], separators=(",", ":"))
    assert content_hash(Example(plain)) == hashlib.sha256(blob.encode()).hexdigest()


def test_checks_read_tool_calls_and_null_contents():
    leaky = record(0)
    leaky["messages"][4]["tool_calls"][0]["function"]["arguments"] = json.dumps(
        {"city": "Paris", "notify": "jane.doe@acme.co.uk"}
    )
    examples = [Example(r["messages"], source=f"t:{i}") for i, r in enumerate([leaky, record(1)])]
    twin = Example(copy.deepcopy(examples[1].messages), source="t:9")
    findings = lint_examples([*examples, twin])
    pii = [f for f in findings if f.code == "pii"]
    assert [(f.where, f.field) for f in pii] == [("t:0", "messages[4] (assistant)")]
    assert [f.where for f in findings if f.code == "duplicate"] == ["t:9"]


# ------------------------------------------------------------------------------ templates


@needs_embedded
def test_chatml_tools_renders_plain_chats_byte_for_byte_as_smollm2(
    embedded_tokenizer, tools_tokenizer
):
    assert tools_tokenizer.chat_template == CHATML_TOOLS != embedded_tokenizer.chat_template
    chats = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        [
            {"role": "system", "content": "Classify the message."},
            {"role": "user", "content": "I lost my card\n\nhelp"},
            {"role": "assistant", "content": "lost_card"},
            {"role": "user", "content": "And now?"},
            {"role": "assistant", "content": " spaced  "},
        ],
        [{"role": "user", "content": "Only a question"}],
    ]
    for chat in chats:
        for generation in (False, True):
            theirs, ours = (
                tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation)
                for tok in (embedded_tokenizer, tools_tokenizer)
            )
            assert ours == theirs


@needs_embedded
def test_the_embedded_template_is_refused_for_tool_calls_with_the_fix(embedded_tokenizer):
    ex = read_examples_from(record(0))
    with pytest.raises(UserError) as info:
        tokenize_example(embedded_tokenizer, ex)
    (problem,) = info.value.problems
    assert problem.where == "model.chat_template"
    assert "cannot render tool use" in problem.what and "never drops" in problem.what
    assert "model.chat_template: chatml-tools" in problem.fix
    with pytest.raises(UserError, match="cannot render tool use"):
        render_prompt(embedded_tokenizer, ex.prompt_messages, ex.tools)
    # Plain chats still render with the model's own template.
    plain = Example([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    assert tokenize_example(embedded_tokenizer, plain).n_supervised > 0


def test_a_template_that_silently_drops_the_calls_is_refused(tiny_tokenizer):
    tok = copy.copy(tiny_tokenizer)  # plain ChatML that prints content only: the calls vanish
    tok.chat_template = tok.chat_template.replace(
        "message['content']", "(message['content'] or '')"
    )
    ex = read_examples_from(record(0))
    with pytest.raises(UserError, match="leaves out the tools offered .* the tool call"):
        tokenize_example(tok, ex)


def read_examples_from(rec: dict) -> Example:
    return Example(rec["messages"], tools=rec["tools"], parallel_tool_calls=False, source="t:1")


@needs_embedded
def test_loss_mask_trains_weight_1_turns_and_their_calls_only(tools_tokenizer):
    tok = tools_tokenizer
    ex = read_examples_from(record(0))
    item = tokenize_example(tok, ex)
    text, _ = assistant_spans(tok, ex.messages, ex.tools)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == item.input_ids
    runs, current = [], []
    for token, label in zip(item.input_ids, item.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    assert not current  # the trailing newline after the last <|im_end|> is not trained
    call_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert runs == [call_text + "<|im_end|>", "10°C and sunny in Paris.<|im_end|>"]
    # The weight-0 turn: every token of it is ignored.
    start = text.index("It is always nice there!")
    end = text.index("<|im_end|>", start) + len("<|im_end|>")
    inside = [t for t, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]
    assert inside and all(item.labels[t] == IGNORE_INDEX for t in inside)
    # The tools (system turn), the user turns and the tool result are never supervised: the
    # runs above are all that is. Give the weight-0 turn weight 1 and it is trained too.
    ex.messages[2] = {**ex.messages[2], "weight": 1}
    assert tokenize_example(tok, ex).n_supervised > item.n_supervised


@needs_embedded
def test_tools_reach_the_inference_prompt(tools_tokenizer):
    ex = read_examples_from(record(3))  # ends on the call: the prompt asks for it
    prompt = render_prompt(tools_tokenizer, ex.prompt_messages, ex.tools)
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt
    assert prompt.endswith("Please check the live weather.<|im_end|>\n<|im_start|>assistant\n")
    assert "<tools>" not in render_prompt(tools_tokenizer, ex.prompt_messages)


@needs_embedded
def test_load_takes_a_chat_template_by_name_or_file(tmp_path):
    from tuneloop.models.load import load_tokenizer, resolve

    source = resolve(EMBEDDED)
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert load_tokenizer(source, chat_template=str(path)).chat_template == path.read_text()
    assert load_tokenizer(source, chat_template="chatml-tools").chat_template == CHATML_TOOLS
    with pytest.raises(UserError) as info:
        load_tokenizer(source, chat_template="chatml-tool")
    (problem,) = info.value.problems
    assert problem.where == "model.chat_template"
    assert "'chatml-tool' is neither a built-in template nor a file" in problem.what
    assert "chatml-tools" in problem.fix


def test_the_modules_docstring_examples_hold():
    for module in (tooluse, records, chat_templates):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ------------------------------------------------------------------------------- training


@needs_embedded
@pytest.mark.usefixtures("one_thread")
def test_lora_trains_on_the_openai_data_with_chatml_tools(tmp_path):
    from tuneloop.config import validate_recipe
    from tuneloop.train.session import train

    train_file = write_jsonl(tmp_path / "train.jsonl", [record(i) for i in range(10)])
    recipe = validate_recipe(
        {
            "name": "tools",
            "workspace": str(tmp_path / "ws"),
            "model": {"name": EMBEDDED, "chat_template": "chatml-tools"},
            "data": {"train": str(train_file)},  # 8 train, 2 held-out: a split is made
            "train": {
                "max_steps": 2,
                "batch_size": 4,
                "lr": 1e-3,
                "precision": "fp32",
                "max_length": 1024,
                "lora": {"r": 4, "alpha": 8},
            },
        }  # fmt: skip
    ).resolved(tmp_path)
    run = train(recipe, progress=False)
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 2
    assert info["truncation"]["dropped"] == 0
    steps = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert len(steps) == 2 and all(s["loss"] > 0 for s in steps)
    saved = (run.path / "adapter" / "chat_template.jinja").read_text()
    assert "<tool_call>" in saved  # export and serving render as training did
    split = read_examples(run.path / "data" / "train.jsonl")
    assert len(split) == 8 and split[0].tools == [WEATHER, TIME]  # the split keeps the tools
