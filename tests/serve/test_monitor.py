"""Drift of live requests against the training data, on the project's support-intent dataset:
requests like the held-out split raise no flag; longer prompts with new words and answers piled
on one label raise each flag with its numbers."""

from __future__ import annotations

import json
import random

import pytest

from tuneloop.data.examples import support_intents
from tuneloop.errors import UserError
from tuneloop.serve.monitor import compare, format_report, live_requests
from tuneloop.serve.requestlog import read_log


@pytest.fixture(scope="module")
def data():
    examples = support_intents(n_per_label=30, seed=0)
    return examples[:180], examples[180:]


def texts(examples):
    return [ex.prompt_messages[-1]["content"] for ex in examples], [ex.reference for ex in examples]


def test_requests_like_the_training_data_raise_no_flag(data):
    train, live = data
    report = compare(*texts(train), *texts(live), model="support")
    assert report.enough and not report.drifted, format_report(report)
    assert {s.name for s in report.signals} == {
        "prompt length",
        "vocabulary",
        "unseen words",
        "answers",
        "answers outside the label set",
    }


def test_drifted_requests_are_flagged_with_numbers(data):
    train, live = data
    rng = random.Random(0)
    new_words = ["crypto", "wallet", "staking", "validator", "blockchain", "ledger", "seed"]
    prompts = [
        " ".join(rng.choice(new_words) for _ in range(30)) + " " + text for text in texts(live)[0]
    ]
    label = texts(train)[1][0]
    answers = [label] * (len(prompts) - 8) + ["crypto_question"] * 8
    report = compare(*texts(train), prompts, answers, model="support")
    flagged = {s.name for s in report.signals if s.drifted}
    assert flagged == {
        "prompt length",
        "vocabulary",
        "unseen words",
        "answers",
        "answers outside the label set",
    }, format_report(report)
    length = next(s for s in report.signals if s.name == "prompt length")
    assert length.value > 0.9 and length.details["p_value"] < 1e-6
    assert length.details["live"]["mean"] > length.details["train"]["mean"] + 25
    unseen = next(s for s in report.signals if s.name == "unseen words")
    assert {w for w, _ in unseen.details["top_unseen"]} >= {"crypto", "wallet"}
    text = format_report(report)
    assert "DRIFT" in text and "crypto" in text and "crypto_question" not in text.split("\n")[0]


def test_too_few_requests_are_reported_but_never_flagged(data):
    train, _ = data
    report = compare(*texts(train), ["bitcoin " * 40] * 5, ["nope"] * 5)
    assert not report.enough and not report.drifted
    assert "too few" in format_report(report)


def test_free_text_answers_compare_lengths():
    train_prompts = [f"describe item {i}" for i in range(60)]
    train_answers = [f"answer {i} " + "word " * (i % 5) for i in range(60)]  # all different
    live_answers = [" ".join(["word"] * 40) for _ in range(40)]
    report = compare(train_prompts, train_answers, train_prompts[:40], live_answers)
    answer = next(s for s in report.signals if s.name == "answer length")
    assert answer.drifted and answer.value == 1.0


def test_live_requests_pick_one_model_from_the_log(tmp_path):
    log = tmp_path / "requests.jsonl"
    rows = [
        {"model": "a", "messages": [{"role": "user", "content": "hi a"}], "answer": "x"},
        {"model": "b", "messages": [{"role": "user", "content": "hi b"}], "answer": "y"},
        {"model": "__base__", "prompt": "raw", "answer": "z"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"model": "a", "mess')
    records = read_log(log)  # the torn last line is skipped
    assert len(records) == 3
    assert live_requests(records, "a") == (["hi a"], ["x"], "a")
    with pytest.raises(UserError, match="--model"):
        live_requests(records, None)
