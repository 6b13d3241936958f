"""The basic dataset lint: each check fires when it should and stays quiet otherwise."""

from __future__ import annotations

import random

from tuneloop.data.lint import Finding, format_findings, lint_examples
from tuneloop.data.records import Example

WORDS = [
    *("card", "transfer", "balance", "refund", "account", "payment", "fee", "limit"),
    *("branch", "loan", "rate", "travel", "cash", "pin", "phone", "address", "statement"),
    *("deposit", "cheque", "salary", "tax", "crypto", "stock", "online", "app"),
]


def sentence(seed: str) -> str:
    """A distinct random sentence per seed: no two are near-duplicates."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(12))


def ex(text: str, label: str, source: str) -> Example:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    return Example(messages, {"label": label}, source)


def balanced(n_labels: int = 4, per_label: int = 150, file: str = "train.jsonl") -> list[Example]:
    return [
        ex(sentence(f"{k}-{i}"), f"l{k}", f"{file}:{k * per_label + i + 1}")
        for k in range(n_labels)
        for i in range(per_label)
    ]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def test_clean_dataset_has_no_findings():
    train = balanced()
    heldout = [ex(sentence(f"new {k}"), f"l{k}", f"heldout.jsonl:{k + 1}") for k in range(4)]
    assert lint_examples(train, heldout) == []
    assert format_findings([]) == "no problems found"


def test_duplicate_names_the_first():
    train = balanced()
    train.append(ex(sentence("0-5").replace(" ", "  "), "l0", "train.jsonl:999"))  # spacing
    [finding] = lint_examples(train)
    assert (finding.code, finding.severity, finding.where, finding.related) == (
        "duplicate",
        "warning",
        "train.jsonl:999",
        "train.jsonl:6",
    )
    assert finding.message == "exact duplicate of train.jsonl:6; it weighs that example double"


def test_leakage_is_an_error_naming_both_sides():
    train = balanced()
    heldout = [ex(sentence("1-3"), "l1", "heldout.jsonl:1")]
    [finding] = lint_examples(train, heldout)
    assert (finding.code, finding.severity, finding.where) == (
        "leakage",
        "error",
        "heldout.jsonl:1",
    )
    assert "train.jsonl:154" in finding.message


def test_too_few_examples_under_100_and_under_500():
    few = lint_examples(balanced(4, 20))
    assert codes(few) == ["too-few-examples"]
    assert "only 80 training examples (under 100)" in few[0].message
    assert few[0].where == "train.jsonl"
    some = lint_examples(balanced(4, 100))
    assert "(under 500)" in some[0].message
    assert all(f.severity == "warning" for f in few + some)


def test_label_imbalance():
    rare = [ex(sentence(f"rare {i}"), "rare", f"train.jsonl:{700 + i}") for i in range(3)]
    train = balanced(2, 300) + rare
    [finding] = lint_examples(train)
    assert finding.code == "label-imbalance"
    assert "'rare' only 3" in finding.message
    ratio = balanced(1, 550) + [ex(sentence(f"r{i}"), "r", f"t:{i}") for i in range(50)]
    assert codes(lint_examples(ratio)) == ["label-imbalance"]


def test_unseen_label_in_heldout():
    train = balanced()
    heldout = [
        ex("something new", "brand_new", "heldout.jsonl:1"),
        ex("again new", "brand_new", "heldout.jsonl:2"),
    ]
    [finding] = lint_examples(train, heldout)
    assert (finding.code, finding.severity, finding.where) == (
        "unseen-label",
        "error",
        "heldout.jsonl:1",
    )
    assert "'brand_new' appears in held-out (2 examples)" in finding.message


def test_errors_come_first_and_table_counts():
    train = balanced(4, 20)
    heldout = [ex(sentence("0-0"), "l0", "heldout.jsonl:1")]
    findings = lint_examples(train, heldout)
    assert codes(findings) == ["leakage", "too-few-examples"]
    table = format_findings(findings)
    lines = table.splitlines()
    assert lines[0].split() == ["severity", "code", "where", "message"]
    assert lines[1].split()[:3] == ["error", "leakage", "heldout.jsonl:1"]
    assert lines[1].index("leakage") == lines[0].index("code")  # columns line up
    assert lines[-1] == "1 error, 1 warning"
