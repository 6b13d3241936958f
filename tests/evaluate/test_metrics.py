import pytest

from tuneloop.evaluate.metrics import (
    exact_match,
    json_exact,
    json_validity,
    label_scores,
    looks_like_json,
    mean,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Reset_Password  ", "reset_password"),
        ('"refund_request"', "refund_request"),
        ("`bug_report`", "bug_report"),
        ("```bug_report```", "bug_report"),
        ('"bug_report".', "bug_report"),
        ("bug_report.", "bug_report"),
        ("shipping\n  status", "shipping status"),
        ("v1.2", "v1.2"),
        ("it's", "it's"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_per_item():
    preds = ["Refund_Request.", "bug_report", " 'delete_account' ", "cancel"]
    refs = ["refund_request", "feature_request", "delete_account", "cancel_subscription"]
    assert exact_match(preds, refs) == [1.0, 0.0, 1.0, 0.0]
    assert exact_match([], []) == []


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        exact_match(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="predictions"):
        label_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="predictions"):
        json_exact(["{}"], [])


def test_label_scores_confusion_case():
    # refs:  a a a b b c
    # preds: a a b b c x      (x is outside the label set)
    # a: tp=2, predicted 2, support 3 -> P=1,   R=2/3, F1=0.8
    # b: tp=1, predicted 2, support 2 -> P=1/2, R=1/2, F1=0.5
    # c: tp=0, predicted 1, support 1 -> P=0,   R=0,   F1=0
    refs = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a", "b", "b", "c", "x"]
    s = label_scores(preds, refs)
    assert s["n"] == 6
    assert s["accuracy"] == pytest.approx(3 / 6)
    assert s["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.0) / 3)
    assert s["out_of_set"] == 1
    assert s["per_label"]["a"] == {
        "n": 3,
        "correct": 2,
        "accuracy": pytest.approx(2 / 3),
        "precision": 1.0,
        "f1": pytest.approx(0.8),
    }
    assert s["per_label"]["b"]["precision"] == pytest.approx(0.5)
    assert s["per_label"]["c"] == {
        "n": 1,
        "correct": 0,
        "accuracy": 0.0,
        "precision": 0.0,
        "f1": 0.0,
    }
    assert list(s["per_label"]) == ["a", "b", "c"]


def test_label_never_predicted_has_zero_f1():
    s = label_scores(["a", "a", "a"], ["a", "a", "b"])
    assert s["per_label"]["b"] == {
        "n": 1,
        "correct": 0,
        "accuracy": 0.0,
        "precision": 0.0,
        "f1": 0.0,
    }
    # a: P=2/3, R=1, F1=0.8; b: 0.
    assert s["macro_f1"] == pytest.approx(0.4)
    assert s["out_of_set"] == 0


def test_label_scores_normalizes_and_ignores_stray_classes():
    s = label_scores(['"A".', "garbage one", "garbage two"], ["a", "b", "b"])
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert set(s["per_label"]) == {"a", "b"}  # stray predictions do not become classes
    assert s["macro_f1"] == pytest.approx((1.0 + 0.0) / 2)
    assert s["out_of_set"] == 2


def test_label_scores_declared_labels_are_in_set():
    s = label_scores(["c", "a"], ["a", "a"], labels=["a", "b", "c"])
    assert s["out_of_set"] == 0
    assert set(s["per_label"]) == {"a"}
    assert s["macro_f1"] == pytest.approx(2 / 3)  # a: P=1, R=1/2


def test_label_scores_perfect_and_empty():
    s = label_scores(["x", "y"], ["x", "y"])
    assert (s["accuracy"], s["macro_f1"], s["out_of_set"]) == (1.0, 1.0, 0)
    with pytest.raises(ValueError, match="empty"):
        label_scores([], [])


def test_json_validity():
    preds = [
        '{"a": 1}',
        "[1, 2]",
        '```json\n{"a": [1, 2]}\n```',
        '```\n{"a": 1}\n```',
        '  ```JSON {"a": 1}```  ',
        "{'a': 1}",
        '"just a string"',
        "42",
        '{"a": NaN}',
        '{"a": 1',
        "",
    ]
    assert json_validity(preds) == [1.0] * 5 + [0.0] * 6


def test_json_exact():
    refs = ['{"a": 1, "b": [1, 2]}'] * 6 + ["[true]", '{"x": 1}']
    preds = [
        '{"b": [1, 2], "a": 1}',  # key order does not matter
        '```json\n{"a": 1.0, "b": [1, 2]}\n```',  # 1 equals 1.0
        '{"a": 1, "b": [2, 1]}',  # list order does
        '{"a": true, "b": [1, 2]}',  # true is not 1
        '{"a": 1, "b": [1, 2], "c": null}',
        "not json",
        "[1]",  # 1 is not true either
        '{"x": "1"}',
    ]
    assert json_exact(preds, refs) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_json_exact_bad_reference_is_an_error():
    with pytest.raises(ValueError, match="reference 1 is not valid JSON"):
        json_exact(["{}", "{}"], ["{}", "{oops"])


def test_looks_like_json():
    assert looks_like_json('{"intent": "refund_request"}')
    assert looks_like_json('```json\n[{"a": 1}]\n```')
    assert not looks_like_json("refund_request")
    assert not looks_like_json("42")
    assert not looks_like_json("{not json}")


def test_mean():
    assert mean([1.0, 0.0, 1.0, 1.0]) == 0.75
    assert mean(x for x in [2.0, 4.0]) == 3.0
    with pytest.raises(ValueError, match="empty"):
        mean([])


def test_docstring_examples():
    import doctest

    import tuneloop.evaluate.metrics as metrics

    assert doctest.testmod(metrics).failed == 0
