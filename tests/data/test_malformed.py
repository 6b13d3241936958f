"""The malformed corpus through lint: each file's exact code, line and field, and through the
command line: a clear message and exit code, never a traceback.

Error files exit 1 and their first finding is the expected one; warning files exit 0 and hold
the expected warning. (tests/data/test_formats.py checks the same files through the strict
reader that training uses.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.data.lintfile import lint_files

MALFORMED = Path(__file__).parent / "malformed"

# file: (severity, code, line, field or None)
EXPECTED = {
    # encoding
    "bad_utf8.jsonl": ("error", "encoding", 3, None),
    "utf16.jsonl": ("error", "encoding", 1, None),
    "csv_bad_utf8.csv": ("error", "encoding", 3, None),
    "bom.jsonl": ("warning", "bom", 1, None),
    "replacement_char.jsonl": ("warning", "replacement-char", 2, "messages[0] (user)"),
    "control_chars.jsonl": ("warning", "control-char", 2, "messages[0] (user)"),
    "zero_width.jsonl": ("warning", "invisible-char", 3, "messages[0] (user)"),
    "mojibake.jsonl": ("warning", "mojibake", 1, "messages[0] (user)"),
    # JSON syntax
    "broken_json.jsonl": ("error", "invalid-json", 2, None),
    "truncated_line.jsonl": ("error", "invalid-json", 3, None),
    "trailing_comma.jsonl": ("error", "invalid-json", 1, None),
    "single_quotes.jsonl": ("error", "invalid-json", 2, None),
    "array_broken.json": ("error", "invalid-json", 3, None),
    "array_not_closed.json": ("error", "invalid-json", 3, None),
    "array_extra_data.json": ("error", "invalid-json", 2, None),
    "pretty_object.jsonl": ("error", "multi-line-json", 1, None),
    "not_object.jsonl": ("error", "not-object", 3, None),
    "number_record.jsonl": ("error", "not-object", 2, None),
    "empty.jsonl": ("error", "empty-file", 1, None),
    "blank_lines.jsonl": ("error", "empty-file", 1, None),
    "unknown_format.jsonl": ("error", "unknown-format", 1, None),
    # keys and types
    "alpaca_missing_output.jsonl": ("error", "missing-key", 2, "output"),
    "array_missing_role.json": ("error", "missing-key", 3, "messages[1].role"),
    "missing_content.jsonl": ("error", "missing-key", 2, "messages[0].content"),
    "sharegpt_missing_value.jsonl": ("error", "missing-key", 1, "conversations[1].value"),
    "mixed_formats.jsonl": ("error", "missing-key", 3, "messages"),
    "content_not_string.jsonl": ("error", "wrong-type", 2, "messages[0].content"),
    "messages_not_list.jsonl": ("error", "wrong-type", 1, "messages"),
    "meta_not_object.jsonl": ("error", "wrong-type", 2, "meta"),
    "turn_not_object.jsonl": ("error", "wrong-type", 2, "messages[0]"),
    "alpaca_input_not_string.jsonl": ("error", "wrong-type", 2, "input"),
    "alpaca_system_not_string.jsonl": ("error", "wrong-type", 1, "system"),
    "completion_not_string.jsonl": ("error", "wrong-type", 2, "completion"),
    "turn_extra_key.jsonl": ("warning", "unknown-key", 2, "messages[1].score"),
    "typo_key.jsonl": ("warning", "unknown-key", 2, "sytem"),
    "duplicate_keys.jsonl": ("warning", "duplicate-key", 2, "messages"),
    # roles and content
    "unknown_role.jsonl": ("error", "unknown-role", 2, "messages[1].role"),
    "role_not_string.jsonl": ("error", "unknown-role", 3, "messages[0].role"),
    "sharegpt_bad_from.jsonl": ("error", "unknown-role", 2, "conversations[1].from"),
    "empty_content.jsonl": ("error", "empty-content", 2, "messages[0].content"),
    "prompt_completion_empty.jsonl": ("error", "empty-content", 2, "completion"),
    "sharegpt_empty.jsonl": ("error", "empty-content", 2, "conversations"),
    "system_not_first.jsonl": ("error", "role-order", 1, None),
    "last_turn_user.jsonl": ("error", "role-order", 3, None),
    "user_twice.jsonl": ("error", "role-order", 2, None),
    "assistant_twice.jsonl": ("error", "role-order", 3, None),
    "no_assistant.jsonl": ("error", "no-assistant", 2, None),
    "no_user.jsonl": ("error", "no-user", 1, None),
    # CSV
    "csv_missing_column.csv": ("error", "missing-column", 1, "text"),
    "csv_empty_cell.csv": ("error", "empty-content", 5, "text"),
    "csv_empty_label.csv": ("error", "empty-content", 3, "label"),
    "csv_ragged.csv": ("error", "csv-ragged", 3, None),
    "tsv_ragged.tsv": ("error", "csv-ragged", 3, None),
    "csv_unclosed_quote.csv": ("error", "csv-syntax", 3, None),
    "csv_header_only.csv": ("error", "empty-file", None, None),
    # content checks
    "duplicate_lines.jsonl": ("warning", "duplicate", 3, None),
    "conflicting_answers.jsonl": ("warning", "conflicting-answers", 3, None),
    "near_duplicates.jsonl": ("warning", "near-duplicate", 3, None),
    "pii_card.jsonl": ("warning", "pii", 2, "messages[0] (user)"),
    "pii_email.jsonl": ("warning", "pii", 1, "messages[0] (user)"),
    "system_prompt_variant.jsonl": ("warning", "system-prompt", 5, None),
}


def test_the_corpus_is_complete():
    files = {p.name for p in MALFORMED.iterdir()}
    files -= {"preference_pairs.jsonl", "several_bad_lines.jsonl"}  # tested on their own
    assert files == set(EXPECTED)
    assert len(EXPECTED) >= 40


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lint_reports_the_exact_code_and_line(name):
    severity, code, line, field = EXPECTED[name]
    report = lint_files(MALFORMED / name)
    if severity == "error":
        finding = report.findings[0]  # errors come first
    else:
        assert report.errors == 0, [f.to_json() for f in report.findings]
        finding = next(f for f in report.findings if f.code == code)
    assert (finding.severity, finding.code, finding.line, finding.field) == (
        severity,
        code,
        line,
        field,
    ), finding
    assert finding.message and finding.fix  # says what is wrong and how to fix it
    expected_where = f"{MALFORMED / name}:{line}" if line is not None else str(MALFORMED / name)
    assert finding.where == expected_where


def test_every_bad_line_is_reported_at_once():
    report = lint_files(MALFORMED / "several_bad_lines.jsonl")
    errors = [(f.code, f.line) for f in report.findings if f.severity == "error"]
    assert errors == [("invalid-json", 2), ("unknown-role", 4), ("empty-content", 5)]
    assert report.n_train == 3  # lines 1, 3 and 6 still read
    assert report.findings[0].column == 92


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_gives_a_clear_message_and_exit_code(name):
    severity, code, line, _ = EXPECTED[name]
    result = CliRunner().invoke(app, ["data", "lint", str(MALFORMED / name)])
    assert result.exit_code == (1 if severity == "error" else 0), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    where = f"{MALFORMED / name}:{line}" if line is not None else str(MALFORMED / name)
    row = next(r for r in result.output.splitlines() if f" {code} " in r)
    assert row.split()[:2] == [severity, code]
    assert row.split()[2] in (where, f"{where}:{report_column(name)}")


def report_column(name: str) -> int | None:
    """The character column a JSON syntax error names (shown as file:line:column)."""
    return lint_files(MALFORMED / name).findings[0].column


def test_duplicate_keys_warn_with_the_line_and_name_the_value_kept():
    report = lint_files(MALFORMED / "duplicate_keys.jsonl")
    (finding,) = [f for f in report.findings if f.code == "duplicate-key"]
    assert finding.where == f"{MALFORMED / 'duplicate_keys.jsonl'}:2"
    assert "twice" in finding.message and "last" in finding.message
    assert [ex.reference for ex in report.train.examples][1] == "top_up_failed"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


GOOD_LINE = (
    '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"{GOOD_LINE}\n{nested(100_000)}\n{GOOD_LINE}\n", 2),  # JSONL, a bare nested list
        (f'{GOOD_LINE}\n{{"messages": {nested(100_000)}}}\n', 2),  # inside a record
        (f"{nested(100_000)}\n{GOOD_LINE}\n", 1),  # the first line (format detection)
        (f"[\n{GOOD_LINE},\n{nested(100_000)}\n]\n", 3),  # a JSON array file
    ],
)
def test_deeply_nested_json_is_a_data_error_with_its_line(tmp_path, text, line):
    from tuneloop.data.formats import read_examples
    from tuneloop.errors import DataError

    path = tmp_path / ("deep.json" if text.startswith("[\n") else "deep.jsonl")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:  # what train and split read with
        read_examples(path)
    assert str(err.value).startswith(f"{path}:{line}: JSON nested too deeply")
    report = lint_files(path)
    assert (report.findings[0].code, report.findings[0].line) == ("invalid-json", line)
    for verb in (["data", "lint"], ["data", "stats"]):
        result = CliRunner().invoke(app, [*verb, str(path)])
        assert result.exit_code in (1, 2), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), verb
        assert f"{path}:{line}" in result.output and "nested too deeply" in result.output
