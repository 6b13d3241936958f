import json
from collections import Counter

import pytest

from tuneloop.data.examples import (
    SUPPORT_INSTRUCTION,
    SUPPORT_LABELS,
    support_intents,
    write_support_intents,
)
from tuneloop.data.records import Example, normalize_text, prompt_hash


def _user_texts(examples: list[Example]) -> list[str]:
    return [ex.messages[1]["content"] for ex in examples]


def test_same_seed_writes_identical_bytes(tmp_path):
    a = write_support_intents(tmp_path / "a.jsonl", n_per_label=30, seed=7)
    b = write_support_intents(tmp_path / "b.jsonl", n_per_label=30, seed=7)
    assert a.read_bytes() == b.read_bytes()


def test_different_seeds_give_different_sets():
    a = set(_user_texts(support_intents(seed=0)))
    b = set(_user_texts(support_intents(seed=1)))
    assert a != b
    # Mostly different, not a reshuffle of the same messages.
    assert len(a & b) < len(a) // 2


def test_no_global_random_state_used():
    import random

    random.seed(123)
    before = random.random()
    random.seed(123)
    support_intents(seed=3)
    assert random.random() == before


def test_labels_balanced_and_all_present():
    data = support_intents(n_per_label=25, seed=0)
    assert len(SUPPORT_LABELS) == 8
    assert Counter(ex.label for ex in data) == {label: 25 for label in SUPPORT_LABELS}
    for ex in data:
        assert ex.meta == {"label": ex.reference}


def test_messages_unique_even_ignoring_case_and_spacing():
    data = support_intents(n_per_label=40, seed=0)
    keys = [normalize_text(t).casefold() for t in _user_texts(data)]
    assert len(set(keys)) == len(keys)
    assert len({prompt_hash(ex) for ex in data}) == len(data)


def test_larger_sets_are_possible_and_extend_smaller_ones():
    small = support_intents(n_per_label=20, seed=5)
    big = support_intents(n_per_label=200, seed=5)
    assert len(set(_user_texts(big))) == 200 * len(SUPPORT_LABELS)
    assert set(_user_texts(small)) <= set(_user_texts(big))


def test_message_shape_and_lengths():
    for ex in support_intents(n_per_label=40, seed=2):
        assert [m["role"] for m in ex.messages] == ["system", "user", "assistant"]
        assert ex.messages[0]["content"] == SUPPORT_INSTRUCTION
        assert ex.reference in SUPPORT_LABELS
        assert 5 <= len(ex.messages[1]["content"].split()) <= 40


def test_messages_do_not_just_spell_the_label():
    data = support_intents(n_per_label=40, seed=0)
    spelled = [
        ex
        for ex in data
        if ex.label in ex.messages[1]["content"].lower()
        or ex.label.replace("_", " ") in ex.messages[1]["content"].lower()
    ]
    assert len(spelled) <= len(data) // 10


def test_instruction_lists_every_label():
    for label in SUPPORT_LABELS:
        assert label in SUPPORT_INSTRUCTION
    assert "label only" in SUPPORT_INSTRUCTION


def test_jsonl_round_trips(tmp_path):
    path = write_support_intents(tmp_path / "sub" / "support.jsonl", n_per_label=5, seed=0)
    assert path.exists()
    assert not [p for p in path.parent.iterdir() if p != path]  # no temp file left behind
    lines = path.read_text(encoding="utf-8").splitlines()
    expected = support_intents(n_per_label=5, seed=0)
    assert len(lines) == len(expected)
    for line, ex in zip(lines, expected, strict=True):
        record = json.loads(line)
        assert set(record) == {"messages", "meta"}
        assert record == ex.to_json()
        assert Example(record["messages"], record["meta"]).label == ex.label


def test_overwrite_replaces_file(tmp_path):
    path = tmp_path / "support.jsonl"
    path.write_text("old\n")
    write_support_intents(path, n_per_label=2, seed=0)
    assert len(path.read_text().splitlines()) == 2 * len(SUPPORT_LABELS)


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="n_per_label"):
        support_intents(n_per_label=0)
    with pytest.raises(ValueError, match="per label"):
        support_intents(n_per_label=100_000)


def test_docstring_examples():
    import doctest

    import tuneloop.data.examples as examples

    assert doctest.testmod(examples).failed == 0


def test_templates_are_separate_strings():
    # A missing comma between two template strings silently glues them into one message.
    import re

    from tuneloop.data.examples import _TEMPLATES

    assert set(_TEMPLATES) == set(SUPPORT_LABELS)
    for label, templates in _TEMPLATES.items():
        assert len(templates) >= 12, label
        for t in templates:
            assert not re.search(r"[.?!][A-Za-z]", t), t


def test_written_file_is_readable_by_others(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_support_intents(tmp_path / "support.jsonl", n_per_label=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
