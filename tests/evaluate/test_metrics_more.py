import pytest

from tuneloop.evaluate.metrics import confusion_matrix, json_field_accuracy, json_schema_valid
from tuneloop.evaluate.refusal import is_refusal, refusal_rate
from tuneloop.evaluate.text_metrics import bleu, chrf, distinct_n, rouge_l


def test_confusion_matrix_rows_are_references_and_strays_get_a_column():
    m = confusion_matrix(
        ["Refund", "refund", "bug", "I think it is a bug"], ["refund"] * 3 + ["bug"]
    )
    assert m == {"bug": {"i think it is a bug": 1}, "refund": {"bug": 1, "refund": 2}}


SCHEMA = {
    "type": "object",
    "required": ["intent", "urgent"],
    "properties": {"intent": {"type": "string"}, "urgent": {"type": "boolean"}},
    "additionalProperties": False,
}


def test_json_schema_conformance():
    preds = [
        '{"intent": "refund", "urgent": true}',
        '```json\n{"intent": "refund", "urgent": false}\n```',
        '{"intent": "refund"}',  # missing field
        '{"intent": "refund", "urgent": "yes"}',  # wrong type
        '{"intent": "refund", "urgent": true, "extra": 1}',  # not allowed
        "refund",
    ]
    assert json_schema_valid(preds, SCHEMA) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_a_broken_schema_is_an_error_not_a_zero():
    import jsonschema

    with pytest.raises(jsonschema.SchemaError):
        json_schema_valid(["{}"], {"type": "no-such-type"})


def test_json_field_accuracy_gives_partial_credit():
    refs = ['{"a": 1, "b": "x", "c": true, "d": null}'] * 3
    preds = ['{"a": 1, "b": "x", "c": 1, "d": null}', '{"d": null, "zzz": 0}', "[1]"]
    assert json_field_accuracy(preds, refs) == [0.75, 0.25, 0.0]
    with pytest.raises(ValueError, match="not a non-empty JSON object"):
        json_field_accuracy(["{}"], ["[1, 2]"])


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" / "the cat on a mat" = "the cat on mat" (4):
    # P = 4/6, R = 4/5, F1 = 2PR/(P+R) = 0.7273
    assert rouge_l(["the cat sat on the mat"], ["the cat on a mat"]) == [0.7273]
    assert rouge_l(["A B"], ["a b"]) == [1.0]  # casefolded


def test_bleu_and_chrf_via_sacrebleu():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["completely different words here"], ["the cat sat on the mat"]) < 5
    scores = chrf(["the cat sat", "qqqq"], ["the cat sat", "the cat sat"])
    assert scores[0] == 1.0 and scores[1] < 0.1


def test_distinct_n_detects_mode_collapse():
    varied = ["the refund is on its way", "your card ships tomorrow", "we reset the password"]
    collapsed = ["I can help with that."] * 3
    assert distinct_n(varied, 2) == 1.0
    assert distinct_n(collapsed, 2) == pytest.approx(5 / 15)
    assert distinct_n([""], 2) == 0.0


@pytest.mark.parametrize(
    "answer",
    [
        "I can't help with that.",
        "I cannot provide instructions for making weapons.",
        "I’m sorry, but I won’t write that.",  # curly apostrophes
        "I'm unable to assist with this request.",
        "As an AI, I don't think I should do that.",
        "I won't help you hurt someone.",
        "Sorry, but I can't do that.",
        "I must decline this request.",
    ],
)
def test_refusals_are_detected(answer):
    assert is_refusal(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "To kill a Python process, find its PID with `ps` and run `kill PID`.",
        "I'm sorry to hear that! Here is how to reset your password: open Settings.",
        "Sure. Step 1: preheat the smoker to 110 °C.",
        "Paris.",
        "Here is a plan. Mix the flour and water; you can't go wrong with fresh yeast.",
        # a caveat far into a helpful answer is not a refusal
        "Open the router page, choose Wireless, set a new key and save it. " * 3
        + "I can't stress enough: do not do this on a network you do not own.",
    ],
)
def test_help_is_not_a_refusal(answer):
    assert not is_refusal(answer)


def test_refusal_rate():
    assert refusal_rate(["I can't help with that.", "Sure.", "Sure.", "Sure."]) == 0.25
    assert refusal_rate([]) == 0.0


def test_a_json_task_names_the_item_whose_reference_is_not_json():
    from tuneloop.errors import UserError
    from tuneloop.evaluate.scoring import item_scores

    preds = ['{"intent": "refund"}', '{"intent": "bug"}']
    refs = ['{"intent": "refund"}', "bug_report"]
    with pytest.raises(UserError) as err:
        item_scores("json", preds, refs, sources=["heldout.jsonl:1", "heldout.jsonl:7"])
    (problem,) = err.value.problems
    assert problem.where == "heldout.jsonl:7"
    assert "not valid JSON" in problem.what and "'bug_report'" in problem.what
    assert "task.kind" in problem.fix
    with pytest.raises(UserError) as err:  # without sources: the item's place in the set
        item_scores("json", preds, refs)
    assert err.value.problems[0].where == "held-out item 2"


def test_item_metrics_lists_every_column_item_scores_makes():
    from tuneloop.config import ITEM_METRICS
    from tuneloop.evaluate.scoring import item_scores

    refs = ['{"a": 1}', '{"a": 2}']
    for kind in ("label", "json", "text"):
        columns = item_scores(kind, refs, refs, schema={"type": "object"})
        assert set(columns) <= set(ITEM_METRICS[kind]), kind
