"""Readers and writer of data formats: good paths, and every malformed file with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneloop.data.csvfile import CsvColumns
from tuneloop.data.formats import read_examples, write_examples
from tuneloop.data.records import Example
from tuneloop.errors import DataError, UserError

MALFORMED = Path(__file__).parent / "malformed"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, *records: dict) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


# ---------------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("name", "line", "phrase"),
    [
        ("broken_json.jsonl", 2, "invalid JSON at column 49: Expecting ',' delimiter"),
        ("not_object.jsonl", 3, "expected a JSON object, got a list"),
        ("empty.jsonl", 1, "the file is empty"),
        ("blank_lines.jsonl", 1, "only blank lines"),
        ("no_assistant.jsonl", 2, "no assistant turn"),
        ("last_turn_user.jsonl", 3, "the last turn is 'user', not 'assistant'"),
        ("system_not_first.jsonl", 1, "system message at turn 2"),
        ("unknown_role.jsonl", 2, "unknown role 'bot'; allowed: system, user, assistant"),
        ("empty_content.jsonl", 2, "turn 1 (user) has empty content"),
        ("content_not_string.jsonl", 2, "'content' must be a string, got a number"),
        ("messages_not_list.jsonl", 1, "'messages' must be a list of turns, got a string"),
        ("meta_not_object.jsonl", 2, "'meta' must be an object"),
        ("sharegpt_bad_from.jsonl", 2, "unknown 'from' value 'bot'; allowed: system, human"),
        ("alpaca_missing_output.jsonl", 2, "missing required key 'output'"),
        ("prompt_completion_empty.jsonl", 2, "'completion' is empty"),
        ("unknown_format.jsonl", 1, "cannot tell the format from the keys ['text']"),
        ("preference_pairs.jsonl", 1, "preference pairs"),
        ("pretty_object.jsonl", 1, "one JSON object spread over several lines"),
        ("array_missing_role.json", 3, "turn 2 of 'messages' has no 'role' key"),
        ("array_broken.json", 3, "invalid JSON at column 19: Expecting ',' delimiter"),
        ("csv_missing_column.csv", 1, "column 'text' not found"),
        ("csv_empty_cell.csv", 5, "empty value in column 'text'"),
        ("csv_ragged.csv", 3, "the row has 3 fields but the header has 2 columns"),
        ("csv_unclosed_quote.csv", 3, "quoted value starting on this line is never closed"),
        ("csv_header_only.csv", None, "header but no rows"),
    ],
)
def test_malformed_file_names_line_and_problem(name, line, phrase):
    path = MALFORMED / name
    with pytest.raises(DataError) as info:
        read_examples(path)
    err = info.value
    assert err.line == line
    assert phrase in err.problems[0].what
    assert err.problems[0].fix  # every user mistake says how to fix it
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(err).startswith(f"{where}: ")


def test_missing_key_names_the_detected_format():
    with pytest.raises(DataError) as info:
        read_examples(MALFORMED / "alpaca_missing_output.jsonl")
    assert "format alpaca, detected from the keys on line 1" in str(info.value)


def test_missing_key_under_requested_format(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", {"prompt": "hi", "completion": "hello"})
    with pytest.raises(DataError, match=r"missing required key 'messages'.*format messages, as"):
        read_examples(path, format="messages")


def test_csv_missing_column_names_columns_and_recipe_field():
    with pytest.raises(DataError) as info:
        read_examples(MALFORMED / "csv_missing_column.csv")
    problem = info.value.problems[0]
    assert "the columns are: question, intent" in problem.what
    assert "`data.csv.text`" in problem.fix


def test_csv_missing_label_column_suggests_null(tmp_path):
    path = write(tmp_path / "qa.csv", "question,answer\nhi,hello\n")
    with pytest.raises(DataError) as info:
        read_examples(path, csv=CsvColumns(text="question", target="answer"))
    assert "column 'label' not found" in str(info.value)
    assert "null" in info.value.problems[0].fix


def test_file_not_found(tmp_path):
    with pytest.raises(DataError, match="file not found") as info:
        read_examples(tmp_path / "nope.jsonl")
    assert info.value.line is None


def test_bad_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad_utf8.jsonl"
    good = b'{"prompt": "hi", "completion": "hello"}\n'
    path.write_bytes(good + good + b'{"prompt": "caf\xe9", "completion": "ok"}\n')
    with pytest.raises(DataError, match=r"not valid UTF-8: byte 0xe9") as info:
        read_examples(path)
    assert info.value.line == 3
    assert "iconv" in info.value.problems[0].fix


def test_utf16_is_named(tmp_path):
    path = tmp_path / "u16.jsonl"
    path.write_bytes('{"prompt": "hi", "completion": "hello"}\n'.encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        read_examples(path)


def test_unknown_format_argument(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", {"prompt": "hi", "completion": "hello"})
    with pytest.raises(UserError, match="unknown data format 'yaml'"):
        read_examples(path, format="yaml")


# ---------------------------------------------------------------------------------- good paths


def test_messages_with_meta_and_extra_keys(tmp_path):
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    path = jsonl(
        tmp_path / "m.jsonl",
        {"messages": turns, "meta": {"label": "greet"}, "id": 7},
        {"messages": turns[1:], "label": "greet"},
    )
    first, second = read_examples(path)
    assert first.messages == turns
    assert first.meta == {"id": 7, "label": "greet"}
    assert first.source == f"{path}:1"
    assert second.label == "greet"
    assert second.source == f"{path}:2"


def test_bom_crlf_and_blank_lines_are_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    line = '{"prompt": "hi", "completion": "hello"}'
    path.write_bytes(b"\xef\xbb\xbf" + f"{line}\r\n\r\n{line}\r\n".encode())
    examples = read_examples(path)
    assert [ex.source for ex in examples] == [f"{path}:1", f"{path}:3"]
    assert examples[0].reference == "hello"


def test_alpaca(tmp_path):
    path = jsonl(
        tmp_path / "a.jsonl",
        {"instruction": "Classify the message.", "input": "I lost my card", "output": "lost_card"},
        {"instruction": "Say hi.", "input": "", "output": "hi", "system": "Be kind.", "id": 2},
    )
    first, second = read_examples(path)
    assert first.messages == [
        {"role": "user", "content": "Classify the message.\n\nI lost my card"},
        {"role": "assistant", "content": "lost_card"},
    ]
    assert second.messages[0] == {"role": "system", "content": "Be kind."}
    assert second.messages[1]["content"] == "Say hi."
    assert second.meta == {"id": 2}


def test_sharegpt(tmp_path):
    path = jsonl(
        tmp_path / "s.jsonl",
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "hi"},
                {"from": "gpt", "value": "hello"},
                {"from": "user", "value": "bye"},
                {"from": "assistant", "value": "bye!"},
            ],
            "id": "x1",
        },
        {
            "system": "Top-level system.",
            "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}],
        },
    )
    first, second = read_examples(path)
    assert [m["role"] for m in first.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert first.reference == "bye!"
    assert first.meta == {"id": "x1"}
    assert second.messages[0] == {"role": "system", "content": "Top-level system."}


def test_prompt_completion_plain_and_conversational(tmp_path):
    path = jsonl(
        tmp_path / "p.jsonl",
        {"prompt": "2+2=", "completion": " 4"},
        {
            "prompt": [{"role": "user", "content": "2+3="}],
            "completion": [{"role": "assistant", "content": "5"}],
        },
    )
    first, second = read_examples(path)
    assert first.messages == [
        {"role": "user", "content": "2+2="},
        {"role": "assistant", "content": " 4"},
    ]
    assert second.reference == "5"


def test_json_array_keeps_line_of_each_object(tmp_path):
    records = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(3)]
    path = write(tmp_path / "arr.json", json.dumps(records, indent=2))
    examples = read_examples(path)
    # indent=2 puts "[" on line 1 and each object on 4 lines: {, prompt, completion, }.
    assert [ex.source for ex in examples] == [f"{path}:2", f"{path}:6", f"{path}:10"]
    assert [ex.reference for ex in examples] == ["a0", "a1", "a2"]


def test_json_file_holding_jsonl(tmp_path):
    path = jsonl(tmp_path / "d.json", {"prompt": "hi", "completion": "hello"})
    assert read_examples(path)[0].reference == "hello"


def test_csv_with_multiline_field_keeps_physical_lines(tmp_path):
    path = write(
        tmp_path / "d.csv",
        "text,category,lang\n"
        "hello,greet,en\n"
        '"first line\nsecond, line",multi,en\n'  # one row over lines 3-4
        "\n"
        "bye,farewell,en\n",
    )
    examples = read_examples(path, csv=CsvColumns(text="text", label="category"))
    assert [ex.source for ex in examples] == [f"{path}:2", f"{path}:3", f"{path}:6"]
    assert examples[1].messages[0]["content"] == "first line\nsecond, line"
    assert examples[1].reference == "multi"
    assert examples[1].meta == {"lang": "en", "label": "multi"}


def test_csv_instruction_target_and_system_column(tmp_path):
    path = write(
        tmp_path / "d.tsv",
        "\ufeffq\tanswer\tintent\tpersona\n"  # with a byte-order mark
        "hi\thello there\tgreet\tBe warm.\n"
        "bye\tciao\tfarewell\t\n",
    )
    cols = CsvColumns(
        text="q",
        label="intent",
        target="answer",
        instruction="Reply to the customer.",
        system_column="persona",
    )
    first, second = read_examples(path, csv=cols)
    assert first.messages == [
        {"role": "system", "content": "Be warm."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello there"},
    ]
    assert first.meta == {"label": "greet"}
    # An empty per-row system cell falls back to the fixed instruction.
    assert second.messages[0] == {"role": "system", "content": "Reply to the customer."}


def test_format_can_be_forced(tmp_path):
    path = write(tmp_path / "data.txt", "text,label\nhi,greet\n")
    assert read_examples(path, format="csv")[0].label == "greet"


# ---------------------------------------------------------------------------------- writing


def _examples() -> list[Example]:
    return [
        Example(
            [
                {"role": "user", "content": "I lost my card"},
                {"role": "assistant", "content": "lost"},
            ],
            {"label": "lost"},
        ),
        Example(
            [
                {"role": "system", "content": "Classify."},
                {"role": "user", "content": "Where is my card?"},
                {"role": "assistant", "content": "arrival"},
            ],
            {"label": "arrival", "id": 2},
        ),
    ]


@pytest.mark.parametrize("fmt", ["messages", "alpaca", "sharegpt"])
def test_round_trip(tmp_path, fmt):
    examples = _examples()
    path = tmp_path / f"out.{fmt}.jsonl"
    write_examples(path, examples, format=fmt)
    back = read_examples(path)
    assert [(ex.messages, ex.meta) for ex in back] == [(ex.messages, ex.meta) for ex in examples]
    assert back[1].source == f"{path}:2"


def test_round_trip_prompt_completion(tmp_path):
    example = _examples()[0]
    path = tmp_path / "pc.jsonl"
    write_examples(path, [example], format="prompt_completion")
    assert json.loads(path.read_text()) == {
        "prompt": "I lost my card",
        "completion": "lost",
        "meta": {"label": "lost"},
    }
    assert read_examples(path)[0].messages == example.messages


def test_convert_csv_to_alpaca(tmp_path):
    csv_path = write(tmp_path / "d.csv", "text,label\nhi,greet\n")
    examples = read_examples(csv_path)
    write_examples(tmp_path / "a.jsonl", examples, format="alpaca")
    again = read_examples(tmp_path / "a.jsonl")
    assert again[0].messages == examples[0].messages
    assert again[0].label == "greet"


def test_unrepresentable_example_names_its_source_and_writes_nothing(tmp_path):
    multi = Example(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
            {"role": "assistant", "content": "bye!"},
        ],
        source="chat.jsonl:9",
    )
    path = write(tmp_path / "out.jsonl", "old\n")
    with pytest.raises(UserError) as info:
        write_examples(path, [*_examples(), multi], format="alpaca")
    assert info.value.problems[0].where == "chat.jsonl:9"
    assert "messages or sharegpt" in info.value.problems[0].fix
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_prompt_completion_refuses_system_message(tmp_path):
    with pytest.raises(UserError, match="cannot be written as prompt_completion"):
        write_examples(tmp_path / "o.jsonl", _examples(), format="prompt_completion")


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    write_examples(path, _examples())
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]
    assert len(path.read_text().splitlines()) == 2


def test_the_reading_modules_docstring_examples_hold():
    import doctest

    from tuneloop.data import detect, jsonlines

    for module in (jsonlines, detect):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
