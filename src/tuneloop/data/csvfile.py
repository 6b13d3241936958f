"""CSV and TSV files with a column mapping, read into canonical examples.

A row `I lost my card,lost_card` under the header `text,category`, read with
`CsvColumns(text="text", label="category")`, becomes a user turn "I lost my card", an assistant
turn "lost_card" and `meta={"label": "lost_card"}`. Problems go to a `Collector`, so the same
code stops at the first bad row (training) or reports every one of them (lint).
"""

from __future__ import annotations

import contextlib
import csv as csvlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuneloop.data.problems import Collector, StopReading
from tuneloop.data.records import Example

CSV_FIELD = "data.csv"  # where the column mapping lives in the recipe, named in error messages


@dataclass
class CsvColumns:
    """How the columns of a CSV file map onto a chat.

    `text` is the user turn. The assistant turn is the `target` column when given, else the
    `label` column (classification: the answer is the label). `instruction` is a fixed task
    instruction (a string, not a column) sent as the system message; `system_column` names a
    column holding a per-row system message instead (an empty cell falls back to
    `instruction`). The label value goes into `meta["label"]`; every unmapped column goes into
    `meta` under its own name. Set `label=None` when the file has no label column.
    """

    text: str = "text"
    label: str | None = "label"
    target: str | None = None
    instruction: str | None = None
    system_column: str | None = None


@dataclass
class CsvRead:
    examples: list[Example]
    rows: list[list[str]]  # the cells of each example's row, for a cleaned copy
    header: list[str] | None


def read_csv(path: Path, text: str, cols: CsvColumns, report: Collector) -> CsvRead:
    """Every row of a CSV text as an example; rows on lines in `report.bad_lines` (bytes that
    are not UTF-8) are skipped, their problem already reported."""
    out = CsvRead([], [], None)
    with contextlib.suppress(StopReading):
        _read_rows(path, text, cols, report, out)
    return out


def _read_rows(path: Path, text: str, cols: CsvColumns, report: Collector, out: CsvRead) -> None:
    unreadable = report.bad_lines
    rows = _csv_rows(text, "\t" if path.suffix.lower() == ".tsv" else ",", report)
    first = next(rows, None)
    if first is None:
        return
    header_line, _, raw_header = first
    header = [name.strip() for name in raw_header]
    out.header = header
    mapping = {
        "text": cols.text,
        "label": cols.label,
        "target": cols.target,
        "system_column": cols.system_column,
    }
    for field, column in mapping.items():
        if column is not None and column not in header:
            unset = "" if field == "text" else ", or to null when the file has no such column"
            report.report(
                "missing-column",
                header_line,
                f"column {column!r} not found (mapped by `{CSV_FIELD}.{field}`); "
                f"the columns are: {', '.join(header)}",
                fix=f"set `{CSV_FIELD}.{field}` to one of {', '.join(header)}{unset} "
                "(the first line of the file must be the header)",
                field=column,
                fatal=True,
            )
    if cols.label is None and cols.target is None:
        report.report(
            "missing-column",
            None,
            "the CSV mapping names no answer column",
            fix=f"set `{CSV_FIELD}.label` (the answer is the label) or `{CSV_FIELD}.target` "
            "(a free-text answer)",
            fatal=True,
        )
    mapped = {c for c in mapping.values() if c is not None}
    n_rows = 0
    for line, end, row in rows:
        n_rows += 1
        if any(n in unreadable for n in range(line, end + 1)):
            continue
        if len(row) != len(header):
            report.report(
                "csv-ragged",
                line,
                f"the row has {len(row)} fields but the header has {len(header)} columns",
                fix='put a value that holds a comma in double quotes ("like, this"), '
                "or add the missing fields",
            )
            continue
        cell = dict(zip(header, row, strict=True))
        empty = [f for f in ("text", "label", "target") if _blank(cell, mapping[f])]
        if empty:
            column = mapping[empty[0]]
            report.report(
                "empty-content",
                line,
                f"empty value in column {column!r} (`{CSV_FIELD}.{empty[0]}`)",
                fix="fill in the value, or delete the row",
                field=column,
            )
            continue
        label = cell[cols.label].strip() if cols.label else None
        answer = cell[cols.target] if cols.target else label
        system = cols.instruction
        if cols.system_column and cell[cols.system_column].strip():
            system = cell[cols.system_column]
        messages = [{"role": "system", "content": system}] if system else []
        messages += [
            {"role": "user", "content": cell[cols.text]},
            {"role": "assistant", "content": answer},
        ]
        meta = {k: v for k, v in cell.items() if k not in mapped}
        if label is not None:
            meta["label"] = label
        out.examples.append(Example(messages=messages, meta=meta, source=f"{path}:{line}"))
        out.rows.append(row)
    if n_rows == 0:
        report.report(
            "empty-file",
            None,
            "no examples: the file has a header but no rows",
            fix="add the rows",
            fatal=True,
        )


def _csv_rows(text: str, delimiter: str, report: Collector) -> Iterator[tuple[int, int, list[str]]]:
    """(physical line where the row starts, line where it ends, fields) for each non-blank row.
    `line_num` counts the physical lines read so far, so a quoted field with line breaks
    advances it by more than one; the row started one line after where the previous row ended."""
    reader = csvlib.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    ended = 0
    try:
        for row in reader:
            start, ended = ended + 1, reader.line_num
            if any(field.strip() for field in row):
                yield start, ended, row
    except csvlib.Error as e:
        unclosed = "unexpected end of data" in str(e)
        report.report(
            "csv-syntax",
            ended + 1,
            "a quoted value starting on this line is never closed"
            if unclosed
            else f"malformed CSV: {e}",
            fix="a value holding a comma, quote or line break must be in double quotes, with "
            'each quote inside it doubled ("say ""hi""")',
            fatal=True,
        )


def _blank(cell: dict[str, str], column: str | None) -> bool:
    return column is not None and not cell[column].strip()
