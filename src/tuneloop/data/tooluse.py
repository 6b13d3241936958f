"""Tool calls, tool results and per-turn weights in a chat: OpenAI's fine-tuning format.

A hosted fine-tuning job's JSONL (OpenAI's chat format) is a `messages` file whose records may
also carry the tools the model was offered and whether it may call several at once:

    {"messages": [
        {"role": "system", "content": "You answer weather questions."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look.", "weight": 0},
        {"role": "user", "content": "Go ahead."},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
        {"role": "assistant", "content": "18°C and sunny in Paris."}],
     "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Current weather", "parameters": {"type": "object", ...}}}],
     "parallel_tool_calls": false}

An assistant turn may call tools (`tool_calls`, its content then null or absent) and may carry
`"weight": 0` (not trained on) or `1` (the default); a `tool` turn answers one call by its
`tool_call_id`. Each message keeps these keys as given; the record's `tools` and
`parallel_tool_calls` become `Example.tools` and `Example.parallel_tool_calls`.

The functions here read those values and check how they fit together, raising
`InvalidRecord` (the reader adds the file and line): a call without a function name, arguments
that are not a JSON object written as a string, a tool result for no earlier call, a call left
without its result, several calls in one turn under `"parallel_tool_calls": false`.
OpenAI's older `functions`/`function_call` form is refused with how to rewrite it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tuneloop.data.problems import InvalidRecord, kind_of
from tuneloop.data.records import call_arguments

# Keys a turn of a `messages` chat may carry besides its role and content, by role.
TURN_KEYS = {"assistant": ("tool_calls", "weight"), "tool": ("tool_call_id",)}

_CALL_EXAMPLE = (
    '{"id": "call_1", "type": "function", "function": {"name": "get_weather", '
    '"arguments": "{\\"city\\": \\"Paris\\"}"}}'
)
_TOOL_EXAMPLE = (
    '{"type": "function", "function": {"name": "get_weather", "description": "...", '
    '"parameters": {"type": "object", "properties": {...}}}}'
)
_LEGACY_FIX = (
    "rewrite it in the tools form OpenAI replaced it with: record-level `functions: [F, ...]` "
    'as `tools: [{"type": "function", "function": F}, ...]`, each `function_call: {...}` as '
    '`tool_calls: [{"id": "call_1", "type": "function", "function": {...}}]`, and each '
    '`{"role": "function", "name": ..., "content": ...}` turn as '
    '`{"role": "tool", "tool_call_id": "call_1", "content": ...}`'
)


def refuse_legacy_functions(obj: dict) -> None:
    """OpenAI's deprecated function-calling keys are not read: say how to rewrite them."""
    used = [key for key in ("functions", "function_call") if key in obj]
    turns = obj["messages"] if isinstance(obj.get("messages"), list) else []
    for n, turn in enumerate(turns):
        if isinstance(turn, dict) and "function_call" in turn:
            used.append(f"messages[{n}].function_call")
        elif isinstance(turn, dict) and turn.get("role") == "function":
            used.append(f"messages[{n}].role")
    if used:
        raise InvalidRecord(
            f"this record uses OpenAI's deprecated function-calling form ({used[0]}), which "
            "tuneloop does not read",
            fix=_LEGACY_FIX,
            code="legacy-functions",
            field=used[0],
        )


def read_tools(value: object) -> list[dict] | None:
    """The record's `tools` as given, after checking each is a function with a name.

    >>> read_tools([{"type": "function", "function": {"name": "get_weather"}}])
    [{'type': 'function', 'function': {'name': 'get_weather'}}]
    >>> read_tools(None) is None
    True
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRecord(
            f"'tools' must be a list of tools, got {kind_of(value)}",
            fix=f"write it as [{_TOOL_EXAMPLE}, ...]",
            code="wrong-type",
            field="tools",
        )
    for i, tool in enumerate(value):
        at = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            raise InvalidRecord(
                f"{at} is not a function tool: expected "
                '{"type": "function", "function": {...}}, got ' + _short(tool),
                fix=f"write each tool as {_TOOL_EXAMPLE}",
                code="invalid-tool",
                field=at,
            )
        if not _name(function.get("name")):
            raise InvalidRecord(
                f"{at} has no function name",
                fix='give the function its name, e.g. "function": {"name": "get_weather", ...}',
                code="invalid-tool",
                field=f"{at}.function.name",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRecord(
                f"{at}.function.parameters must be a JSON schema object, got {kind_of(parameters)}",
                fix='write it as {"type": "object", "properties": {...}}, or leave it out',
                code="invalid-tool",
                field=f"{at}.function.parameters",
            )
    return value


def read_parallel(value: object) -> bool | None:
    """The record's `parallel_tool_calls`: true, false, or None when absent."""
    if value is None or isinstance(value, bool):
        return value
    raise InvalidRecord(
        f"'parallel_tool_calls' must be true or false, got {_short(value)}",
        fix="write true or false (without quotes), or leave it out (OpenAI's default is true)",
        code="wrong-type",
        field="parallel_tool_calls",
    )


def read_turn_keys(turn: dict, role: str, n: int, at: str) -> dict:
    """The tool and weight keys of turn `n` (`at` is its field path) that its role reads, checked.

    >>> read_turn_keys({"role": "assistant", "content": "Hi", "weight": 0}, "assistant", 3,
    ...                "messages[2]")
    {'weight': 0}
    """
    keys: dict = {}
    if role == "assistant":
        if "tool_calls" in turn and turn["tool_calls"] is not None:
            keys["tool_calls"] = _read_calls(turn["tool_calls"], n, f"{at}.tool_calls")
        if "weight" in turn:
            keys["weight"] = _read_weight(turn["weight"], n, f"{at}.weight")
    elif role == "tool":
        call_id = turn.get("tool_call_id")
        if not _name(call_id):
            raise InvalidRecord(
                f"turn {n} (tool) has no 'tool_call_id' naming the call it answers"
                + ("" if call_id is None else f" (got {_short(call_id)})"),
                fix='add the id of the call it answers, e.g. "tool_call_id": "call_1"',
                code="missing-key" if call_id is None else "wrong-type",
                field=f"{at}.tool_call_id",
            )
        keys["tool_call_id"] = call_id
    return keys


def _read_weight(value: object, n: int, at: str) -> int:
    if type(value) is int and value in (0, 1):
        return value
    raise InvalidRecord(
        f"turn {n} (assistant) has weight {_short(value)}; a weight is 0 (not trained on) or 1 "
        "(trained on)",
        fix='write "weight": 0 or "weight": 1, or leave it out (1)',
        code="invalid-weight",
        field=at,
    )


def _read_calls(value: object, n: int, at: str) -> list[dict]:
    if not isinstance(value, list):  # an empty list is no call, as in OpenAI's logs
        raise InvalidRecord(
            f"turn {n} (assistant): 'tool_calls' must be a list of calls, got {_short(value)}",
            fix=f"write it as [{_CALL_EXAMPLE}], or leave it out",
            code="invalid-tool-call",
            field=at,
        )
    for i, call in enumerate(value):
        where = f"{at}[{i}]"
        what = f"turn {n} (assistant), tool call {i + 1}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise InvalidRecord(
                f"{what} is not a function call: got {_short(call)}",
                fix=f"write each call as {_CALL_EXAMPLE}",
                code="invalid-tool-call",
                field=where,
            )
        if not _name(call.get("id")):
            raise InvalidRecord(
                f"{what} has no 'id', so no tool result can name it",
                fix='give each call an id, e.g. "id": "call_1", and answer it with a tool turn '
                'holding "tool_call_id": "call_1"',
                code="invalid-tool-call",
                field=f"{where}.id",
            )
        if not _name(function.get("name")):
            raise InvalidRecord(
                f"{what} has no function name",
                fix='name the function it calls, e.g. "function": {"name": "get_weather", '
                '"arguments": "{}"}',
                code="invalid-tool-call",
                field=f"{where}.function.name",
            )
        _check_arguments(function.get("arguments"), f"{what} ({function['name']})", where)
    return value


def _check_arguments(arguments: object, what: str, where: str) -> None:
    """OpenAI gives a call's arguments as a string holding a JSON object."""
    fix = (
        'write the arguments as one JSON object inside a string, e.g. "arguments": '
        '"{\\"city\\": \\"Paris\\"}" ("{}" for none)'
    )
    field = f"{where}.function.arguments"
    if not isinstance(arguments, str):
        got = "missing" if arguments is None else f"{kind_of(arguments)}, not a string"
        raise InvalidRecord(
            f"{what}: the arguments are {got}", fix, code="invalid-tool-call", field=field
        )
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as e:
        raise InvalidRecord(
            f"{what}: the arguments {_short(arguments)} are not valid JSON ({e.msg} at "
            f"character {e.pos + 1})",
            fix,
            code="invalid-tool-call",
            field=field,
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidRecord(
            f"{what}: the arguments {_short(arguments)} are {kind_of(parsed)}, not a JSON object",
            fix,
            code="invalid-tool-call",
            field=field,
        )


def check_tool_flow(
    messages: list[dict],
    tools: list[dict] | None,
    parallel_tool_calls: bool | None,
    warn: Callable[..., None],
) -> None:
    """How the calls and results of a chat fit together.

    Each `tool` turn follows an assistant turn that calls tools (or another tool turn) and
    answers one of its calls by id, once; every call is answered before the chat goes on (the
    final turn's calls are the answer being learned and have no results). With
    `parallel_tool_calls: false` a turn makes at most one call. A call to a function that
    `tools` does not offer is a warning.
    """
    offered = {t["function"]["name"] for t in tools} if tools else None
    pending: dict[str, str] = {}  # id -> function name, of the last calling turn
    calling_turn = 0
    for n, message in enumerate(messages, start=1):
        role = message["role"]
        if role == "tool":
            _check_result(message, n, pending, calling_turn)
            continue
        if pending:
            _unanswered(pending, calling_turn, n)
        calls = message.get("tool_calls") or []
        if not calls:
            continue
        if parallel_tool_calls is False and len(calls) > 1:
            raise InvalidRecord(
                f"turn {n} (assistant) makes {len(calls)} tool calls, but the record sets "
                '"parallel_tool_calls": false (at most one call a turn)',
                fix="split the calls over several turns, each answered by its tool turn, or set "
                '"parallel_tool_calls": true',
                code="parallel-tool-calls",
                field=f"messages[{n - 1}].tool_calls",
            )
        ids = [c["id"] for c in calls]
        if len(set(ids)) < len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise InvalidRecord(
                f"turn {n} (assistant) gives the id {twice!r} to two tool calls",
                fix="give each call of the chat its own id",
                code="invalid-tool-call",
                field=f"messages[{n - 1}].tool_calls",
            )
        for i, call in enumerate(calls):
            name = call["function"]["name"]
            if offered is not None and name not in offered:
                warn(
                    "unknown-tool",
                    f"turn {n} calls {name!r}, which the record's 'tools' does not offer "
                    f"({', '.join(sorted(offered)) or 'none'})",
                    "add the function to 'tools', or correct the name of the call",
                    field=f"messages[{n - 1}].tool_calls[{i}].function.name",
                )
        pending, calling_turn = {c["id"]: c["function"]["name"] for c in calls}, n
    # Calls left at the end are the final turn's: the answer the model learns.


def _check_result(message: dict, n: int, pending: dict[str, str], calling_turn: int) -> None:
    call_id = message["tool_call_id"]
    if call_id in pending:
        del pending[call_id]
        return
    if not calling_turn:
        what = f"turn {n} is a tool result, but no earlier assistant turn calls a tool"
        fix = "put the assistant turn with the matching tool_calls before it, or drop it"
    else:
        what = (
            f"turn {n} (tool) answers tool_call_id {call_id!r}, which matches no unanswered call "
            f"of turn {calling_turn}"
        )
        open_ids = ", ".join(repr(i) for i in pending) or "none left"
        fix = f"use the id of the call it answers (unanswered: {open_ids}), or drop the turn"
    field = f"messages[{n - 1}].tool_call_id"
    raise InvalidRecord(what, fix, code="unknown-tool-call", field=field)


def _unanswered(pending: dict[str, str], calling_turn: int, n: int) -> None:
    calls = ", ".join(f"{name} ({call_id!r})" for call_id, name in pending.items())
    raise InvalidRecord(
        f"turn {calling_turn} calls {calls} but no tool turn answers before turn {n}",
        fix='add a {"role": "tool", "tool_call_id": ..., "content": "<result>"} turn for each '
        "call right after the calling turn",
        code="unanswered-tool-call",
        field=f"messages[{calling_turn - 1}].tool_calls",
    )


def check_weights(messages: list[dict]) -> None:
    """Something is trained on: the final turn (the answer) has weight 1, so not every
    assistant turn is weight 0.

    >>> check_weights([{"role": "user", "content": "Hi"},
    ...                {"role": "assistant", "content": "Hello", "weight": 0}])
    Traceback (most recent call last):
    tuneloop.data.problems.InvalidRecord: every assistant turn has weight 0: it trains nothing
    """
    assistant = [m for m in messages if m["role"] == "assistant"]
    if assistant and all(m.get("weight", 1) == 0 for m in assistant):
        raise InvalidRecord(
            "every assistant turn has weight 0: it trains nothing",
            fix="set the weight of the turns to learn to 1 (or drop the key), or drop the record",
            code="nothing-to-learn",
        )
    if messages[-1].get("weight", 1) == 0:
        raise InvalidRecord(
            "the last turn has weight 0, but the last turn is the answer the model learns and "
            "is scored on",
            fix="set its weight to 1 (or drop the key), or end the chat at the last turn of "
            "weight 1",
            code="nothing-to-learn",
            field=f"messages[{len(messages) - 1}].weight",
        )


def uses_tools(messages: list[dict], tools: list | None = None) -> bool:
    """Whether rendering this chat needs a template that knows tools, calls and results."""
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def template_messages(messages: list[dict]) -> list[dict]:
    """The chat as chat templates read it (Hugging Face's convention): each call's arguments
    as the JSON object they hold (OpenAI gives a string), no `content` on a turn that only
    calls tools, each tool result with the `name` of the function it answers, and no turn
    weights (they decide the loss mask, not the text). A chat without any of these is returned
    as it is.

    >>> call = {"id": "c1", "type": "function",
    ...         "function": {"name": "f", "arguments": '{"x": 1}'}}
    >>> chat = template_messages([{"role": "user", "content": "Hi"},
    ...                           {"role": "assistant", "content": None, "tool_calls": [call]},
    ...                           {"role": "tool", "tool_call_id": "c1", "content": "2"}])
    >>> chat[1]["tool_calls"][0]["function"], "content" in chat[1], chat[2]["name"]
    ({'name': 'f', 'arguments': {'x': 1}}, False, 'f')
    """
    if not any(m.keys() - {"role", "content"} for m in messages):
        return messages
    names: dict[str, str] = {}
    out = []
    for message in messages:
        m = {k: v for k, v in message.items() if k != "weight"}
        if m.get("tool_calls"):
            if m.get("content") is None:
                del m["content"]
            m["tool_calls"] = [_call_for_template(c) for c in m["tool_calls"]]
            names.update((c["id"], c["function"]["name"]) for c in m["tool_calls"])
        if m["role"] == "tool" and m.get("tool_call_id") in names:
            m["name"] = names[m["tool_call_id"]]
        out.append(m)
    return out


def _call_for_template(call: dict) -> dict:
    function = call["function"]
    return {**call, "function": {**function, "arguments": call_arguments(call)}}


def _name(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _short(value: object, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"
