"""Preference pairs: every layout read into one record, mistakes with file and line, lint."""

import json

import pytest

from tuneloop.data.preference import (
    PreferencePair,
    lint_pairs,
    looks_like_preferences,
    read_preferences,
    write_preferences,
)
from tuneloop.data.preference_examples import support_preferences
from tuneloop.errors import DataError

USER = [{"role": "user", "content": "My card never arrived."}]


def write(tmp_path, *records, name="prefs.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_explicit_prompt_string(tmp_path):
    path = write(tmp_path, {"prompt": "My card never arrived.", "chosen": "Sorry! A new one is "
                            "on its way.", "rejected": "Not my problem.", "id": 7})  # fmt: skip
    (pair,) = read_preferences(path)
    assert pair.prompt == USER and pair.rejected == "Not my problem."
    assert pair.meta == {"id": 7} and pair.source == f"{path}:1"
    assert pair.rejected_prompt is None


def test_conversational_layouts(tmp_path):
    explicit = {"prompt": USER, "system": "Be kind.",
                "chosen": [{"role": "assistant", "content": "Sorry!"}],
                "rejected": [{"role": "assistant", "content": "No."}]}  # fmt: skip
    implicit = {"chosen": [*USER, {"role": "assistant", "content": "Sorry!"}],
                "rejected": [*USER, {"role": "assistant", "content": "No."}]}  # fmt: skip
    a, b = read_preferences(write(tmp_path, explicit, implicit))
    assert a.prompt == [{"role": "system", "content": "Be kind."}, *USER]
    assert (b.prompt, b.chosen, b.rejected) == (USER, "Sorry!", "No.")


def test_human_assistant_transcripts(tmp_path):
    shared = "\n\nHuman: What is 2+2?\n\nAssistant: 4\n\nHuman: Sure?\n\nAssistant:"
    record = {"chosen": shared + " Yes, 4.", "rejected": shared + " No, 5."}
    (pair,) = read_preferences(write(tmp_path, record))
    assert [m["role"] for m in pair.prompt] == ["user", "assistant", "user"]
    assert (pair.chosen, pair.rejected) == ("Yes, 4.", "No, 5.")
    # and the split form some sets use: the transcript as the prompt, answers apart
    (split,) = read_preferences(write(tmp_path, {"prompt": shared, "chosen": " Yes, 4.",
                                                 "rejected": " No."}, name="b.jsonl"))  # fmt: skip
    assert split.prompt == pair.prompt


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ({"prompt": "hi", "chosen": "hello"}, "missing 'rejected'"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "objective `sft`"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, "'prompt' must be"),
        ({"prompt": [{"role": "bot", "content": "x"}], "chosen": "a", "rejected": "b"}, "role"),
        ({"chosen": "plain", "rejected": "text"}, "no prompt"),
        (
            {
                "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "chosen": "a",
                "rejected": "b",
            },
            "must end with the user",
        ),  # fmt: skip
    ],
)
def test_structural_mistakes_name_file_and_line(tmp_path, record, needle):
    good = {"prompt": "hi", "chosen": "hello", "rejected": "go away"}
    path = write(tmp_path, good, record)
    with pytest.raises(DataError, match=needle) as err:
        read_preferences(path)
    assert (err.value.path, err.value.line) == (str(path), 2)


def test_broken_json_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": \n')
    with pytest.raises(DataError) as err:
        read_preferences(path)
    assert (err.value.path, err.value.line) == (str(path), 2)


def test_lint_finds_empty_identical_mismatched_and_duplicate_pairs(tmp_path):
    records = [
        {"prompt": "a", "chosen": "Same answer", "rejected": " same  answer "},
        {"prompt": "b", "chosen": "", "rejected": "x"},
        {"chosen": "\n\nHuman: A\n\nAssistant: yes", "rejected": "\n\nHuman: B\n\nAssistant: no"},
        {"prompt": "c", "chosen": "good", "rejected": "bad"},
        {"prompt": "c", "chosen": "good", "rejected": "bad"},
    ]
    path = write(tmp_path, *records)
    findings = lint_pairs(read_preferences(path))
    got = {(f.code, f.where.rsplit(":", 1)[1], f.severity) for f in findings}
    assert got == {
        ("identical-sides", "1", "error"),
        ("empty-side", "2", "error"),
        ("prompt-mismatch", "3", "error"),
        ("duplicate", "5", "warning"),
    }
    assert all(f.fix for f in findings)
    assert findings[-1].severity == "warning"  # errors first


def test_written_pairs_read_back_and_are_detected(tmp_path):
    pairs = support_preferences(n_per_label=2)
    path = write_preferences(tmp_path / "support.jsonl", pairs)
    again = read_preferences(path)
    assert [(p.prompt, p.chosen, p.rejected, p.meta) for p in again] == [
        (p.prompt, p.chosen, p.rejected, p.meta) for p in pairs
    ]
    assert looks_like_preferences(path)
    assert not lint_pairs(again)
    sft = write(tmp_path, {"messages": USER}, name="sft.jsonl")
    assert not looks_like_preferences(sft)


def test_pair_renders_both_sides_as_chats():
    pair = PreferencePair(USER, "Sorry!", "No.")
    assert pair.chosen_messages[-1] == {"role": "assistant", "content": "Sorry!"}
    assert pair.rejected_messages[:-1] == USER
