"""Readers from every common data format into canonical `Example`s, and a JSONL writer.

`read_examples` takes a `.jsonl` file (one JSON object per line), a `.json` file holding a JSON
array of objects, or a `.csv`/`.tsv` file with a column mapping, and returns `Example`s whose
`source` is "path:line". The JSON formats, as one record each:

    messages           {"messages": [{"role": "user", "content": "Hi"},
                                     {"role": "assistant", "content": "Hello!"}], "meta": {...}}
    alpaca             {"instruction": "Classify the message.", "input": "I lost my card",
                        "output": "lost_card"}                  (optional "system")
    sharegpt           {"conversations": [{"from": "human", "value": "Hi"},
                                          {"from": "gpt", "value": "Hello!"}]}
    prompt_completion  {"prompt": "Hi", "completion": "Hello!"}

Line 3 of `train.jsonl` holding `{"instruction": "Classify the message.", "input": "I lost my
card", "output": "lost_card", "id": 7}` is read as

    Example(messages=[{"role": "user", "content": "Classify the message.\\n\\nI lost my card"},
                      {"role": "assistant", "content": "lost_card"}],
            meta={"id": 7}, source="train.jsonl:3")

Keys a format does not use (like "id" above, or "label") go into `meta`, merged with an explicit
"meta" object if the record has one. A CSV row `I lost my card,lost_card` under the header
`text,category`, read with `CsvColumns(text="text", label="category")`, becomes a user turn
"I lost my card", an assistant turn "lost_card" and `meta={"label": "lost_card"}`.

Every mistake in a file is a `DataError` naming the file, the line and the fix; the reader stops
at the first one.
"""

from __future__ import annotations

import codecs
import csv as csvlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tuneloop.data.records import Example
from tuneloop.errors import DataError, UserError
from tuneloop.files import write_text

FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion", "csv")
WRITE_FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion")
CSV_FIELD = "data.csv"  # where the column mapping lives in the recipe, named in error messages

_MESSAGE_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}
# How the final answer turn is spelled in each format, for fix texts.
_ANSWER_TURN = {
    "messages": '{"role": "assistant", "content": "..."}',
    "prompt_completion": '{"role": "assistant", "content": "..."}',
    "sharegpt": '{"from": "gpt", "value": "..."}',
}


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


class _Bad(Exception):
    """A problem in one record; the reader adds the file and line. `about_format` asks the
    reader to say which format it was reading, for problems that a wrong format explains."""

    def __init__(self, what: str, fix: str | None = None, about_format: bool = False):
        super().__init__(what)
        self.what, self.fix, self.about_format = what, fix, about_format


# --------------------------------------------------------------------------------------------
# Reading


def read_examples(
    path: str | Path, format: str = "auto", csv: CsvColumns | None = None
) -> list[Example]:
    """Read a data file into canonical examples, checking every record.

    `format` is "auto" (".csv"/".tsv" by extension, else from the keys of the first JSON
    record) or one of `FORMATS`. `csv` maps columns for CSV files (default `CsvColumns()`).

        >>> read_examples("train.jsonl")[0]          # doctest: +SKIP
        Example(messages=[{'role': 'user', 'content': 'Hi'},
                          {'role': 'assistant', 'content': 'Hello!'}],
                meta={}, source='train.jsonl:1')
    """
    path = Path(path)
    if format not in ("auto", *FORMATS):
        raise UserError(
            f"unknown data format {format!r}", fix=f"use one of: auto, {', '.join(FORMATS)}"
        )
    text = _read_text(path)
    is_csv = path.suffix.lower() in (".csv", ".tsv")
    if format == "csv" or (format == "auto" and is_csv):
        examples = _read_csv(path, text, csv or CsvColumns())
    else:
        examples = _read_json(path, text, format)
    if not examples:
        # An empty file has no line to point at; line 1 is where the examples should start.
        raise DataError(
            path,
            1,
            "no examples: the file is empty"
            if not text
            else "no examples: the file holds only blank lines"
            if not text.strip()
            else "no examples: the JSON array is empty",
            fix="point to the file that holds the examples, or add at least one",
        )
    return examples


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, a leading byte-order mark dropped."""
    if not path.exists():
        fix = f"check the path (relative paths start at {Path.cwd()})"
        raise DataError(path, None, "file not found", fix=fix)
    if path.is_dir():
        raise DataError(
            path, None, "is a folder, not a data file", fix="name a .jsonl, .json or .csv file"
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, None, f"cannot read the file: {e.strerror}") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            path,
            1,
            "the file is UTF-16 encoded; tuneloop reads UTF-8",
            fix="re-save it as UTF-8, e.g. `iconv -f utf-16 -t utf-8 in.jsonl > out.jsonl`",
        )
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            path,
            line,
            f"not valid UTF-8: byte 0x{raw[e.start]:02x} at byte {col} of the line",
            fix="re-save the file as UTF-8; from Windows-1252 or Latin-1: "
            "`iconv -f cp1252 -t utf-8 in.jsonl > out.jsonl`",
        ) from None


def _read_json(path: Path, text: str, format: str) -> list[Example]:
    records = _json_array(path, text) if text.lstrip().startswith("[") else _jsonl(path, text)
    if not records:
        return []
    first_line, first = records[0]
    if format == "auto":
        if not isinstance(first, dict):
            raise DataError(
                path,
                first_line,
                f"expected a JSON object, got {_kind(first)}",
                fix="each record must be one JSON object such as "
                '{"messages": [{"role": "user", "content": "..."}, ...]}',
            )
        format = _detect(path, first_line, first)
        how = f"detected from the keys on line {first_line}"
    else:
        how = "as requested"
    convert = _CONVERTERS[format]
    examples = []
    for line, obj in records:
        if not isinstance(obj, dict):
            raise DataError(
                path,
                line,
                f"expected a JSON object, got {_kind(obj)}",
                fix="each record must be one JSON object such as "
                '{"messages": [{"role": "user", "content": "..."}, ...]}',
            )
        try:
            messages, meta = convert(obj)
            _check_conversation(messages, format)
        except _Bad as bad:
            what = f"{bad.what} (format {format}, {how})" if bad.about_format else bad.what
            raise DataError(path, line, what, bad.fix) from None
        examples.append(Example(messages=messages, meta=meta, source=f"{path}:{line}"))
    return examples


_JSON_FIX = (
    "fix the JSON on this line: look for a missing comma, bracket or quote, or a quote or "
    'line break inside a string that is not escaped (\\" and \\n)'
)


def _jsonl(path: Path, text: str) -> list[tuple[int, object]]:
    """(line, value) for every non-blank line. Split on "\\n" only: a JSON string may hold
    U+2028, which `str.splitlines` would treat as a line break."""
    records: list[tuple[int, object]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            if not records and _is_one_object(text):
                raise DataError(
                    path,
                    lineno,
                    "the file holds one JSON object spread over several lines; expected one "
                    "object per line (JSONL) or a JSON array",
                    fix="write one example per line, or put the examples in a JSON array "
                    "[{...}, {...}]",
                ) from None
            raise DataError(
                path, lineno, f"invalid JSON at column {e.colno}: {e.msg}", fix=_JSON_FIX
            ) from None
    return records


def _is_one_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _json_array(path: Path, text: str) -> list[tuple[int, object]]:
    """(line where the item starts, item) for a JSON array, decoded item by item so that each
    record keeps its line number."""
    decoder = json.JSONDecoder()
    records: list[tuple[int, object]] = []
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

    def fail(pos: int, msg: str) -> DataError:
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        where = text.count("\n", 0, pos) + 1
        return DataError(path, where, f"invalid JSON at column {col}: {msg}", fix=_JSON_FIX)

    i = skip_space(text.index("[") + 1)
    if i < n and text[i] == "]":
        i += 1
    else:
        while True:
            i = skip_space(i)
            if i >= n:
                raise fail(n, "the array is not closed (missing ']')")
            start = i
            try:
                obj, i = decoder.raw_decode(text, i)
            except json.JSONDecodeError as e:
                raise DataError(
                    path, e.lineno, f"invalid JSON at column {e.colno}: {e.msg}", fix=_JSON_FIX
                ) from None
            records.append((line_at(start), obj))
            i = skip_space(i)
            if i < n and text[i] == ",":
                i += 1
            elif i < n and text[i] == "]":
                i += 1
                break
            else:
                raise fail(i, "Expecting ',' delimiter")
    i = skip_space(i)
    if i < n:
        raise fail(i, "extra data after the end of the array")
    return records


def _detect(path: Path, line: int, obj: dict) -> str:
    keys = set(obj)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys:
        return "alpaca"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if {"chosen", "rejected"} <= keys:
        raise DataError(
            path,
            line,
            "these are preference pairs (chosen/rejected), not supervised examples",
            fix="use them for DPO training; for SFT give examples in one of: messages, "
            "alpaca, sharegpt, prompt_completion",
        )
    raise DataError(
        path,
        line,
        f"cannot tell the format from the keys {sorted(keys)}",
        fix='use one of: messages ({"messages": [...]}), alpaca ({"instruction", "output"}), '
        'sharegpt ({"conversations": [...]}), prompt_completion ({"prompt", "completion"}); '
        "or name the format explicitly",
    )


# One converter per JSON format: a record → (messages, meta), raising `_Bad` on a problem.


def _from_messages(obj: dict) -> tuple[list[dict[str, str]], dict]:
    _require(obj, "messages")
    messages = _turns(obj["messages"], "messages", "role", "content", _MESSAGE_ROLES)
    return messages, _meta(obj, ("messages",))


def _from_alpaca(obj: dict) -> tuple[list[dict[str, str]], dict]:
    _require(obj, "instruction", "output")
    instruction, output = _text(obj, "instruction"), _text(obj, "output")
    extra = obj.get("input")
    if extra is None:
        extra = ""
    if not isinstance(extra, str):
        raise _Bad(f"'input' must be a string, got {_kind(extra)}")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = _system(obj) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": output},
    ]
    return messages, _meta(obj, ("instruction", "input", "output", "system"))


def _from_sharegpt(obj: dict) -> tuple[list[dict[str, str]], dict]:
    _require(obj, "conversations")
    messages = _turns(obj["conversations"], "conversations", "from", "value", _SHAREGPT_ROLES)
    if messages[0]["role"] != "system":
        messages = _system(obj) + messages  # some ShareGPT files keep the system prompt apart
    return messages, _meta(obj, ("conversations", "system"))


def _from_prompt_completion(obj: dict) -> tuple[list[dict[str, str]], dict]:
    """Plain strings, or lists of messages (the conversational form TRL also reads)."""
    _require(obj, "prompt", "completion")
    parts = []
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = obj[key]
        if isinstance(value, list):
            parts += _turns(value, key, "role", "content", _MESSAGE_ROLES)
        else:
            parts.append({"role": role, "content": _text(obj, key)})
    return parts, _meta(obj, ("prompt", "completion"))


_CONVERTERS: dict[str, Callable[[dict], tuple[list[dict[str, str]], dict]]] = {
    "messages": _from_messages,
    "alpaca": _from_alpaca,
    "sharegpt": _from_sharegpt,
    "prompt_completion": _from_prompt_completion,
}


def _require(obj: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        raise _Bad(
            f"missing required key{'s' if len(missing) > 1 else ''} {names}; "
            f"the record has {sorted(obj)}",
            fix="add the missing key, or name the right format if this file is in another one; "
            "every record of a file must use the same format",
            about_format=True,
        )


def _text(obj: dict, key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise _Bad(f"'{key}' must be a string, got {_kind(value)}")
    if not value.strip():
        raise _Bad(f"'{key}' is empty", fix="fill it in, or drop this record")
    return value


def _system(obj: dict) -> list[dict[str, str]]:
    """An optional top-level "system" string as a leading system message."""
    system = obj.get("system")
    if system is None:
        return []
    if not isinstance(system, str):
        raise _Bad(f"'system' must be a string, got {_kind(system)}")
    return [{"role": "system", "content": system}] if system.strip() else []


def _meta(obj: dict, used: tuple[str, ...]) -> dict:
    """Unused top-level keys, plus the record's own "meta" object (which wins on a clash)."""
    own = obj.get("meta", {})
    if not isinstance(own, dict):
        raise _Bad(
            f"'meta' must be an object, got {_kind(own)}",
            fix='write it as {"label": "...", ...} or drop it',
        )
    extra = {k: v for k, v in obj.items() if k not in used and k != "meta"}
    return {**extra, **own}


def _turns(
    items: object, field: str, role_key: str, content_key: str, roles: dict[str, str]
) -> list[dict[str, str]]:
    """Validate a list of turns and spell them as canonical {"role", "content"} messages."""
    if not isinstance(items, list):
        raise _Bad(
            f"'{field}' must be a list of turns, got {_kind(items)}",
            fix=f'write it as [{{"{role_key}": "...", "{content_key}": "..."}}, ...]',
        )
    if not items:
        raise _Bad(f"'{field}' is empty", fix="add the conversation, or drop this record")
    allowed = ", ".join(roles)
    messages = []
    for n, turn in enumerate(items, start=1):
        if not isinstance(turn, dict):
            raise _Bad(
                f"turn {n} of '{field}' must be an object with '{role_key}' and "
                f"'{content_key}', got {_kind(turn)}"
            )
        for key in (role_key, content_key):
            if key not in turn:
                raise _Bad(
                    f"turn {n} of '{field}' has no '{key}' key (it has {sorted(turn)})",
                    fix=f'write each turn as {{"{role_key}": "...", "{content_key}": "..."}}',
                    about_format=True,
                )
        raw_role, content = turn[role_key], turn[content_key]
        if not isinstance(raw_role, str) or raw_role not in roles:
            name = "role" if role_key == "role" else f"'{role_key}' value"
            raise _Bad(
                f"turn {n} has unknown {name} {raw_role!r}; allowed: {allowed}",
                fix=f"use one of {allowed}",
            )
        role = roles[raw_role]
        if not isinstance(content, str):
            raise _Bad(
                f"turn {n} ({raw_role}): '{content_key}' must be a string, got {_kind(content)}",
                fix="give the text as one string (multimodal content parts are not supported)",
            )
        if not content.strip():
            raise _Bad(
                f"turn {n} ({raw_role}) has empty content",
                fix="fill it in, or drop the turn or the record",
            )
        messages.append({"role": role, "content": content})
    return messages


def _check_conversation(messages: list[dict[str, str]], format: str) -> None:
    """The shape every example must have: one optional system message first, a user turn,
    and an assistant answer last (the answer is what the model learns)."""
    roles = [m["role"] for m in messages]
    answer = _ANSWER_TURN.get(format, _ANSWER_TURN["messages"])
    for n, role in enumerate(roles[1:], start=2):
        if role == "system":
            raise _Bad(
                f"system message at turn {n}; a system message may only be the first turn",
                fix="move it to the start of the conversation, or merge it into the first one",
            )
    if "assistant" not in roles:
        raise _Bad(
            "no assistant turn: there is no answer for the model to learn",
            fix=f"add the expected answer as a final {answer} turn, or drop this record",
        )
    if roles[-1] != "assistant":
        raise _Bad(
            f"the last turn is '{roles[-1]}', not 'assistant'; the last turn is the answer "
            "the model learns",
            fix=f"end the conversation with the answer as a {answer} turn, or drop the "
            f"trailing '{roles[-1]}' turn",
        )
    if "user" not in roles:
        raise _Bad("no user turn", fix="add the user's message before the answer")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number"}.get(
        type(value), "a number" if isinstance(value, float) else type(value).__name__
    )


# --------------------------------------------------------------------------------------------
# CSV


def _read_csv(path: Path, text: str, cols: CsvColumns) -> list[Example]:
    rows = _csv_rows(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
    first = next(rows, None)
    if first is None:
        return []
    header_line, header = first[0], [name.strip() for name in first[1]]
    mapping = {
        "text": cols.text,
        "label": cols.label,
        "target": cols.target,
        "system_column": cols.system_column,
    }
    for field, column in mapping.items():
        if column is not None and column not in header:
            unset = "" if field == "text" else ", or to null when the file has no such column"
            raise DataError(
                path,
                header_line,
                f"column {column!r} not found (mapped by `{CSV_FIELD}.{field}`); "
                f"the columns are: {', '.join(header)}",
                fix=f"set `{CSV_FIELD}.{field}` to one of {', '.join(header)}{unset} "
                "(the first line of the file must be the header)",
            )
    if cols.label is None and cols.target is None:
        raise DataError(
            path,
            None,
            "the CSV mapping names no answer column",
            fix=f"set `{CSV_FIELD}.label` (the answer is the label) or `{CSV_FIELD}.target` "
            "(a free-text answer)",
        )
    mapped = {c for c in mapping.values() if c is not None}
    examples = []
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(
                path,
                line,
                f"the row has {len(row)} fields but the header has {len(header)} columns",
                fix='put a value that holds a comma in double quotes ("like, this"), '
                "or add the missing fields",
            )
        cell = dict(zip(header, row, strict=True))

        def need(field: str, cell: dict[str, str] = cell, line: int = line) -> str:
            column = mapping[field]
            if not cell[column].strip():
                raise DataError(
                    path,
                    line,
                    f"empty value in column {column!r} (`{CSV_FIELD}.{field}`)",
                    fix="fill in the value, or delete the row",
                )
            return cell[column]

        user = need("text")
        label = need("label").strip() if cols.label else None
        answer = need("target") if cols.target else label
        system = cols.instruction
        if cols.system_column and cell[cols.system_column].strip():
            system = cell[cols.system_column]
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        meta = {k: v for k, v in cell.items() if k not in mapped}
        if label is not None:
            meta["label"] = label
        examples.append(Example(messages=messages, meta=meta, source=f"{path}:{line}"))
    if not examples:
        raise DataError(
            path, None, "no examples: the file has a header but no rows", fix="add the rows"
        )
    return examples


def _csv_rows(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(physical line where the row starts, fields) for each non-blank row. `line_num` counts
    the physical lines read so far, so a quoted field with line breaks advances it by more
    than one; the row started one line after where the previous row ended."""
    reader = csvlib.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    ended = 0
    try:
        for row in reader:
            start, ended = ended + 1, reader.line_num
            if any(field.strip() for field in row):
                yield start, row
    except csvlib.Error as e:
        unclosed = "unexpected end of data" in str(e)
        raise DataError(
            path,
            ended + 1,
            "a quoted value starting on this line is never closed"
            if unclosed
            else f"malformed CSV: {e}",
            fix="a value holding a comma, quote or line break must be in double quotes, with "
            'each quote inside it doubled ("say ""hi""")',
        ) from None


# --------------------------------------------------------------------------------------------
# Writing


def write_examples(path: str | Path, examples: list[Example], format: str = "messages") -> None:
    """Write examples as JSONL in one of `WRITE_FORMATS`, atomically.

    `messages` and `sharegpt` hold any conversation; `alpaca` holds one user turn and its answer
    (plus an optional system message), `prompt_completion` exactly one user turn and its answer.
    An example that a format cannot hold raises `UserError` before anything is written. `meta`
    is written as a "meta" object, so reading the file back gives the same examples:

        >>> write_examples("out.jsonl", [ex], format="alpaca")     # doctest: +SKIP
        out.jsonl: {"instruction": "I lost my card", "input": "", "output": "lost_card",
                    "meta": {"label": "lost_card"}}
    """
    if format not in WRITE_FORMATS:
        raise UserError(
            f"cannot write format {format!r}", fix=f"use one of: {', '.join(WRITE_FORMATS)}"
        )
    to_record = _WRITERS[format]
    lines = [json.dumps(to_record(ex), ensure_ascii=False) + "\n" for ex in examples]
    write_text(path, "".join(lines))


def _with_meta(record: dict, ex: Example) -> dict:
    if ex.meta:
        record["meta"] = ex.meta
    return record


def _single_turn(ex: Example, format: str, allow_system: bool) -> tuple[str | None, str, str]:
    roles = [m["role"] for m in ex.messages]
    if roles == ["user", "assistant"] or (
        allow_system and roles == ["system", "user", "assistant"]
    ):
        system = ex.messages[0]["content"] if roles[0] == "system" else None
        return system, ex.messages[-2]["content"], ex.messages[-1]["content"]
    holds = "one user turn and its answer" + (", after a system message" if allow_system else "")
    raise UserError(
        f"this example cannot be written as {format}: its turns are {', '.join(roles)}, "
        f"and {format} holds {holds}",
        where=ex.source or None,
        fix="write the file as messages or sharegpt, which hold any conversation",
    )


def _to_alpaca(ex: Example) -> dict:
    system, user, answer = _single_turn(ex, "alpaca", allow_system=True)
    record = {"instruction": user, "input": "", "output": answer}
    if system is not None:
        record["system"] = system
    return _with_meta(record, ex)


def _to_prompt_completion(ex: Example) -> dict:
    _, user, answer = _single_turn(ex, "prompt_completion", allow_system=False)
    return _with_meta({"prompt": user, "completion": answer}, ex)


def _to_sharegpt(ex: Example) -> dict:
    turns = [{"from": _SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in ex.messages]
    return _with_meta({"conversations": turns}, ex)


_WRITERS: dict[str, Callable[[Example], dict]] = {
    "messages": Example.to_json,
    "alpaca": _to_alpaca,
    "sharegpt": _to_sharegpt,
    "prompt_completion": _to_prompt_completion,
}
