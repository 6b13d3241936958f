"""Each data format converted to and from the canonical `Example`; `read_examples` reads a file.

`read_examples` takes a `.jsonl` file (one JSON object per line), a `.json` file holding a JSON
array of objects, or a `.csv`/`.tsv` file with a column mapping, and returns `Example`s whose
`source` is "path:line". The JSON formats, as one record each:

    messages           {"messages": [{"role": "user", "content": "Hi"},
                                     {"role": "assistant", "content": "Hello!"}], "meta": {...}}
                       (also OpenAI's fine-tuning chat format, with "tools", tool calls, tool
                       results and turn weights: see `tuneloop.data.tooluse`)
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

Every mistake in a file is a `DataError` naming the file, the line and the fix: `read_examples`
stops at the first one, `scan_examples` (for lint) reports every bad record at once.
`write_examples` writes examples back as JSONL in any of the four JSON formats.

This module owns what a record means. Decoding the file into JSON values with their line
numbers is `tuneloop.data.jsonlines`, CSV rows are `tuneloop.data.csvfile`, and telling the
format from a record's keys is `tuneloop.data.detect`.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.data.csvfile import CsvColumns, read_csv
from tuneloop.data.detect import detect_format
from tuneloop.data.jsonlines import array_records, decode, jsonl_records, read_bytes
from tuneloop.data.problems import BadRecord, Collector, InvalidRecord, StopReading, kind_of
from tuneloop.data.records import Example
from tuneloop.data.tooluse import (
    TURN_KEYS,
    check_tool_flow,
    check_weights,
    read_parallel,
    read_tools,
    read_turn_keys,
    refuse_legacy_functions,
)
from tuneloop.errors import UserError
from tuneloop.files import write_text

FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion", "csv")
WRITE_FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion")

_MESSAGE_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
_CHAT_ROLES = {**_MESSAGE_ROLES, "tool": "tool"}  # the messages format: OpenAI's roles
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


Warn = Callable[..., None]  # warn(code, what, fix, field=..., key=...) for a record's warnings


@dataclass
class Scan:
    """One file read leniently: the examples that read cleanly, each with its raw record (the
    JSON object, or the CSV row's cells) for a cleaned copy, and every problem found."""

    path: Path
    format: str  # the format read (detected or requested); "unknown" when none could be told
    container: str  # "jsonl", "array" or "csv"
    examples: list[Example] = field(default_factory=list)
    records: list = field(default_factory=list)
    problems: list[BadRecord] = field(default_factory=list)
    header: list[str] | None = None  # CSV
    bom: bool = False


# --------------------------------------------------------------------------------------------
# Reading


def read_examples(
    path: str | Path, format: str = "auto", csv: CsvColumns | None = None
) -> list[Example]:
    """Read a data file into canonical examples, checking every record.

    `format` is "auto" (".csv"/".tsv" by extension, else from the keys of the first JSON
    record) or one of `FORMATS`. `csv` maps columns for CSV files (default `CsvColumns()`).
    The first problem is raised as a `DataError`; `scan_examples` collects them all instead.

        >>> read_examples("train.jsonl")[0]          # doctest: +SKIP
        Example(messages=[{'role': 'user', 'content': 'Hi'},
                          {'role': 'assistant', 'content': 'Hello!'}],
                meta={}, source='train.jsonl:1')
    """
    return _scan(Path(path), format, csv, strict=True).examples


def scan_examples(path: str | Path, format: str = "auto", csv: CsvColumns | None = None) -> Scan:
    """Read a data file like `read_examples`, but report every bad record instead of stopping
    at the first: each bad line becomes a `BadRecord` and the good ones are still read.

        >>> scan = scan_examples("train.jsonl")                         # doctest: +SKIP
        >>> [(p.code, p.line) for p in scan.problems], len(scan.examples)  # doctest: +SKIP
        ([('invalid-json', 4), ('unknown-role', 9)], 998)

    A missing file, a folder or an unknown `format` still raise (they are not data problems).
    """
    return _scan(Path(path), format, csv, strict=False)


def _scan(path: Path, format: str, csv: CsvColumns | None, strict: bool) -> Scan:
    if format not in ("auto", *FORMATS):
        raise UserError(
            f"unknown data format {format!r}", fix=f"use one of: auto, {', '.join(FORMATS)}"
        )
    raw = read_bytes(path)
    report = Collector(path, strict)
    is_csv = format == "csv" or (format == "auto" and path.suffix.lower() in (".csv", ".tsv"))
    scan = Scan(path, "csv" if is_csv else format, "csv" if is_csv else "jsonl")
    scan.problems = report.problems
    text = ""
    try:
        text, scan.bom = decode(raw, report)
        if is_csv:
            got = read_csv(path, text, csv or CsvColumns(), report)
            scan.examples, scan.records, scan.header = got.examples, got.rows, got.header
        else:
            _read_json(path, text, format, report, scan)
        if not scan.examples and not any(p.severity == "error" for p in report.problems):
            # An empty file has no line to point at; line 1 is where the examples should start.
            report.report(
                "empty-file",
                1,
                "no examples: the file is empty"
                if not text
                else "no examples: the file holds only blank lines"
                if not text.strip()
                else "no examples: the JSON array is empty",
                fix="point to the file that holds the examples, or add at least one",
                fatal=True,
            )
    except StopReading:
        pass
    if scan.format == "auto":
        scan.format = "unknown"
    return scan


def _read_json(path: Path, text: str, format: str, report: Collector, scan: Scan) -> None:
    if text.lstrip().startswith("["):
        scan.container = "array"
        records = array_records(text, report)
    else:
        records = jsonl_records(text, report)
    unreadable = report.bad_lines
    convert, how = None, "as requested"
    for start, end, obj in records:
        if unreadable and any(n in unreadable for n in range(start, end + 1)):
            continue  # its bytes are not UTF-8: reported already
        if not isinstance(obj, dict):
            report.report(
                "not-object",
                start,
                f"expected a JSON object, got {kind_of(obj)}",
                fix="each record must be one JSON object such as "
                '{"messages": [{"role": "user", "content": "..."}, ...]}',
            )
            continue
        if convert is None:
            if format == "auto":
                format = detect_format(start, obj, report)
                how = f"detected from the keys on line {start}"
            scan.format, convert = format, _CONVERTERS[format]

        def warn(code, what, fix=None, *, field=None, key=None, line=start):
            report.report(code, line, what, fix, severity="warning", field=field, once=key)

        try:
            example = convert(obj, warn)
            _check_conversation(example.messages, format)
        except InvalidRecord as bad:
            what = f"{bad.what} (format {format}, {how})" if bad.about_format else bad.what
            report.report(bad.code, start, what, bad.fix, field=bad.field)
            continue
        example.source = f"{path}:{start}"
        scan.examples.append(example)
        scan.records.append(obj)


# One converter per JSON format: (record, warn) → Example (without its source), raising
# `InvalidRecord` on a problem.


def _from_messages(obj: dict, warn: Warn) -> Example:
    """A chat, with OpenAI's tool use and turn weights (`tuneloop.data.tooluse`)."""
    _require(obj, "messages")
    refuse_legacy_functions(obj)
    messages = _turns(
        obj["messages"], "messages", "role", "content", _CHAT_ROLES, warn, read_turn_keys
    )
    tools = read_tools(obj.get("tools"))
    parallel = read_parallel(obj.get("parallel_tool_calls"))
    check_tool_flow(messages, tools, parallel, warn)
    meta = _meta(obj, ("messages", "tools", "parallel_tool_calls"), warn)
    return Example(messages, meta, tools=tools, parallel_tool_calls=parallel)


def _from_alpaca(obj: dict, warn: Warn) -> Example:
    _require(obj, "instruction", "output")
    instruction, output = _text(obj, "instruction"), _text(obj, "output")
    extra = obj.get("input")
    if extra is None:
        extra = ""
    if not isinstance(extra, str):
        what = f"'input' must be a string, got {kind_of(extra)}"
        raise InvalidRecord(what, _STRING_FIX, code="wrong-type", field="input")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = _system(obj) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": output},
    ]
    return Example(messages, _meta(obj, ("instruction", "input", "output", "system"), warn))


def _from_sharegpt(obj: dict, warn: Warn) -> Example:
    _require(obj, "conversations")
    turns = obj["conversations"]
    messages = _turns(turns, "conversations", "from", "value", _SHAREGPT_ROLES, warn)
    if messages[0]["role"] != "system":
        messages = _system(obj) + messages  # some ShareGPT files keep the system prompt apart
    return Example(messages, _meta(obj, ("conversations", "system"), warn))


def _from_prompt_completion(obj: dict, warn: Warn) -> Example:
    """Plain strings, or lists of messages (the conversational form TRL also reads)."""
    _require(obj, "prompt", "completion")
    parts = []
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = obj[key]
        if isinstance(value, list):
            parts += _turns(value, key, "role", "content", _MESSAGE_ROLES, warn)
        else:
            parts.append({"role": role, "content": _text(obj, key)})
    return Example(parts, _meta(obj, ("prompt", "completion"), warn))


_CONVERTERS: dict[str, Callable[[dict, Warn], Example]] = {
    "messages": _from_messages,
    "alpaca": _from_alpaca,
    "sharegpt": _from_sharegpt,
    "prompt_completion": _from_prompt_completion,
}
_STRING_FIX = 'give the text as one JSON string in double quotes, e.g. "..."'
# Every key some format reads: a top-level key one edit away from one of these is a typo.
_KNOWN_KEYS = (
    "messages",
    "conversations",
    "instruction",
    "input",
    "output",
    "prompt",
    "completion",
    "system",
    "meta",
    "tools",
    "parallel_tool_calls",
)


def _require(obj: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        raise InvalidRecord(
            f"missing required key{'s' if len(missing) > 1 else ''} {names}; "
            f"the record has {sorted(obj)}",
            fix="add the missing key, or name the right format if this file is in another one; "
            "every record of a file must use the same format",
            about_format=True,
            code="missing-key",
            field=missing[0],
        )


def _text(obj: dict, key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        what = f"'{key}' must be a string, got {kind_of(value)}"
        raise InvalidRecord(what, _STRING_FIX, code="wrong-type", field=key)
    if not value.strip():
        fix = "fill it in, or drop this record"
        raise InvalidRecord(f"'{key}' is empty", fix=fix, code="empty-content", field=key)
    return value


def _system(obj: dict) -> list[dict[str, str]]:
    """An optional top-level "system" string as a leading system message."""
    system = obj.get("system")
    if system is None:
        return []
    if not isinstance(system, str):
        what = f"'system' must be a string, got {kind_of(system)}"
        raise InvalidRecord(what, _STRING_FIX, code="wrong-type", field="system")
    return [{"role": "system", "content": system}] if system.strip() else []


def _meta(obj: dict, used: tuple[str, ...], warn: Warn) -> dict:
    """Unused top-level keys, plus the record's own "meta" object (which wins on a clash).
    A key one typo away from a key some format reads is warned about: it is not read."""
    own = obj.get("meta", {})
    if not isinstance(own, dict):
        raise InvalidRecord(
            f"'meta' must be an object, got {kind_of(own)}",
            fix='write it as {"label": "...", ...} or drop it',
            code="wrong-type",
            field="meta",
        )
    extra = {k: v for k, v in obj.items() if k not in used and k != "meta"}
    for key in extra:
        if (meant := _typo_of(key)) is not None and meant not in obj:
            warn(
                "unknown-key",
                f"unknown key {key!r} (did you mean {meant!r}?): it is kept as metadata and "
                "never read as text",
                f"rename it to {meant!r} if that is what it holds",
                field=key,
                key=("unknown-key", key),
            )
    return {**extra, **own}


@functools.lru_cache(maxsize=1024)
def _typo_of(key: str) -> str | None:
    if key in _KNOWN_KEYS:
        return None
    close = difflib.get_close_matches(key.lower(), _KNOWN_KEYS, n=1, cutoff=0.8)
    return close[0] if close else None


def _turns(
    items: object,
    field: str,
    role_key: str,
    content_key: str,
    roles: dict[str, str],
    warn: Warn,
    read_keys: Callable[[dict, str, int, str], dict] | None = None,
) -> list[dict]:
    """Validate a list of turns and spell them as canonical {"role", "content"} messages.

    `read_keys(turn, role, n, at)` reads the keys a turn may carry besides its role and content
    (the messages format: tool calls, tool results' ids and weights, `tooluse.read_turn_keys`);
    they follow the content in the message. Any other key is ignored, with a warning (a
    "weight": 0 meant to mask a ShareGPT turn would otherwise be silently trained on).
    An assistant turn that calls tools may have no content (null or absent)."""
    if not isinstance(items, list):
        raise InvalidRecord(
            f"'{field}' must be a list of turns, got {kind_of(items)}",
            fix=f'write it as [{{"{role_key}": "...", "{content_key}": "..."}}, ...]',
            code="wrong-type",
            field=field,
        )
    if not items:
        raise InvalidRecord(
            f"'{field}' is empty",
            fix="add the conversation, or drop this record",
            code="empty-content",
            field=field,
        )
    allowed = ", ".join(roles)
    messages = []
    for n, turn in enumerate(items, start=1):
        at = f"{field}[{n - 1}]"
        if not isinstance(turn, dict):
            raise InvalidRecord(
                f"turn {n} of '{field}' must be an object with '{role_key}' and "
                f"'{content_key}', got {kind_of(turn)}",
                fix=f'write each turn as {{"{role_key}": "...", "{content_key}": "..."}}',
                code="wrong-type",
                field=at,
            )
        _require_turn_key(turn, role_key, n, field, role_key, content_key)
        raw_role = turn[role_key]
        if not isinstance(raw_role, str) or raw_role not in roles:
            name = "role" if role_key == "role" else f"'{role_key}' value"
            raise InvalidRecord(
                f"turn {n} has unknown {name} {raw_role!r}; allowed: {allowed}",
                fix=f"use one of {allowed}",
                code="unknown-role",
                field=f"{at}.{role_key}",
            )
        role = roles[raw_role]
        extra = read_keys(turn, role, n, at) if read_keys else {}
        calls = bool(extra.get("tool_calls"))
        content = turn.get(content_key)
        if not (calls and content is None):
            _require_turn_key(turn, content_key, n, field, role_key, content_key)
            _check_content(content, n, raw_role, f"{at}.{content_key}", content_key, calls)
        read = (role_key, content_key, *(TURN_KEYS.get(role, ()) if read_keys else ()))
        for key in turn:
            if key not in read:
                _warn_ignored(warn, key, field, at, role_key, content_key, bool(read_keys))
        messages.append({"role": role, "content": content, **extra})
    return messages


def _require_turn_key(
    turn: dict, key: str, n: int, field: str, role_key: str, content_key: str
) -> None:
    if key not in turn:
        raise InvalidRecord(
            f"turn {n} of '{field}' has no '{key}' key (it has {sorted(turn)})",
            fix=f'write each turn as {{"{role_key}": "...", "{content_key}": "..."}}',
            about_format=True,
            code="missing-key",
            field=f"{field}[{n - 1}].{key}",
        )


def _check_content(
    content: object, n: int, raw_role: str, at: str, content_key: str, calls: bool
) -> None:
    if not isinstance(content, str):
        fix = "give the text as one string (multimodal content parts are not supported)"
        if content is None and raw_role == "assistant":
            fix = 'give the answer as a string, or the tool calls it makes as "tool_calls"'
        raise InvalidRecord(
            f"turn {n} ({raw_role}): '{content_key}' must be a string, got {kind_of(content)}",
            fix=fix,
            code="wrong-type",
            field=at,
        )
    # A tool may return nothing; a call may come without words.
    if not content.strip() and raw_role != "tool" and not calls:
        raise InvalidRecord(
            f"turn {n} ({raw_role}) has empty content",
            fix="fill it in, or drop the turn or the record",
            code="empty-content",
            field=at,
        )


def _warn_ignored(
    warn: Warn, key: str, field: str, at: str, role_key: str, content_key: str, chat: bool
) -> None:
    if chat:
        reads = ("'role' and 'content', plus 'tool_calls' and 'weight' on assistant turns and "
                 "'tool_call_id' on tool turns")  # fmt: skip
        fix = "drop the key"
    else:
        reads = f"'{role_key}' and '{content_key}', and trains on every assistant turn"
        fix = "drop the key, or drop the turns that should not be trained on"
    warn(
        "unknown-key",
        f"key {key!r} of the turns in '{field}' is ignored: tuneloop reads only {reads}",
        fix,
        field=f"{at}.{key}",
        key=("unknown-key", field, key),
    )


def _check_conversation(messages: list[dict], format: str) -> None:
    """The shape every example must have: one optional system message first, then user and
    assistant turns in alternation, ending with an assistant answer (what the model learns).
    Tool results (`tool` turns) come between an assistant turn that calls tools and the next
    turn; the tool calls themselves are checked by `tooluse.check_tool_flow`."""
    roles = [m["role"] for m in messages]
    answer = _ANSWER_TURN.get(format, _ANSWER_TURN["messages"])
    for n, role in enumerate(roles[1:], start=2):
        if role == "system":
            raise InvalidRecord(
                f"system message at turn {n}; a system message may only be the first turn",
                fix="move it to the start of the conversation, or merge it into the first one",
                code="role-order",
            )
    if "assistant" not in roles:
        raise InvalidRecord(
            "no assistant turn: there is no answer for the model to learn",
            fix=f"add the expected answer as a final {answer} turn, or drop this record",
            code="no-assistant",
        )
    if roles[-1] != "assistant":
        raise InvalidRecord(
            f"the last turn is '{roles[-1]}', not 'assistant'; the last turn is the answer "
            "the model learns",
            fix=f"end the conversation with the answer as a {answer} turn, or drop the "
            f"trailing '{roles[-1]}' turn",
            code="role-order",
        )
    if "user" not in roles:
        raise InvalidRecord(
            "no user turn", fix="add the user's message before the answer", code="no-user"
        )
    for n in range(1, len(roles)):
        if roles[n] == roles[n - 1] and roles[n] != "tool":
            raise InvalidRecord(
                f"turns {n} and {n + 1} are both '{roles[n]}'; user and assistant turns must "
                "alternate",
                fix="merge the two turns into one, or insert the missing turn between them",
                code="role-order",
            )
    check_weights(messages)


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


def _plain_chat(ex: Example, format: str) -> None:
    """Tools, tool calls and turn weights exist only in the messages format (a weight of 1,
    the default, is no loss)."""
    keys = {
        k
        for m in ex.messages
        for k, v in m.items()
        if k not in ("role", "content") and (k, v) != ("weight", 1)
    }
    if ex.tools:
        keys.add("tools")
    if ex.parallel_tool_calls is not None:
        keys.add("parallel_tool_calls")
    if any(m["role"] == "tool" for m in ex.messages):
        keys.add("tool turns")
    if keys:
        raise UserError(
            f"this example cannot be written as {format}: it has {', '.join(sorted(keys))}, "
            f"which {format} cannot hold",
            where=ex.source or None,
            fix="write the file as messages, which holds tools, tool calls and turn weights",
        )


def _single_turn(ex: Example, format: str, allow_system: bool) -> tuple[str | None, str, str]:
    _plain_chat(ex, format)
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
    _plain_chat(ex, "sharegpt")
    turns = [{"from": _SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in ex.messages]
    return _with_meta({"conversations": turns}, ex)


_WRITERS: dict[str, Callable[[Example], dict]] = {
    "messages": Example.to_json,
    "alpaca": _to_alpaca,
    "sharegpt": _to_sharegpt,
    "prompt_completion": _to_prompt_completion,
}
