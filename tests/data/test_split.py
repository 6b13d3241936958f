"""The held-out split: deterministic, stratified, leak-free, recorded in a manifest."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from tuneloop.data.csvfile import CsvColumns
from tuneloop.data.formats import read_examples
from tuneloop.data.records import Example, content_hash
from tuneloop.data.split import (
    check_no_leakage,
    load_split,
    split_examples,
    write_split,
)
from tuneloop.errors import UserError

BANKING77 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "banking77"


def ex(text: str, answer: str, label: str | None = None, source: str = "") -> Example:
    meta = {"label": label} if label is not None else {}
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    return Example(messages, meta, source)


def labelled(n_labels: int = 5, per_label: int = 20) -> list[Example]:
    return [
        ex(f"message {i} about topic {k}", f"label{k}", f"label{k}", f"d.jsonl:{k * per_label + i}")
        for k in range(n_labels)
        for i in range(per_label)
    ]


def test_same_seed_same_split_and_different_seed_different():
    data = labelled()
    a = split_examples(data, 0.2, seed=1)
    b = split_examples(data, 0.2, seed=1)
    c = split_examples(data, 0.2, seed=2)
    assert a == b
    assert a[1] != c[1]


def test_stratified_by_label_with_exact_counts():
    train, heldout = split_examples(labelled(5, 20), 0.2, seed=0)
    assert len(heldout) == 20
    assert Counter(e.label for e in heldout) == {f"label{k}": 4 for k in range(5)}
    assert Counter(e.label for e in train) == {f"label{k}": 16 for k in range(5)}


def test_outputs_keep_input_order():
    data = labelled()
    train, heldout = split_examples(data, 0.3, seed=5)
    position = {id(e): i for i, e in enumerate(data)}
    for side in (train, heldout):
        indices = [position[id(e)] for e in side]
        assert indices == sorted(indices)
    assert len(train) + len(heldout) == len(data)


def test_singleton_label_stays_in_train_and_small_labels_keep_one_train():
    data = labelled(4, 10) + [ex("the only one", "rare", "rare"), ex("a", "pair", "pair")]
    data.append(ex("b", "pair", "pair"))
    for seed in range(10):
        train, heldout = split_examples(data, 0.5, seed=seed)
        assert "rare" not in {e.label for e in heldout}
        assert "pair" in {e.label for e in train}


def test_largest_remainder_rounding_hits_the_total():
    # Three labels of 5 at 0.1: each share is 0.5, the total 1.5 rounds to 2.
    data = labelled(3, 5)
    _, heldout = split_examples(data, 0.1, seed=0)
    assert len(heldout) == 2


def test_stratifies_by_reference_when_no_label():
    data = [ex(f"question {i}", f"answer{i % 4}") for i in range(40)]
    _, heldout = split_examples(data, 0.2, seed=3)
    assert Counter(e.reference for e in heldout) == {f"answer{k}": 2 for k in range(4)}


def test_free_text_answers_split_unstratified():
    data = [ex(f"question {i}", f"a unique answer {i}") for i in range(50)]
    train, heldout = split_examples(data, 0.2, seed=0)
    assert (len(train), len(heldout)) == (40, 10)


def test_duplicates_and_same_prompt_land_on_one_side():
    data = labelled(2, 30)
    dup = ex("message 3 about topic 0", "label0", "label0", "dup.jsonl:1")
    spaced = ex("message   3 about topic 0 ", "label0", "label0", "dup.jsonl:2")
    other_answer = ex("message 4 about topic 1", "something else", "label1", "dup.jsonl:3")
    data += [dup, spaced, other_answer]
    for seed in range(30):
        train, heldout = split_examples(data, 0.3, seed=seed)
        check_no_leakage(train, heldout)
        held = {id(e) for e in heldout}
        assert len({id(e) in held for e in (data[3], dup, spaced)}) == 1
        assert (id(data[34]) in held) == (id(other_answer) in held)


def test_bad_fraction_and_tiny_inputs():
    with pytest.raises(UserError, match="between 0 and 1"):
        split_examples(labelled(), 1.5, seed=0)
    with pytest.raises(UserError, match="cannot split 1 example"):
        split_examples([ex("a", "b")], 0.5, seed=0)
    same_prompt = [ex("the same question", f"answer {i}") for i in range(10)]
    with pytest.raises(UserError, match="held-out split would be empty"):
        split_examples(same_prompt, 0.2, seed=0)


def test_check_no_leakage_names_both_sources():
    train = [ex("hello", "hi", source="train.jsonl:1"), ex("bye", "ciao", source="train.jsonl:2")]
    heldout = [
        ex("hello ", "hi", source="heldout.jsonl:1"),  # same after whitespace normalisation
        ex("bye", "see you", source="heldout.jsonl:2"),  # same prompt, other answer
        ex("new", "fresh", source="heldout.jsonl:3"),
    ]
    with pytest.raises(UserError) as info:
        check_no_leakage(train, heldout)
    text = str(info.value)
    assert text.startswith("2 held-out example(s) leak from train")
    assert "heldout.jsonl:1: the same example as train train.jsonl:1" in text
    assert "heldout.jsonl:2: the same prompt as train train.jsonl:2" in text
    assert "tuneloop data split" in text
    check_no_leakage(train, heldout[2:])


def test_check_no_leakage_lists_at_most_20():
    train = [ex(f"q{i}", "a", source=f"t:{i}") for i in range(30)]
    heldout = [ex(f"q{i}", "a", source=f"h:{i}") for i in range(30)]
    with pytest.raises(UserError) as info:
        check_no_leakage(train, heldout)
    assert len(info.value.problems) == 21
    assert info.value.problems[-1].what == "... and 10 more"


def test_write_split_manifest_and_load(tmp_path):
    data = labelled()
    train, heldout = split_examples(data, 0.2, seed=7)
    manifest_path = write_split(
        tmp_path / "split", train, heldout, seed=7, heldout_fraction=0.2, sources=["d.jsonl"]
    )
    out = manifest_path.parent
    assert sorted(p.name for p in out.iterdir()) == [
        "heldout.jsonl",
        "manifest.json",
        "train.jsonl",
    ]
    manifest = json.loads(manifest_path.read_text())
    assert manifest["seed"] == 7
    assert manifest["heldout_fraction"] == 0.2
    assert manifest["sources"] == ["d.jsonl"]
    assert manifest["counts"] == {"train": 80, "heldout": 20}
    assert manifest["labels"]["heldout"] == {f"label{k}": 4 for k in range(5)}
    for name in ("train.jsonl", "heldout.jsonl"):
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        assert manifest["files"][name]["sha256"] == digest
    assert manifest["content_hashes"]["heldout"] == [content_hash(e) for e in heldout]

    train2, heldout2, _ = load_split(out)
    assert [e.messages for e in train2] == [e.messages for e in train]
    assert [e.meta for e in heldout2] == [e.meta for e in heldout]


def test_load_split_refuses_edited_files(tmp_path):
    train, heldout = split_examples(labelled(), 0.2, seed=0)
    out = write_split(tmp_path, train, heldout, seed=0, heldout_fraction=0.2, sources=[]).parent
    with (out / "heldout.jsonl").open("a") as f:
        f.write(json.dumps(train[0].to_json()) + "\n")
    with pytest.raises(UserError, match="heldout.jsonl was changed after the split was made"):
        load_split(out)


def test_write_split_refuses_leaks(tmp_path):
    train = [ex("hello", "hi", source="a:1")]
    with pytest.raises(UserError, match="leak"):
        write_split(tmp_path, train, train, seed=0, heldout_fraction=0.5, sources=[])
    assert list(tmp_path.iterdir()) == []


def test_banking77_reads_and_splits_stratified():
    path = BANKING77 / "train.csv"
    if not path.is_file():
        pytest.skip(f"BANKING77 not found at {path} (it lives in ../shared/data/banking77/)")
    examples = read_examples(path, csv=CsvColumns(text="text", label="category"))
    assert len(examples) == 10003
    labels = Counter(e.label for e in examples)
    assert len(labels) == 77
    assert examples[0].source == f"{path}:2"
    assert examples[0].reference == examples[0].label == "card_arrival"

    train, heldout = split_examples(examples, 0.1, seed=0)
    check_no_leakage(train, heldout)
    assert abs(len(heldout) - 1000) <= 5
    assert {e.label for e in train} == set(labels)
    assert {e.label for e in heldout} == set(labels)
    held = Counter(e.label for e in heldout)
    for label, n in labels.items():
        assert abs(held[label] - n * 0.1) <= 2, label
