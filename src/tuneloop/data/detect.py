"""Which format a data file is in, told from the keys of its first record.

    >>> format_of_keys({"instruction", "input", "output", "id"})
    'alpaca'
    >>> format_of_keys({"conversations"})
    'sharegpt'
    >>> format_of_keys({"text"}) is None
    True

`detect_format` is what the reader uses (an unknown record is a `DataError` naming the line and
the formats it could be); `sniff_format` is the quick look that lint takes at a whole file
before choosing a reader, and also tells preference pairs ("chosen"/"rejected") apart.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from tuneloop.data.problems import Collector


def sniff_format(path: str | Path) -> str | None:
    """The format of a data file as "auto" would read it, or "preference" for chosen/rejected
    records; None when it cannot be told (the reader then reports why)."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    try:
        text = path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace")
    except OSError:
        return None
    first: object = None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
            first = next((x for x in items if isinstance(x, dict)), None)
        except (json.JSONDecodeError, RecursionError):
            return None
    else:
        for line in text.split("\n"):
            if line.strip():
                try:
                    first = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    return None
                break
    if not isinstance(first, dict):
        return None
    if {"chosen", "rejected"} <= set(first) and "messages" not in first:
        return "preference"
    return format_of_keys(set(first))


def format_of_keys(keys: set[str]) -> str | None:
    """The JSON format whose key a record has, checked in this order; None when none fits."""
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys:
        return "alpaca"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    return None


def detect_format(line: int, obj: dict, report: Collector) -> str:
    """The format of a file from its first record `obj` on `line`; a record no format fits
    (preference pairs among them) is reported as fatal, naming the formats and their keys."""
    keys = set(obj)
    found = format_of_keys(keys)
    if found is not None:
        return found
    if {"chosen", "rejected"} <= keys:
        report.report(
            "preference-data",
            line,
            "these are preference pairs (chosen/rejected), not supervised examples",
            fix="use them for DPO training; for SFT give examples in one of: messages, "
            "alpaca, sharegpt, prompt_completion",
            fatal=True,
        )
    report.report(
        "unknown-format",
        line,
        f"cannot tell the format from the keys {sorted(keys)}",
        fix='use one of: messages ({"messages": [...]}), alpaca ({"instruction", "output"}), '
        'sharegpt ({"conversations": [...]}), prompt_completion ({"prompt", "completion"}); '
        "or name the format explicitly",
        fatal=True,
    )
    raise AssertionError("unreachable: a fatal report raises")  # pragma: no cover
