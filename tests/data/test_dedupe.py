"""Near-duplicate search (MinHash/LSH) and the split that keeps near-twins together."""

from __future__ import annotations

import random

import pytest

from tuneloop.data.dedupe import (
    find_near_duplicates,
    near_duplicate_groups,
    normalize,
    shingles,
    signatures,
)
from tuneloop.data.records import Example
from tuneloop.data.split import split_examples
from tuneloop.errors import UserError

WORDS = [f"w{i}x" for i in range(400)]


def ex(text: str, answer: str = "a", source: str = "") -> Example:
    messages = [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": text},
        {"role": "assistant", "content": answer},
    ]
    return Example(messages, {"label": answer}, source)


def distinct(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(15)) for _ in range(n)]


def test_shingles_ignore_case_punctuation_and_spacing():
    assert normalize("How do I  TOP-UP my card??") == "how do i top up my card"
    assert set(shingles("How do I top-up my card??")) == set(shingles("how do i top up my card"))
    assert len(shingles("hi")) == 1  # shorter than a shingle: the whole text


def test_signatures_estimate_jaccard_deterministically():
    a, b, c = signatures(["the quick brown fox jumps", "the quick brown fox jumped", "zzz"])
    again = signatures(["the quick brown fox jumps"])[0]
    assert a.jaccard(again) == 1.0  # the same text, the same signature, run after run
    assert 0.5 < a.jaccard(b) < 1.0
    assert a.jaccard(c) < 0.2


def test_within_train_each_near_twin_names_the_earliest():
    texts = distinct(50)
    train = [ex(t, source=f"t:{i + 1}") for i, t in enumerate(texts)]
    twin = texts[3] + " ok"
    train += [ex(twin, source="t:51"), ex(texts[3] + "!", source="t:52")]
    near = find_near_duplicates(train)
    assert [(i, j) for i, j, _ in near.within] == [(50, 3), (51, 3)]
    assert all(0.8 <= s <= 1.0 for _, _, s in near.within)


def test_exact_same_prompt_is_left_to_the_exact_checks():
    train = [ex("where is my card", "a"), ex("where is my card", "b")]
    assert find_near_duplicates(train).within == []


def test_across_finds_heldout_near_twins_of_train():
    texts = distinct(30)
    train = [ex(t) for t in texts]
    heldout = [ex(distinct(1, seed=9)[0]), ex(texts[10] + " please")]
    near = find_near_duplicates(train, heldout)
    assert [(h, j) for h, j, _ in near.across] == [(1, 10)]
    assert near.within == []


def test_threshold_is_checked():
    with pytest.raises(UserError, match="threshold"):
        find_near_duplicates([ex("a")], threshold=1.5)


def test_groups_join_chains_of_near_twins():
    base = "one two three four five six seven eight nine ten eleven twelve"
    chain = [base, base + " x", base + " x y"]  # 0~1, 1~2
    examples = [ex(t) for t in [*chain, *distinct(5)]]
    edges = near_duplicate_groups(examples, 0.8)
    joined = {frozenset(e) for e in edges}
    assert frozenset({1, 0}) in joined
    assert any(2 in e for e in joined)
    assert all(max(e) < 3 for e in joined)


def test_split_keeps_near_twins_on_one_side():
    texts = distinct(60, seed=1)
    examples = []
    for i, t in enumerate(texts):
        examples.append(ex(t, f"l{i % 3}", f"d:{2 * i + 1}"))
        examples.append(ex(t + " thanks!", f"l{i % 3}", f"d:{2 * i + 2}"))  # a near-twin
    for seed in range(3):
        train, heldout = split_examples(examples, 0.25, seed, near_threshold=0.8)
        held = {e.source for e in heldout}
        for i in range(60):
            assert (f"d:{2 * i + 1}" in held) == (f"d:{2 * i + 2}" in held)
    # Without the near-duplicate grouping, some twins straddle the split.
    train, heldout = split_examples(examples, 0.25, 0)
    held = {e.source for e in heldout}
    assert any((f"d:{2 * i + 1}" in held) != (f"d:{2 * i + 2}" in held) for i in range(60))


def test_the_split_a_recipe_makes_keeps_near_twins_on_one_side(tmp_path):
    """`train` without a held-out file splits as `tuneloop data split` does."""
    import json

    from tuneloop.config import validate_recipe
    from tuneloop.data.prepare import load_datasets

    rows = []
    for i, t in enumerate(distinct(60, seed=1)):
        for text in (t, t + " thanks!"):  # a near-twin pair
            rows.append({"messages": [{"role": "user", "content": text},
                                      {"role": "assistant", "content": f"l{i % 3}"}]})  # fmt: skip
    path = tmp_path / "all.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = validate_recipe({"data": {"train": str(path), "split": {"heldout_fraction": 0.25}}})
    data = load_datasets(recipe)
    held = {ex.messages[-2]["content"].removesuffix(" thanks!") for ex in data.heldout}
    kept = {ex.messages[-2]["content"].removesuffix(" thanks!") for ex in data.train}
    assert data.split_made and held and not held & kept
