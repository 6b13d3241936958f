"""Checks on a dataset that reading alone cannot make: duplicates, leakage, size, balance.

Each check is a pure function `(train, heldout) -> list[Finding]` listed in `CHECKS`; adding a
check is adding one function to that list. Nothing here prints.

    >>> findings = lint_examples(train, heldout)                            # doctest: +SKIP
    >>> print(format_findings(findings))                                    # doctest: +SKIP
    severity  code              where          message
    error     leakage           heldout.jsonl:4  the same example as train train.jsonl:17
    warning   duplicate         train.jsonl:9  exact duplicate of train.jsonl:2
    warning   too-few-examples  train.jsonl    only 40 training examples (under 100): ...
    1 error, 2 warnings
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tuneloop.data.records import Example, content_hash
from tuneloop.data.split import find_leaks

Severity = Literal["error", "warning"]

FEW_EXAMPLES = 100  # below this, fine-tuning rarely beats few-shot prompting
SOME_EXAMPLES = 500
IMBALANCE_RATIO = 10  # largest class / smallest class
SMALLEST_CLASS = 5


@dataclass
class Finding:
    """One thing lint found. `where` is "file:line" of the example concerned, or a file."""

    code: str
    severity: Severity
    where: str
    message: str


Check = Callable[[list[Example], list[Example]], list[Finding]]


def lint_examples(train: list[Example], heldout: list[Example] | None = None) -> list[Finding]:
    """Run every check in `CHECKS`; errors first, then warnings, each in check order."""
    heldout = heldout or []
    findings = [f for check in CHECKS for f in check(train, heldout)]
    return sorted(findings, key=lambda f: f.severity != "error")


def _duplicates(train: list[Example], heldout: list[Example]) -> list[Finding]:
    """Exact duplicates within one side (same content after whitespace normalisation)."""
    findings = []
    for side in (train, heldout):
        first: dict[str, Example] = {}
        for ex in side:
            earlier = first.setdefault(content_hash(ex), ex)
            if earlier is not ex:
                findings.append(
                    Finding(
                        "duplicate",
                        "warning",
                        ex.source,
                        f"exact duplicate of {earlier.source}; it weighs that example double",
                    )
                )
    return findings


def _leakage(train: list[Example], heldout: list[Example]) -> list[Finding]:
    return [
        Finding(
            "leakage",
            "error",
            ex.source,
            f"the same {'example' if kind == 'content' else 'prompt'} as train {twin.source}: "
            "the held-out score would be inflated",
        )
        for ex, twin, kind in find_leaks(train, heldout)
    ]


def _too_few(train: list[Example], heldout: list[Example]) -> list[Finding]:
    n = len(train)
    if n >= SOME_EXAMPLES:
        return []
    bound = FEW_EXAMPLES if n < FEW_EXAMPLES else SOME_EXAMPLES
    advice = (
        "fine-tuning rarely beats few-shot prompting with so few; "
        "compare against the zero-shot baseline (`tuneloop eval RUN --rung zero-shot`)"
        if n < FEW_EXAMPLES
        else "expect a modest gain at best; compare against the zero-shot baseline"
    )
    return [
        Finding(
            "too-few-examples",
            "warning",
            _files(train),
            f"only {n} training examples (under {bound}): {advice}",
        )
    ]


def _imbalance(train: list[Example], heldout: list[Example]) -> list[Finding]:
    counts = _labels(train)
    if not 2 <= len(counts) <= counts.total() / 2:
        return []  # one class, or labels that are per-example ids rather than classes
    (top, most), (bottom, least) = counts.most_common()[0], counts.most_common()[-1]
    if most / least <= IMBALANCE_RATIO and least >= SMALLEST_CLASS:
        return []
    return [
        Finding(
            "label-imbalance",
            "warning",
            _files(train),
            f"labels are imbalanced: {top!r} has {most} examples, {bottom!r} only {least}; "
            "add examples of the rare labels, or check the slice metrics for them",
        )
    ]


def _unseen_labels(train: list[Example], heldout: list[Example]) -> list[Finding]:
    seen = _labels(train)
    first: dict[str, Example] = {}
    for ex in heldout:
        if ex.label is not None and str(ex.label) not in seen:
            first.setdefault(str(ex.label), ex)
    counts = _labels(heldout)
    return [
        Finding(
            "unseen-label",
            "error",
            ex.source,
            f"label {label!r} appears in held-out ({counts[label]} examples) but never in "
            "train: the model cannot learn it",
        )
        for label, ex in first.items()
    ]


CHECKS: list[Check] = [_duplicates, _leakage, _too_few, _imbalance, _unseen_labels]


def _labels(examples: list[Example]) -> Counter[str]:
    return Counter(str(ex.label) for ex in examples if ex.label is not None)


def _files(examples: list[Example]) -> str:
    """The file(s) the examples came from, for findings about a whole side."""
    files = dict.fromkeys(ex.source.rsplit(":", 1)[0] for ex in examples if ex.source)
    return ", ".join(files) or "train"


def format_findings(findings: list[Finding]) -> str:
    """A plain-text table, one finding a line, and a count of errors and warnings."""
    if not findings:
        return "no problems found"
    rows = [("severity", "code", "where", "message")]
    rows += [(f.severity, f.code, f.where, f.message) for f in findings]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    lines.append(f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}")
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
