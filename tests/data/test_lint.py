"""The basic dataset lint: each check fires when it should and stays quiet otherwise."""

from __future__ import annotations

from tuneloop.data.lint import Finding, format_findings, lint_examples
from tuneloop.data.records import Example


def ex(text: str, label: str, source: str) -> Example:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    return Example(messages, {"label": label}, source)


def balanced(n_labels: int = 4, per_label: int = 150, file: str = "train.jsonl") -> list[Example]:
    return [
        ex(f"text {k}-{i}", f"l{k}", f"{file}:{k * per_label + i + 1}")
        for k in range(n_labels)
        for i in range(per_label)
    ]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def test_clean_dataset_has_no_findings():
    train = balanced()
    heldout = [ex(f"new {k}", f"l{k}", f"heldout.jsonl:{k + 1}") for k in range(4)]
    assert lint_examples(train, heldout) == []
    assert format_findings([]) == "no problems found"


def test_duplicate_names_the_first():
    train = balanced()
    train.append(ex("text  0-5", "l0", "train.jsonl:999"))  # differs only in spacing
    [finding] = lint_examples(train)
    assert finding == Finding(
        "duplicate",
        "warning",
        "train.jsonl:999",
        "exact duplicate of train.jsonl:6; it weighs that example double",
    )


def test_leakage_is_an_error_naming_both_sides():
    train = balanced()
    heldout = [ex("text 1-3", "l1", "heldout.jsonl:1")]
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
    train = balanced(2, 300) + [ex(f"rare {i}", "rare", f"train.jsonl:{700 + i}") for i in range(3)]
    [finding] = lint_examples(train)
    assert finding.code == "label-imbalance"
    assert "'rare' only 3" in finding.message
    ratio = balanced(1, 550) + [ex(f"r{i}", "r", f"t:{i}") for i in range(50)]
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
    heldout = [ex("text 0-0", "l0", "heldout.jsonl:1")]
    findings = lint_examples(train, heldout)
    assert codes(findings) == ["leakage", "too-few-examples"]
    table = format_findings(findings)
    lines = table.splitlines()
    assert lines[0].split() == ["severity", "code", "where", "message"]
    assert lines[1].split()[:3] == ["error", "leakage", "heldout.jsonl:1"]
    assert lines[1].index("leakage") == lines[0].index("code")  # columns line up
    assert lines[-1] == "1 error, 1 warning"
