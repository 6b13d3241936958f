"""Checks on a dataset that reading alone cannot make: duplicates, leakage, size, balance,
volatile facts, system prompts, personal data, suspicious characters and token lengths.

Each check is a pure function `(train, heldout, options) -> list[Finding]` listed in `CHECKS`;
adding a check is adding one function to that list. Nothing here prints or reads files
(`data/lintfile.py` reads a file leniently and adds the problems of every bad record).

    >>> findings = lint_examples(train, heldout)                            # doctest: +SKIP
    >>> print(format_findings(findings))                                    # doctest: +SKIP
    severity  code              where            message
    error     leakage           heldout.jsonl:4  the same example as train train.jsonl:17: ...
    warning   duplicate         train.jsonl:9    exact duplicate of train.jsonl:2; ...
    warning   near-duplicate    train.jsonl:31   near-duplicate of train.jsonl:8 (similarity ...
    warning   too-few-examples  train.jsonl      only 40 training examples (under 100): ...
    1 error, 3 warnings
"""

from __future__ import annotations

import re
from collections import Counter

from tuneloop.data.dedupe import find_near_duplicates
from tuneloop.data.encoding import check_encoding
from tuneloop.data.findings import (
    DEFAULT_NEAR_THRESHOLD,
    Check,
    Finding,
    LintOptions,
    Severity,
    files_of,
    shorten,
)
from tuneloop.data.pii import check_pii
from tuneloop.data.prompts import check_system_prompts
from tuneloop.data.records import Example, content_hash, message_text, prompt_hash
from tuneloop.data.split import find_leaks
from tuneloop.data.tokens import check_token_lengths

__all__ = [
    "CHECKS",
    "DEFAULT_NEAR_THRESHOLD",
    "Check",
    "Finding",
    "LintOptions",
    "Severity",
    "format_findings",
    "lint_examples",
]

FEW_EXAMPLES = 100  # below this, fine-tuning rarely beats few-shot prompting
SOME_EXAMPLES = 500
IMBALANCE_RATIO = 10  # largest class / smallest class
SMALLEST_CLASS = 5
VOLATILE_SHARE = 0.05  # share of training answers stating volatile facts that is a red flag
VOLATILE_MIN = 3  # ... and never for fewer answers than this


def lint_examples(
    train: list[Example], heldout: list[Example] | None = None, options: LintOptions | None = None
) -> list[Finding]:
    """Run every check in `CHECKS`; errors first, then warnings, each in check order."""
    heldout = heldout or []
    options = options or LintOptions()
    findings = [f for check in CHECKS for f in check(train, heldout, options)]
    return sorted(findings, key=lambda f: f.severity != "error")


def _duplicates(
    train: list[Example], heldout: list[Example], options: LintOptions
) -> list[Finding]:
    """Exact duplicates within one side (same content after whitespace normalisation), and
    examples that repeat an earlier prompt with another answer."""
    findings = []
    for side in (train, heldout):
        first: dict[str, Example] = {}
        asked: dict[str, Example] = {}
        for ex in side:
            earlier = first.setdefault(content_hash(ex), ex)
            if earlier is not ex:
                findings.append(
                    Finding(
                        "duplicate",
                        "warning",
                        ex.source,
                        f"exact duplicate of {earlier.source}; it weighs that example double",
                        fix="drop it (`tuneloop data lint --fix OUT` keeps the first)",
                        related=earlier.source,
                    )
                )
                continue
            before = asked.setdefault(prompt_hash(ex), ex)
            if before is not ex:
                findings.append(
                    Finding(
                        "conflicting-answers",
                        "warning",
                        ex.source,
                        f"the same prompt as {before.source} with another answer "
                        f"({shorten(ex.reference, 30)} vs {shorten(before.reference, 30)}): "
                        "the model is taught both",
                        fix="keep the right answer, or make the prompts say what differs",
                        related=before.source,
                    )
                )
    return findings


def _leakage(train: list[Example], heldout: list[Example], options: LintOptions) -> list[Finding]:
    return [
        Finding(
            "leakage",
            "error",
            ex.source,
            f"the same {'example' if kind == 'content' else 'prompt'} as train {twin.source}: "
            "the held-out score would be inflated",
            fix="drop it from one side (`--fix OUT` drops the train copy), or let "
            "`tuneloop data split` make the split",
            related=twin.source,
        )
        for ex, twin, kind in find_leaks(train, heldout)
    ]


def _near_duplicates(
    train: list[Example], heldout: list[Example], options: LintOptions
) -> list[Finding]:
    """MinHash/LSH near-duplicates inside train and across held-out and train."""
    if not options.near_threshold or not train:
        return []
    near = find_near_duplicates(train, heldout, options.near_threshold)
    findings = []
    for i, j, similarity in near.within:
        ex, twin = train[i], train[j]
        same = "" if ex.reference == twin.reference else ", with another answer"
        findings.append(
            Finding(
                "near-duplicate",
                "warning",
                ex.source,
                f"near-duplicate of {twin.source} (similarity {similarity:.2f}{same}): "
                f"{shorten(message_text(ex.messages[-2]), 40)}",
                fix="drop one of them (`--fix OUT` keeps the first), or make them differ",
                related=twin.source,
            )
        )
    for h, j, similarity in near.across:
        ex, twin = heldout[h], train[j]
        findings.append(
            Finding(
                "near-leakage",
                "warning",
                ex.source,
                f"nearly the same prompt as train {twin.source} (similarity {similarity:.2f}): "
                f"{shorten(message_text(ex.messages[-2]), 40)}; the held-out score may be inflated",
                fix="drop one of the two, or split with `tuneloop data split`, which keeps "
                "near-twins on one side",
                related=twin.source,
            )
        )
    return findings


def _too_few(train: list[Example], heldout: list[Example], options: LintOptions) -> list[Finding]:
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
            files_of(train),
            f"only {n} training examples (under {bound}): {advice}",
        )
    ]


def _imbalance(train: list[Example], heldout: list[Example], options: LintOptions) -> list[Finding]:
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
            files_of(train),
            f"labels are imbalanced: {top!r} has {most} examples, {bottom!r} only {least}; "
            "add examples of the rare labels, or check the slice metrics for them",
        )
    ]


def _unseen_labels(
    train: list[Example], heldout: list[Example], options: LintOptions
) -> list[Finding]:
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
            fix="add training examples of this label, or drop it from held-out",
        )
        for label, ex in first.items()
    ]


_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")  # fmt: skip
_YEAR = r"(?:19|20)\d{2}"
# What goes stale once trained into weights, by kind. A bare year ("founded in 1998") is left
# out: it is mostly history, which does not change.
VOLATILE = {
    "date": re.compile(
        rf"\b{_YEAR}-\d{{1,2}}-\d{{1,2}}\b|\b\d{{1,2}}[/.]\d{{1,2}}[/.]{_YEAR}\b"
        rf"|\b{_MONTH}\.?\s+(?:\d{{1,2}}(?:st|nd|rd|th)?,?\s+)?{_YEAR}\b"
        rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+{_YEAR}\b",
        re.IGNORECASE,
    ),
    "price": re.compile(
        r"[$€£¥]\s?\d[\d,]*(?:\.\d+)?|\b(?:usd|eur|gbp|jpy)\s?\d[\d,]*(?:\.\d+)?"
        r"|\b\d[\d,]*(?:\.\d+)?\s?(?:usd|eur|gbp|jpy|dollars?|euros?|cents?)\b",
        re.IGNORECASE,
    ),
    "version": re.compile(
        r"\bv\d+(?:\.\d+)+\b|\bversion\s+\d+(?:\.\d+)*\b|\b\d+\.\d+\.\d+\b", re.IGNORECASE
    ),
    "recency": re.compile(
        r"\b(?:latest|newest|most recent|as of|currently|at the moment|right now|nowadays"
        r"|to date)\b"
        r"|\bcurrent\s+(?:price|version|release|rate|ceo|president|leader|champion|record"
        r"|model|value|population|holder)s?\b",
        re.IGNORECASE,
    ),
    "stock": re.compile(
        r"\b(?:stock|share)\s+price|\bmarket\s+cap(?:italization)?\b|\btrading\s+at\b"
        r"|\b(?:nasdaq|nyse|dow jones|s&p 500|ftse 100)\b",
        re.IGNORECASE,
    ),
}


def find_volatile(answer: str, prompt: str = "") -> list[tuple[str, str]]:
    """(kind, text) of each fact in `answer` that goes stale, unless `prompt` states it too
    (an answer that copies a date or a price from its input teaches reading, not the fact).

    >>> find_volatile("The Pro plan costs $19.99 a month as of March 2024.")
    [('date', 'March 2024'), ('price', '$19.99'), ('recency', 'as of')]
    >>> find_volatile("Your order of 2 items ships on 2024-05-02.", "ordered 2024-05-02")
    []
    >>> find_volatile("refund_request"), find_volatile("You have 2 items in your cart.")
    ([], [])
    """
    seen = " ".join(prompt.casefold().split())
    return [
        (kind, m.group())
        for kind, pattern in VOLATILE.items()
        for m in pattern.finditer(answer)
        if " ".join(m.group().casefold().split()) not in seen
    ]


def _volatile_facts(
    train: list[Example], heldout: list[Example], options: LintOptions
) -> list[Finding]:
    """Training answers that state dates, prices, versions, stock figures or "latest",
    "current(ly)", "as of": facts that are wrong soon after they are baked into weights.

    Rule: a training answer counts when it states such a fact that its prompt does not (see
    `find_volatile`); one warning when at least `VOLATILE_MIN` answers and `VOLATILE_SHARE`
    (5%) of all training answers count. Held-out answers train nothing and are not counted.
    """
    hits = [(ex, found) for ex in train
            if (found := find_volatile(ex.reference, _prompt_text(ex)))]  # fmt: skip
    share = len(hits) / len(train) if train else 0.0
    if len(hits) < VOLATILE_MIN or share < VOLATILE_SHARE:
        return []
    kinds = Counter(kind for _, found in hits for kind in dict.fromkeys(k for k, _ in found))
    examples = ", ".join(f"{ex.source} ({shorten(found[0][1], 24)})" for ex, found in hits[:3])
    by_kind = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
    return [
        Finding(
            "volatile-facts",
            "warning",
            hits[0][0].source,
            f"{len(hits)} of {len(train)} training answers ({share:.0%}) state facts that go "
            f"stale once trained into the weights ({by_kind}), e.g. {examples}",
            fix="keep such facts in retrieval, not in the weights: look them up at answer time "
            "and put them in the prompt (the retrieval rung), and train on answers that use "
            "the facts the prompt gives",
            related=hits[1][0].source,
        )
    ]


def _prompt_text(ex: Example) -> str:
    return "\n".join(message_text(m) for m in ex.prompt_messages)


CHECKS: list[Check] = [
    _duplicates,
    _leakage,
    _near_duplicates,
    _too_few,
    _imbalance,
    _unseen_labels,
    _volatile_facts,
    check_system_prompts,
    check_pii,
    check_encoding,
    check_token_lengths,
]


def _labels(examples: list[Example]) -> Counter[str]:
    return Counter(str(ex.label) for ex in examples if ex.label is not None)


def format_findings(findings: list[Finding], max_per_code: int | None = None) -> str:
    """A plain-text table, one finding a line, and a count of errors and warnings. With
    `max_per_code`, each code shows its first findings and a count of the rest."""
    if not findings:
        return "no problems found"
    rows = [("severity", "code", "where", "message")]
    total = Counter(f.code for f in findings)
    shown: Counter[str] = Counter()
    for f in findings:
        shown[f.code] += 1
        if max_per_code is not None and shown[f.code] > max_per_code:
            continue
        where = f"{f.where}:{f.column}" if f.column is not None else f.where
        message = f"{f.field}: {f.message}" if f.field else f.message
        rows.append((f.severity, f.code, where, message))
        if shown[f.code] == max_per_code and total[f.code] > max_per_code:
            more = f"... and {total[f.code] - max_per_code} more (--all or --json lists them all)"
            rows.append((f.severity, f.code, "", more))
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
