"""Lint data files: every bad record of every file at once, then every dataset check.

    >>> cols = CsvColumns(label="category")
    >>> report = lint_files("train.csv", "test.csv", csv=cols)                # doctest: +SKIP
    >>> report.errors, report.n_train, report.n_heldout                       # doctest: +SKIP
    (7, 10003, 3080)

A file of preference pairs (records with "chosen" and "rejected") is read and checked by
`tuneloop.data.preference` (`read_preferences`, `lint_pairs`), plus the leakage checks between
train and held-out on each pair's prompt and chosen answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.data.csvfile import CsvColumns
from tuneloop.data.detect import sniff_format
from tuneloop.data.formats import Scan, scan_examples
from tuneloop.data.lint import Finding, LintOptions, lint_examples
from tuneloop.data.problems import BadRecord
from tuneloop.errors import DataError


@dataclass
class LintReport:
    findings: list[Finding]
    kind: str  # "examples" or "preferences"
    train: Scan | None = None  # for examples: what was read, for a cleaned copy
    heldout: Scan | None = None
    n_train: int = 0
    n_heldout: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    @property
    def warnings(self) -> int:
        return len(self.findings) - self.errors


def lint_files(
    train: str | Path,
    heldout: str | Path | None = None,
    format: str = "auto",
    csv: CsvColumns | None = None,
    options: LintOptions | None = None,
) -> LintReport:
    """Read `train` (and `heldout`) leniently and lint them: the problems of the records that
    could not be read, then `lint_examples` over the ones that could. Errors come first."""
    if format in ("auto", "preference") and sniff_format(train) == "preference":
        return _lint_preferences(Path(train), Path(heldout) if heldout else None, options)
    started = time.perf_counter()
    scans = [scan_examples(train, format, csv)]
    if heldout is not None:
        scans.append(scan_examples(heldout, format, csv))
    read = time.perf_counter()
    findings = [to_finding(scan.path, p) for scan in scans for p in scan.problems]
    held = scans[1].examples if heldout is not None else []
    findings += lint_examples(scans[0].examples, held, options)
    report = LintReport(
        sorted(findings, key=lambda f: f.severity != "error"),
        "examples",
        train=scans[0],
        heldout=scans[1] if heldout is not None else None,
        n_train=len(scans[0].examples),
        n_heldout=len(held),
    )
    report.seconds = {"read": read - started, "checks": time.perf_counter() - read}
    return report


def to_finding(path: Path, problem: BadRecord) -> Finding:
    where = f"{path}:{problem.line}" if problem.line is not None else str(path)
    what = problem.what
    if problem.count > 1:
        what += f" (on {problem.count} records; the first is named)"
    return Finding(
        problem.code,
        problem.severity,
        where,
        what,
        field=problem.field,
        column=problem.column,
        fix=problem.fix,
    )


def _lint_preferences(train: Path, heldout: Path | None, options: LintOptions | None) -> LintReport:
    try:
        from tuneloop.data import preference
    except ModuleNotFoundError as e:
        if e.name != "tuneloop.data.preference":
            raise
        finding = Finding(
            "preference-data",
            "error",
            f"{train}:1",
            "these are preference pairs (chosen/rejected), and this tuneloop cannot read them",
            fix="lint supervised examples (messages, alpaca, sharegpt, prompt_completion, csv)",
        )
        return LintReport([finding], "preferences")
    started = time.perf_counter()
    findings: list[Finding] = []
    sides = []
    for path in [train, heldout] if heldout is not None else [train]:
        try:
            pairs = preference.read_preferences(path)
        except DataError as err:
            problem = err.problems[0]
            where = problem.where or str(path)
            findings.append(
                Finding("invalid-record", "error", where, problem.what, fix=problem.fix)
            )
            pairs = []
        findings += preference.lint_pairs(pairs)
        sides.append(pairs)
    if len(sides) == 2 and all(hasattr(p, "as_example") for side in sides for p in side):
        from tuneloop.data.lint import _leakage, _near_duplicates

        train_ex = [p.as_example() for p in sides[0]]
        held_ex = [p.as_example() for p in sides[1]]
        opts = options or LintOptions()
        findings += _leakage(train_ex, held_ex, opts)
        near = _near_duplicates(train_ex, held_ex, opts)
        findings += [f for f in near if f.code == "near-leakage"]
    report = LintReport(
        sorted(findings, key=lambda f: f.severity != "error"),
        "preferences",
        n_train=len(sides[0]),
        n_heldout=len(sides[1]) if len(sides) > 1 else 0,
    )
    report.seconds = {"read+checks": time.perf_counter() - started}
    return report
