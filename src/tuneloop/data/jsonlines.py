"""Data files decoded into JSON values that keep their line numbers: JSONL or a JSON array.

Every value keeps the line it was read from, and every problem goes to a `Collector` with the
line, the column and the fix, so the same code stops at the first one (training) or reports all
of them (lint). A key given twice in one object is a warning; a line nested too deeply for
Python's JSON reader is an error, not a crash. Below the JSON, `read_bytes` and `decode` turn
the file into text: a missing file, UTF-16, a byte-order mark or a line that is not UTF-8 is
reported with its line.

    >>> report = Collector("train.jsonl", strict=False)
    >>> jsonl_records('{"prompt": "Hi", "completion": "Hello!"}\\n\\n{"prompt": "Bye",', report)
    [(1, 1, {'prompt': 'Hi', 'completion': 'Hello!'})]
    >>> [(p.code, p.line, p.column) for p in report.problems]
    [('invalid-json', 3, 18)]

What the values mean (a chat in one of the formats, a preference pair) is for the readers
above this module: `tuneloop.data.formats` and `tuneloop.data.preference`.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tuneloop.data.problems import Collector
from tuneloop.errors import DataError


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a missing file, a folder or an unreadable file is a `DataError`."""
    if not path.exists():
        fix = (
            f"check the path; looked for {path.absolute()} (a path given on the command line "
            "starts at the current directory, a path in a recipe at the recipe's folder)"
        )
        raise DataError(path, None, "file not found", fix=fix)
    if path.is_dir():
        raise DataError(
            path, None, "is a folder, not a data file", fix="name a .jsonl, .json or .csv file"
        )
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(path, None, f"cannot read the file: {e.strerror}") from None


def decode(raw: bytes, report: Collector) -> tuple[str, bool]:
    """The file as text and whether it began with a UTF-8 byte-order mark (dropped). A line
    that is not UTF-8 is reported and decoded with U+FFFD in place of its bad bytes; the
    readers skip the records on such lines."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        report.report(
            "encoding",
            1,
            "the file is UTF-16 encoded; tuneloop reads UTF-8",
            fix="re-save it as UTF-8, e.g. `iconv -f utf-16 -t utf-8 in.jsonl > out.jsonl`",
            fatal=True,
        )
    bom = raw.startswith(codecs.BOM_UTF8)
    if bom:
        report.report(
            "bom",
            1,
            "the file starts with a UTF-8 byte-order mark (BOM)",
            fix="tuneloop skips it, but other tools read it as part of the first key or column "
            "name; `tuneloop data lint --fix OUT` writes a copy without it",
            severity="warning",
        )
        raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8"), bom
    except UnicodeDecodeError:
        pass
    lines = raw.split(b"\n")  # a newline byte never occurs inside a UTF-8 multi-byte character
    for number, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            report.report(
                "encoding",
                number,
                f"not valid UTF-8: byte 0x{line[e.start]:02x} at byte {e.start + 1} of the line",
                fix="re-save the file as UTF-8; from Windows-1252 or Latin-1: "
                "`iconv -f cp1252 -t utf-8 in.jsonl > out.jsonl`",
                column=e.start + 1,
            )
    return raw.decode("utf-8", errors="replace"), bom


_JSON_FIX = (
    "fix the JSON on this line: look for a missing comma, bracket or quote, or a quote or "
    'line break inside a string that is not escaped (\\" and \\n)'
)


def jsonl_records(text: str, report: Collector) -> list[tuple[int, int, object]]:
    """(line, line, value) for every non-blank line. Split on "\\n" only: a JSON string may
    hold U+2028, which `str.splitlines` would treat as a line break."""
    records: list[tuple[int, int, object]] = []
    one_object: bool | None = None
    parse = _Parser(report)
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((lineno, lineno, parse.loads(line, lineno)))
        except RecursionError:
            _too_deep(report, lineno)
        except json.JSONDecodeError as e:
            if not records:
                if one_object is None:
                    one_object = _is_one_object(text)
                if one_object:
                    report.report(
                        "multi-line-json",
                        lineno,
                        "the file holds one JSON object spread over several lines; expected one "
                        "object per line (JSONL) or a JSON array",
                        fix="write one example per line, or put the examples in a JSON array "
                        "[{...}, {...}]",
                        fatal=True,
                    )
            report.report(
                "invalid-json",
                lineno,
                f"invalid JSON at column {e.colno}: {e.msg}",
                fix=_JSON_FIX,
                column=e.colno,
            )
    return records


def _is_one_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (json.JSONDecodeError, RecursionError):
        return False


def _too_deep(report: Collector, line: int, fatal: bool = False) -> None:
    """Python's JSON decoder recurses once per level and gives up near 1,000 levels (a
    RecursionError): a line nested that deep is generated or corrupted, never an example."""
    report.report(
        "invalid-json",
        line,
        "JSON nested too deeply: more levels of nested lists and objects than Python's JSON "
        "reader can follow",
        fix="this line is not an example (a record holds a few levels: messages, turns, "
        "meta); regenerate it or drop the line",
        fatal=fatal,
    )


class _Parser:
    """`json.loads` that reports a key given twice in one object (JSON readers keep the last
    value and drop the first without a word) as a warning on the record's line:

        {"messages": [...first...], "messages": [...second...]}   -> only the second is read
    """

    def __init__(self, report: Collector):
        self.report = report
        self._twice: list[str] = []
        self.decoder = json.JSONDecoder(object_pairs_hook=self._object)

    def _object(self, pairs: list[tuple[str, object]]) -> dict:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            counts = Counter(key for key, _ in pairs)
            self._twice += [key for key, n in counts.items() if n > 1]
        return obj

    def loads(self, text: str, line: int) -> object:
        return self._checked(lambda: self.decoder.decode(text), line)

    def raw_decode(self, text: str, pos: int, line: Callable[[], int]) -> tuple[object, int]:
        return self._checked(lambda: self.decoder.raw_decode(text, pos), line)

    def _checked(self, decode: Callable[[], object], line: int | Callable[[], int]):
        self._twice = []
        value = decode()
        for key in dict.fromkeys(self._twice):
            self.report.report(
                "duplicate-key",
                line if isinstance(line, int) else line(),
                f"key {key!r} appears twice in one object: JSON readers keep the last value "
                "and silently drop the first",
                fix="keep one of the two, or merge them into one value",
                severity="warning",
                field=key,
            )
        return value


def array_records(text: str, report: Collector) -> list[tuple[int, int, object]]:
    """(line where the item starts, line where it ends, item) for a JSON array, decoded item by
    item so that each record keeps its line number. A syntax error ends the reading: after it,
    where the next item starts cannot be told."""
    parse = _Parser(report)
    records: list[tuple[int, int, object]] = []
    n = len(text)
    line, counted = 1, 0  # line number of position `counted`

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def skip_space(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    def fail(pos: int, msg: str) -> None:
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        where = text.count("\n", 0, pos) + 1
        report.report(
            "invalid-json",
            where,
            f"invalid JSON at column {col}: {msg}",
            fix=_JSON_FIX,
            column=col,
            fatal=True,
        )

    i = skip_space(text.index("[") + 1)
    if i < n and text[i] == "]":
        i += 1
    else:
        while True:
            i = skip_space(i)
            if i >= n:
                fail(n, "the array is not closed (missing ']')")
            start = i
            try:
                obj, i = parse.raw_decode(text, i, lambda start=start: line_at(start))
            except RecursionError:
                _too_deep(report, line_at(start), fatal=True)
            except json.JSONDecodeError as e:
                report.report(
                    "invalid-json",
                    e.lineno,
                    f"invalid JSON at column {e.colno}: {e.msg}",
                    fix=_JSON_FIX,
                    column=e.colno,
                    fatal=True,
                )
            records.append((line_at(start), line_at(i), obj))
            i = skip_space(i)
            if i < n and text[i] == ",":
                i += 1
            elif i < n and text[i] == "]":
                i += 1
                break
            elif i >= n:
                fail(len(text.rstrip()), "the array is not closed (missing ']')")
            else:
                fail(i, "Expecting ',' delimiter")
    i = skip_space(i)
    if i < n:
        fail(i, "extra data after the end of the array")
    return records


# The strict record readers, for readers of other kinds of records (preference pairs).


def read_text(path: str | Path) -> str:
    """The file as UTF-8 text (a BOM dropped), raising the first problem as a `DataError`."""
    return decode(read_bytes(Path(path)), Collector(path, strict=True))[0]


def parse_jsonl(path: str | Path, text: str) -> list[tuple[int, object]]:
    """(line, value) for each non-blank line, raising the first problem as a `DataError`."""
    return [(a, obj) for a, _, obj in jsonl_records(text, Collector(path, strict=True))]


def parse_json_array(path: str | Path, text: str) -> list[tuple[int, object]]:
    """(line where it starts, item) for each item of a JSON array, raising like `parse_jsonl`."""
    return [(a, obj) for a, _, obj in array_records(text, Collector(path, strict=True))]
