"""`tuneloop data lint --fix OUT`: a cleaned copy of the training file and a log of every change.

The input is never modified. The copy keeps the input's layout (JSONL, JSON array or CSV, with
its own keys and columns); what it leaves out or changes is logged, one JSON object a line,
in `<OUT stem>.fix-log.jsonl` beside it:

    {"line": 7, "action": "dropped", "code": "invalid-json", "reason": "invalid JSON at ..."}
    {"line": 9, "action": "dropped", "code": "duplicate", "reason": "exact duplicate of ..."}
    {"line": 12, "action": "changed", "code": "control-char", "reason": "removed 1 control ..."}

Dropped: records that cannot be read, exact and near duplicates (the first of each stays),
train examples that leak into held-out (exact), and examples that would lose their whole
answer to truncation. Changed: control and invisible characters removed from every string
(and a byte-order mark at the start of the file). Everything else lint reports (PII, imbalance,
system-prompt variants, near-leakage) needs a person's judgement and is left as it is.
"""

from __future__ import annotations

import csv as csvlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from tuneloop.data.encoding import clean_text
from tuneloop.data.lintfile import LintReport
from tuneloop.errors import UserError
from tuneloop.files import write_text

DROPPED_CODES = ("duplicate", "near-duplicate", "target-lost")


@dataclass
class FixResult:
    path: Path
    log_path: Path
    kept: int
    dropped: int
    changed: int


def log_path_for(out: Path) -> Path:
    return out.with_name(f"{out.stem}.fix-log.jsonl")


def write_fixed(report: LintReport, out: str | Path) -> FixResult:
    """Write the cleaned copy of `report.train` to `out` and its log beside it."""
    out = Path(out)
    scan = report.train
    if scan is None:
        raise UserError(
            "--fix writes cleaned supervised examples; preference files are not fixed yet",
            "--fix",
            "drop --fix, and correct the pairs lint names by hand",
        )
    inputs = [scan.path] + ([report.heldout.path] if report.heldout else [])
    if any(out.resolve() == p.resolve() for p in inputs):
        raise UserError(
            f"--fix would overwrite its input {out}",
            "--fix",
            "name a new file, e.g. --fix clean.jsonl; the input is never modified",
        )
    log: list[dict] = []
    for p in scan.problems:
        if p.severity == "error":
            log.append(_entry(p.line, "dropped", p.code, p.what))
    drop: dict[str, tuple[str, str]] = {}
    for f in report.findings:
        if f.code in DROPPED_CODES:
            drop.setdefault(f.where, (f.code, f.message))
        elif f.code == "leakage" and f.related:
            drop.setdefault(f.related, ("leakage", f"also in held-out at {f.where}"))
    if scan.bom:
        log.append(_entry(1, "changed", "bom", "removed the byte-order mark"))
    kept_records, changed = [], 0
    for ex, record in zip(scan.examples, scan.records, strict=True):
        line = int(ex.source.rsplit(":", 1)[1])
        if ex.source in drop:
            code, why = drop[ex.source]
            log.append(_entry(line, "dropped", code, why))
            continue
        record, changes = _clean(record)
        for change in changes:
            code = "control-char" if "control" in change else "invisible-char"
            log.append(_entry(line, "changed", code, change))
        changed += bool(changes)
        kept_records.append(record)
    if not kept_records:
        raise UserError(
            f"nothing is left to write: none of the {len(scan.examples)} readable examples of "
            f"{scan.path} survives the fixes",
            "--fix",
            "fix the errors lint lists by hand first",
        )
    write_text(out, _serialize(kept_records, scan.container, scan.header, scan.path))
    log.sort(key=lambda e: (e["line"] is None, e["line"] or 0))
    log_path = log_path_for(out)
    write_text(log_path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in log))
    dropped = sum(e["action"] == "dropped" for e in log)
    return FixResult(out, log_path, len(kept_records), dropped, changed)


def _entry(line: int | None, action: str, code: str, reason: str) -> dict:
    return {"line": line, "action": action, "code": code, "reason": reason}


def _clean(value):
    """`value` with `clean_text` applied to every string inside it, and what was removed."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        pairs = [_clean(v) for v in value]
        return [v for v, _ in pairs], _merge(c for _, c in pairs)
    if isinstance(value, dict):
        pairs = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, _merge(c for _, c in pairs.values())
    return value, []


def _merge(change_lists) -> list[str]:
    """["removed 1 control character"] + ["removed 2 control characters"] → one count."""
    totals: dict[str, int] = {}
    for changes in change_lists:
        for change in changes:
            n, kind = change.split(" ")[1], change.split(" ")[2]
            totals[kind] = totals.get(kind, 0) + int(n)
    return [f"removed {n} {kind} character{'s' if n > 1 else ''}" for kind, n in totals.items()]


def _serialize(records: list, container: str, header: list[str] | None, source: Path) -> str:
    if container == "csv":
        buf = io.StringIO()
        delimiter = "\t" if source.suffix.lower() == ".tsv" else ","
        writer = csvlib.writer(buf, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header or [])
        writer.writerows(records)
        return buf.getvalue()
    if container == "array":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
