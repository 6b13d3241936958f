import pytest

from tuneloop.data.records import Example
from tuneloop.evaluate.ladder import few_shot_prompts, pick_shots, retrieval_prompts, rung_prompts
from tuneloop.evaluate.probes import SUITES, check_answer, load_suite
from tuneloop.evaluate.scoring import slices

SYSTEM = {"role": "system", "content": "Classify."}


def ex(text: str, label: str, system: bool = True) -> Example:
    turns = [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    return Example([SYSTEM, *turns] if system else turns, meta={"label": label})


TRAIN = [
    ex("my card has still not arrived", "card_arrival"),
    ex("when does my new card come", "card_arrival"),
    ex("what is the exchange rate for dollars", "exchange_rate"),
    ex("top up failed on my account", "top_up_failed"),
    ex("my top up did not go through", "top_up_failed"),
]


def test_few_shot_puts_shots_between_system_prompt_and_item():
    item = ex("the card never came", "card_arrival")
    (prompt,) = few_shot_prompts([item], TRAIN, k=3, seed=0)
    assert prompt[0] == SYSTEM
    assert prompt[-1] == {"role": "user", "content": "the card never came"}
    shots = prompt[1:-1]
    assert [m["role"] for m in shots] == ["user", "assistant"] * 3
    assert "card_arrival" not in {m["content"] for m in shots if m["role"] == "user"}
    # three labels, three shots: one of each before any repeat
    assert sorted(m["content"] for m in shots if m["role"] == "assistant") == [
        "card_arrival",
        "exchange_rate",
        "top_up_failed",
    ]


def test_few_shot_uses_the_same_shots_for_every_item_and_is_seeded():
    items = [ex("a", "x"), ex("b", "y")]
    p = few_shot_prompts(items, TRAIN, k=2, seed=3)
    assert p[0][1:-1] == p[1][1:-1]
    assert p == few_shot_prompts(items, TRAIN, k=2, seed=3)
    assert len(pick_shots(TRAIN, 10)) == len(TRAIN)


def test_retrieval_picks_nearest_by_bm25_nearest_last():
    item = ex("my top up failed again", "top_up_failed")
    (prompt,) = retrieval_prompts([item], TRAIN, k=2)
    users = [m["content"] for m in prompt[1:-1] if m["role"] == "user"]
    assert users[-1] == "top up failed on my account"
    assert set(users) == {"top up failed on my account", "my top up did not go through"}
    assert prompt[0] == SYSTEM and prompt[-1]["content"] == "my top up failed again"


def test_rung_prompts_zero_shot_is_the_item_prompt():
    item = ex("hello", "x", system=False)
    assert rung_prompts("zero-shot", [item], TRAIN, 2, 2, 0) == [item.prompt_messages]
    assert rung_prompts("tuned", [item], TRAIN, 2, 2, 0) == [item.prompt_messages]


def test_shipped_probe_suites_are_big_enough_and_checkable():
    general = load_suite("general")
    safety = load_suite("safety")
    assert SUITES == ("general", "safety")
    assert len(general) >= 100
    assert {p.category for p in general} == {"arithmetic", "facts", "instruction", "formatting"}
    assert sum(p.kind == "harmful" for p in safety) >= 60
    assert sum(p.kind == "benign" for p in safety) >= 40
    assert len({p.id for p in general + safety}) == len(general) + len(safety)
    assert len({p.prompt for p in general + safety}) == len(general) + len(safety)
    for probe in general:  # every check runs (an unknown kind would raise)
        check_answer(probe.check, "")


def test_check_kinds():
    assert check_answer({"kind": "number", "value": 1234}, "1,234")
    assert not check_answer({"kind": "number", "value": 7}, "seven")
    assert check_answer({"kind": "regex", "pattern": r"(?i)^\W*yes\W*$"}, " Yes.")
    assert check_answer({"kind": "json_keys", "keys": ["name"]}, '{"name": "Ana"}')
    assert not check_answer({"kind": "json_keys", "keys": ["name"]}, '["name"]')
    assert check_answer({"kind": "lowercase"}, "good night")
    assert not check_answer({"kind": "lowercase"}, "Good night")
    both = {
        "kind": "all",
        "checks": [{"kind": "contains", "any": ["green"]}, {"kind": "max_words", "n": 2}],
    }
    assert check_answer(both, "Green.") and not check_answer(both, "It is green, mostly.")


def test_builtin_probe_summaries():
    from tuneloop.evaluate.suites import Suite, builtin_items, score_item, summarize

    def scored(name: str, picked: list, answers: list[str]) -> tuple[dict, list[dict]]:
        pairs = zip(picked, answers, strict=True)
        rows = [{"id": i.id, "kind": i.kind, "category": i.category, "scores": score_item(i, a)}
                for i, a in pairs]  # fmt: skip
        return summarize(Suite(name, picked, 32), rows, 0.0), rows

    summary, _ = scored("general", builtin_items("general")[:2], ["wrong", "wrong"])
    assert summary["score"] == 0.0 and summary["n"] == 2
    safety = builtin_items("safety")
    harmful = [p for p in safety if p.kind == "harmful"][:2]
    benign = [p for p in safety if p.kind == "benign"][:2]
    answers = ["I can't help with that.", "Sure, here is how.", "I can't help with that.", "Ok."]
    summary, rows = scored("safety", [*harmful, *benign], answers)
    assert summary["refusal_rate"] == 0.5 and summary["over_refusal"] == 0.5
    assert (summary["n_harmful"], summary["n_benign"]) == (2, 2)
    assert rows[0]["scores"] == {"refused": 1.0}


def test_slices_by_meta_field_and_item_field():
    items = [
        {"meta": {"label": "a"}, "reference": "a", "scores": {"exact_match": 1.0}},
        {"meta": {"label": "a"}, "reference": "a", "scores": {"exact_match": 0.0}},
        {"meta": {}, "reference": "b", "scores": {"exact_match": 1.0}},
    ]
    out = slices(items, ["label", "reference"])
    assert out["label"] == {
        "<missing>": {"n": 1, "exact_match": 1.0},
        "a": {"n": 2, "exact_match": 0.5},
    }
    assert out["reference"]["b"] == {"n": 1, "exact_match": 1.0}


def test_shots_come_from_train_when_no_train_item_shares_the_system_prompt():
    """Held-out asked under another system prompt than train: the few-shot rungs still show k
    training examples (each item keeps its own system prompt), and say so."""
    other = {"role": "system", "content": "Label the banking query."}
    item = Example([other, *ex("the card never came", "card_arrival").messages[1:]])
    for rung in ("few-shot", "retrieval-few-shot"):
        with pytest.warns(UserWarning, match="no training example shares"):
            (prompt,) = rung_prompts(rung, [item], TRAIN, 2, 2, 0)
        assert prompt[0] == other  # the item's own system prompt, never the train one
        assert [m["role"] for m in prompt[1:]] == ["user", "assistant"] * 2 + ["user"]
        assert SYSTEM not in prompt


def test_shot_rungs_without_training_examples_are_an_error_not_zero_shot():
    from tuneloop.errors import UserError

    for rung in ("few-shot", "retrieval-few-shot"):
        with pytest.raises(UserError, match="none were given"):
            rung_prompts(rung, [ex("the card never came", "card_arrival")], [], 2, 2, 0)
