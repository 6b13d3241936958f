"""Nested JSON fields (per key path), slices by the reference answer, natural slice order."""

import json

import pytest

from tuneloop.config import Recipe, validate_recipe
from tuneloop.errors import UserError
from tuneloop.evaluate import run as run_mod
from tuneloop.evaluate import scoring


def hotel(intent: str, city: str | None = None, nights: int | None = None) -> str:
    slots = {k: v for k, v in (("city", city), ("nights", nights)) if v is not None}
    return json.dumps({"intent": intent, "slots": slots})


# Four hotel requests. Model A gets every intent and no slot right; model B half the intents,
# every city and half the nights. On whole top-level values (`json_fields`) both score 0.5.
REFS = [
    hotel("book", "Oslo", 2),
    hotel("book", "Rome", 1),
    hotel("cancel", "Oslo", 3),
    hotel("cancel", "Paris", 2),
]
MODEL_A = [hotel("book"), hotel("book"), hotel("cancel"), hotel("cancel")]
MODEL_B = [
    hotel("cancel", "Oslo", 2),
    hotel("cancel", "Rome", 1),
    hotel("cancel", "Oslo", 4),
    hotel("cancel", "Paris", 5),
]


def test_nested_fields_tell_apart_what_whole_values_call_a_tie():
    a, a_items = run_mod.score("json", MODEL_A, REFS)
    b, b_items = run_mod.score("json", MODEL_B, REFS)
    assert a["json_fields"] == b["json_fields"] == 0.5  # the tie the user saw
    # per key path: A wins the intent, B the slots
    assert a["fields"]["intent"]["f1"] == 1.0 and b["fields"]["intent"]["f1"] == 0.5
    assert a["fields"]["slots.city"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                         "support": 4, "tp": 0, "fp": 0, "fn": 4}  # fmt: skip
    assert b["fields"]["slots.city"]["f1"] == 1.0 and b["fields"]["slots.nights"]["f1"] == 0.5
    # micro pools the 12 reference values; macro averages the 3 paths
    assert a["json_field_f1_micro"] == pytest.approx(2 * 4 / (2 * 4 + 0 + 8))
    assert b["json_field_f1_micro"] == pytest.approx(2 * 8 / (2 * 8 + 4 + 4))
    assert a["json_field_f1_macro"] == pytest.approx(1 / 3)
    assert b["json_field_f1_macro"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert a["json_field_micro"]["precision"] == 1.0 and a["json_field_micro"]["recall"] == 4 / 12
    # per item, 0..1: usable as task.metric and in the paired tests
    assert [i["json_field_f1"] for i in a_items] == pytest.approx([0.5] * 4)
    assert [i["json_field_f1"] for i in b_items] == pytest.approx([2 / 3] * 4)
    assert b["json_field_f1"] == pytest.approx(2 / 3)


def test_lists_are_sets_and_numbers_compare_by_value():
    refs = ['{"amenities": ["spa", "gym"], "n": 2}']
    _, items = run_mod.score("json", ['{"amenities": ["gym", "spa", "gym"], "n": 2.0}'], refs)
    assert items[0]["json_field_f1"] == 1.0 and items[0]["json_exact"] == 0.0


def test_json_field_f1_is_a_valid_task_metric():
    recipe = validate_recipe({"data": {"train": "x"}, "task": {"metric": "json_field_f1"}})
    assert recipe.task.metric == "json_field_f1"


def test_slices_by_a_key_path_of_the_reference_in_natural_order():
    items = [
        {"reference": json.dumps({"intent": i, "slots": {"nights": n}}), "meta": {},
         "scores": {"exact_match": float(n < 3)}}
        for i, n in (("book", 10), ("book", 2), ("cancel", 1), ("book", 0), ("cancel", 2))
    ]  # fmt: skip
    items.append({"reference": '{"intent": "book"}', "meta": {}, "scores": {"exact_match": 0.0}})
    out = scoring.slices(items, ["ref:intent", "ref:slots.nights"])
    assert out["ref:intent"] == {"book": {"n": 4, "exact_match": 0.5},
                                 "cancel": {"n": 2, "exact_match": 1.0}}  # fmt: skip
    assert list(out["ref:slots.nights"]) == ["0", "1", "2", "10", "<missing>"]
    assert out["ref:slots.nights"]["2"]["n"] == 2


def test_metadata_slices_sort_naturally():
    items = [{"meta": {"turns": t}, "scores": {"exact_match": 1.0}} for t in (10, 2, 1, 0)]
    assert list(scoring.slices(items, ["turns"])["turns"]) == ["0", "1", "2", "10"]


@pytest.mark.parametrize("entry", ["ref:", "ref:slots..city", "reference:intent"])
def test_a_malformed_slice_is_a_recipe_error_naming_the_field(entry):
    with pytest.raises(UserError) as err:
        validate_recipe({"data": {"train": "x"}, "eval": {"slices": ["channel", entry]}})
    rendered = err.value.problems[0].render()
    assert "eval.slices" in rendered and entry in rendered and "ref:slots.city" in rendered


def test_reference_slices_on_a_task_whose_answers_are_not_json_are_refused():
    recipe = Recipe.model_validate({"data": {"train": "x"}, "eval": {"slices": ["ref:intent"]}})
    run_mod.check_reference_slices(recipe.eval.slices, "json")
    with pytest.raises(UserError, match="not JSON") as err:
        run_mod.check_reference_slices(recipe.eval.slices, "label")
    assert err.value.problems[0].where == "eval.slices"
