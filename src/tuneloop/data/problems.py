"""How readers report a bad record: raise at the first one, or collect every one for lint.

Training wants the first problem as a `DataError` (stop, say where, say how to fix). Lint wants
every bad line of the file at once. The readers are written once, against a `Collector`:

    >>> strict = Collector("train.jsonl", strict=True)
    >>> strict.report("invalid-json", 3, "invalid JSON at column 9: ...", column=9)
    Traceback (most recent call last):
    tuneloop.errors.DataError: train.jsonl:3: invalid JSON at column 9: ...
    >>> lenient = Collector("train.jsonl", strict=False)
    >>> lenient.report("invalid-json", 3, "invalid JSON at column 9: ...", column=9)
    >>> lenient.problems[0].code, lenient.problems[0].line
    ('invalid-json', 3)

Warnings (`severity="warning"`) never stop a strict reader. A problem marked `fatal` ends the
reading of the file in both modes (nothing after it can be read sensibly): the lenient reader
raises `StopReading`, which its caller catches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tuneloop.errors import DataError


@dataclass
class BadRecord:
    """One problem found while reading: a stable `code`, the 1-based `line` (None for the
    whole file), what is wrong and how to fix it, and the `field`/`column` where they apply."""

    code: str
    line: int | None
    what: str
    fix: str | None = None
    severity: Literal["error", "warning"] = "error"
    field: str | None = None
    column: int | None = None
    count: int = 1  # records this problem was seen on (warnings are reported once per kind)


class InvalidRecord(Exception):
    """A problem in one record, raised by the code that reads the record's values; the reader
    catches it and adds the file and line. `about_format` asks the reader to say which format it
    was reading, for problems that a wrong format explains."""

    def __init__(
        self,
        what: str,
        fix: str | None = None,
        about_format: bool = False,
        code: str = "invalid-record",
        field: str | None = None,
    ):
        super().__init__(what)
        self.what, self.fix, self.about_format = what, fix, about_format
        self.code, self.field = code, field


def kind_of(value: object) -> str:
    """How a message names the JSON type of a value it did not expect.

    >>> kind_of(None), kind_of(True), kind_of({}), kind_of(2.5)
    ('null', 'true/false', 'an object', 'a number')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number"}.get(
        type(value), "a number" if isinstance(value, float) else type(value).__name__
    )


class StopReading(Exception):
    """A fatal problem was collected; the file cannot be read any further."""


@dataclass
class Collector:
    path: str | Path
    strict: bool
    problems: list[BadRecord] = field(default_factory=list)
    _once: dict[tuple, BadRecord] = field(default_factory=dict)

    def report(
        self,
        code: str,
        line: int | None,
        what: str,
        fix: str | None = None,
        *,
        severity: Literal["error", "warning"] = "error",
        field: str | None = None,
        column: int | None = None,
        fatal: bool = False,
        once: tuple | None = None,
    ) -> None:
        """Record a problem, or raise it as a `DataError` when reading strictly.

        `once` is a key for warnings that would repeat on every record (an ignored key):
        they are kept once, at their first line, and counted."""
        if severity == "error" and self.strict:
            raise DataError(self.path, line, what, fix)
        if once is not None and (seen := self._once.get(once)) is not None:
            seen.count += 1
            return
        problem = BadRecord(code, line, what, fix, severity, field, column)
        if once is not None:
            self._once[once] = problem
        self.problems.append(problem)
        if fatal:
            raise StopReading

    @property
    def bad_lines(self) -> set[int]:
        """Lines that hold an error: their records are not read."""
        return {p.line for p in self.problems if p.severity == "error" and p.line is not None}
