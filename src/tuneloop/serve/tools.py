"""OpenAI tool calling for `tuneloop serve`: a request's `tools`, `tool_choice` and messages
checked and put in training's form, the grammar that keeps the model's calls valid, and its
answer read back into OpenAI's shape.

A served model calls tools the way its chat template taught it in training. With the built-in
`chatml-tools` (Hermes convention, `tuneloop.data.chat_templates`) an answer that calls two
functions after a sentence reads

    Let me look both up.
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
    <tool_call>
    {"name": "get_time", "arguments": {"city": "Paris"}}
    </tool_call>

and `parse_tool_calls` turns it into OpenAI's `content` ("Let me look both up.") and
`tool_calls` ([{"id": "call_...", "type": "function", "function": {"name": "get_weather",
"arguments": "{\\"city\\": \\"Paris\\"}"}}, ...]). A chat handler uses the pieces in order:

    tools = check_tools(body.tools or [])
    choice = check_tool_choice(body.tool_choice, tools)
    messages = template_messages(body.messages)        # OpenAI's JSON messages, as given
    prompt = render_prompt(tokenizer, messages, tools or None)
    constraint = tool_constraint(tokenizer, tools, choice, body.parallel_tool_calls)
    answer = ...generate under `constraint` (None: free)...
    content, calls = parse_tool_calls(answer) if tools and choice != "none" else (answer, [])
    # finish_reason "tool_calls" when calls, else "stop"/"length"

Every mistake is a 400 `RequestError` whose `param` is the exact field
(`tools[1].function.parameters`, `messages[3].tool_calls[0].function.arguments`).

Only the Hermes spelling is read and written here: a template that spells calls otherwise
(Llama 3's `<|python_tag|>`, Mistral's `[TOOL_CALLS]`) renders the prompt fine, but its calls
come back as text.
"""

from __future__ import annotations

import json
import re
import secrets

from tuneloop.data.problems import InvalidRecord
from tuneloop.data.tooluse import check_tool_flow, read_turn_keys
from tuneloop.errors import UserError
from tuneloop.models.constrain import (
    JSON_OPTIONS,
    GrammarConstraint,
    check_compiles,
    check_schema,
)
from tuneloop.serve.protocol import RequestError

# OpenAI's rule for a function name; it also keeps a name safe inside the grammar's literals.
NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
CHOICES = ("none", "auto", "required")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool"}  # fmt: skip
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
ANY_ARGUMENTS = {"type": "object"}
MAX_CALLS = 8  # tool calls one constrained answer may make (a small model can repeat forever)
OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_TOOL_EXAMPLE = (
    '{"type": "function", "function": {"name": "get_weather", "description": "...", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}'
)


def _invalid(message: str, param: str) -> RequestError:
    return RequestError(400, message, param, "invalid_value")


# -- the request --------------------------------------------------------------------------------


def check_tools(tools: list) -> list[dict]:
    """The request's `tools`, as given, after checking each is an OpenAI function tool: a name
    of letters, digits, `_` and `-` (at most 64, each once), an optional description, optional
    `parameters` that are a JSON Schema of an object, optional `strict` true or false.

        >>> check_tools([{"type": "function", "function": {"name": "get_time"}}])
        [{'type': 'function', 'function': {'name': 'get_time'}}]
        >>> check_tools([{"type": "function", "function": {"name": "get time"}}])
        Traceback (most recent call last):
        ...
        tuneloop.serve.protocol.RequestError: tools[0].function.name: 'get time' is not a \
function name: use letters, digits, _ and - (at most 64)
    """
    if not isinstance(tools, list):
        raise _invalid(f"tools must be a list of function tools such as [{_TOOL_EXAMPLE}]", "tools")
    seen: dict[str, int] = {}
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _invalid(f"{at} must be a function tool such as {_TOOL_EXAMPLE}", at)
        if tool.get("type", "function") != "function":
            raise _invalid(
                f"{at}.type: only function tools are served, got {tool['type']!r}", f"{at}.type"
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _invalid(
                f"{at}.function must be an object such as {_TOOL_EXAMPLE}", f"{at}.function"
            )
        _check_function(function, f"{at}.function")
        name = function["name"]
        if name in seen:
            raise _invalid(
                f"{at}.function.name: {name!r} is offered twice (also tools[{seen[name]}]); "
                "give each function its own name",
                f"{at}.function.name",
            )
        seen[name] = i
    return tools


def _check_function(function: dict, at: str) -> None:
    name = function.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise _invalid(
            f"{at}.name: {name!r} is not a function name: use letters, digits, _ and - "
            "(at most 64)",
            f"{at}.name",
        )
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid(f"{at}.description must be a string", f"{at}.description")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise _invalid(f"{at}.strict must be true or false, got {strict!r}", f"{at}.strict")
    parameters = function.get("parameters")
    if parameters is None:
        return
    try:
        check_schema(parameters, f"{at}.parameters")
    except UserError as err:
        raise _from_user_error(err) from None
    if parameters.get("type") != "object":
        raise _invalid(
            f"{at}.parameters must be the JSON Schema of an object (the arguments), got "
            f'"type": {json.dumps(parameters.get("type"))}; write {{"type": "object", '
            '"properties": {...}}',
            f"{at}.parameters",
        )


def check_tool_choice(tool_choice: str | dict | None, tools: list[dict]) -> str | dict:
    """The request's `tool_choice`, checked against its (checked) `tools`; when absent, OpenAI's
    default: "auto" with tools, "none" without.

        >>> tools = [{"type": "function", "function": {"name": "get_time"}}]
        >>> check_tool_choice(None, tools), check_tool_choice("required", tools)
        ('auto', 'required')
        >>> check_tool_choice({"type": "function", "function": {"name": "get_date"}}, tools)
        Traceback (most recent call last):
        ...
        tuneloop.serve.protocol.RequestError: tool_choice names the function 'get_date', which \
tools does not offer (offered: get_time)
    """
    if tool_choice is None:
        return "auto" if tools else "none"
    names = [t["function"]["name"] for t in tools]
    if tool_choice in CHOICES:
        if tool_choice == "required" and not tools:
            raise _invalid('tool_choice "required" needs tools; offer some in tools', "tool_choice")
        return tool_choice
    function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or tool_choice.get("type", "function") != "function":
        raise _invalid(
            f"tool_choice must be one of {', '.join(CHOICES)} or "
            '{"type": "function", "function": {"name": "..."}}, '
            f"got {json.dumps(tool_choice)[:200]}",
            "tool_choice",
        )
    if name not in names:
        raise _invalid(
            f"tool_choice names the function {name!r}, which tools does not offer "
            f"(offered: {', '.join(names) or 'none'})",
            "tool_choice",
        )
    return tool_choice


def template_messages(messages: list) -> list[dict]:
    """OpenAI's chat messages (JSON, as a client sends them) in the form training reads from
    OpenAI's fine-tuning format, `{"role", "content", "tool_calls"?, "tool_call_id"?}`, so
    `render_prompt(tokenizer, result, tools)` renders them byte for byte as training rendered
    the same conversation (the template spelling comes after, in `data.tooluse`). OpenAI's
    `developer` role is a system message; a list of text parts is one string; other keys
    (`name`, `refusal`) are left out, as training leaves them out. Calls and results are
    checked as in training: arguments that are a JSON object in a string, each result answering
    a call of the turn before, each call answered before the chat goes on.

        >>> call = {"id": "call_1", "type": "function",
        ...         "function": {"name": "get_time", "arguments": '{"city": "Oslo"}'}}
        >>> template_messages([
        ...     {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        ...     {"role": "user", "content": "Time in Oslo?", "name": "ann"},
        ...     {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None},
        ...     {"role": "tool", "tool_call_id": "call_1", "content": "14:05"}])[::2]
        [{'role': 'system', 'content': 'Be brief.'}, {'role': 'assistant', 'content': None, \
'tool_calls': [{'id': 'call_1', 'type': 'function', 'function': {'name': 'get_time', \
'arguments': '{"city": "Oslo"}'}}]}]
    """
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list of chat messages", "messages")
    out = []
    for i, message in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid(
                f'{at} must be an object such as {{"role": "user", "content": "..."}}', at
            )
        raw_role = message.get("role")
        role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise _invalid(
                f"{at}.role: {raw_role!r} is not a role; use one of {', '.join(ROLES)}",
                f"{at}.role",
            )
        content = _text(message.get("content"), f"{at}.content")
        given = {k: message[k] for k in ("tool_calls", "tool_call_id") if k in message}
        try:
            keys = read_turn_keys(given, role, i + 1, at)
        except InvalidRecord as bad:
            raise _from_record(bad, at) from None
        if not keys.get("tool_calls"):
            keys.pop("tool_calls", None)  # an empty list is no call
            if content is None:
                raise _invalid(
                    f"{at}.content: a {message['role']} message needs its content"
                    + (" (or tool_calls)" if role == "assistant" else ""),
                    f"{at}.content",
                )
        out.append({"role": role, "content": content, **keys})
    try:
        check_tool_flow(out, None, None, lambda *args, **kwargs: None)
    except InvalidRecord as bad:
        raise _from_record(bad, "messages") from None
    return out


def _text(content: object, at: str) -> str | None:
    """A message's content as one string (None stays None: a call without words)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return "".join(texts)  # type: ignore[arg-type]
    raise _invalid(
        f"{at} must be a string or a list of text parts "
        '([{"type": "text", "text": "..."}]); other parts are not supported',
        at,
    )


def _from_record(bad: InvalidRecord, at: str) -> RequestError:
    """Training's check of a chat, answered as a request error at the same field (its "turn n"
    counts from 1, the field from 0)."""
    field = bad.field or at
    message = f"{field}: {bad.what}" + (f"; fix: {bad.fix}" if bad.fix else "")
    return _invalid(message, field)


def _from_user_error(err: UserError) -> RequestError:
    problem = err.problems[0]
    message = f"{problem.what}; fix: {problem.fix}" if problem.fix else problem.what
    return _invalid(message, problem.where or "tools")


# -- the answer ---------------------------------------------------------------------------------


def parse_tool_calls(text: str) -> tuple[str | None, list[dict]]:
    """The model's answer as OpenAI's `content` (None when nothing is left) and `tool_calls`:
    each `<tool_call>` block holding `{"name": ..., "arguments": {...}}` is a call, in order,
    with a fresh id; a block that is not such JSON (cut short, or malformed) stays in the
    content, so no text is lost.

        >>> content, calls = parse_tool_calls(
        ...     'Checking.\\n<tool_call>\\n{"name": "get_time", "arguments": {"city": "Oslo"}}'
        ...     '\\n</tool_call>')
        >>> content, calls[0]["function"], calls[0]["id"][:5], len(calls[0]["id"])
        ('Checking.', {'name': 'get_time', 'arguments': '{"city": "Oslo"}'}, 'call_', 29)
        >>> parse_tool_calls('<tool_call>\\n{"name": "get_time", "argum')
        ('<tool_call>\\n{"name": "get_time", "argum', [])
    """
    calls, kept, start = [], [], 0
    for block in _BLOCK.finditer(text):
        call = _call(block.group(1))
        if call is None:
            continue
        kept.append(text[start : block.start()])
        start = block.end()
        calls.append(call)
    kept.append(text[start:])
    content = "".join(kept).strip()
    return content or None, calls


def _call(inside: str) -> dict | None:
    """One block's JSON as an OpenAI tool call, or None when it is not a call."""
    try:
        value = json.loads(inside)
    except ValueError:
        return None
    if not isinstance(value, dict) or set(value) != {"name", "arguments"}:
        return None
    name, arguments = value["name"], value["arguments"]
    if not isinstance(name, str) or not name or not isinstance(arguments, dict):
        return None
    return {
        "id": f"call_{secrets.token_hex(12)}",
        "type": "function",
        # the template's spelling (json.dumps's separators), as training rendered arguments
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


# -- the constraint -----------------------------------------------------------------------------


def tool_constraint(
    tokenizer, tools: list[dict], tool_choice: str | dict, parallel_tool_calls: bool | None = True
) -> GrammarConstraint | None:
    """The grammar constraint `tool_choice` asks for (`tool_grammar`), compiled for
    `tokenizer`; None when the answer is free. A `parameters` schema that constrained decoding
    cannot compile is a 400 naming it.

        constraint = tool_constraint(tok, tools, "required")
        out = model.generate(**inputs, logits_processor=[rows_processor([constraint])])
    """
    functions = _constrained(tools, tool_choice)
    if functions is None:
        return None
    for name, schema in functions:  # cheap, and names the function (the grammar would not)
        try:
            check_compiles(schema, f"tools[{_index(tools, name)}].function.parameters")
        except UserError as err:
            raise _from_user_error(err) from None
    lark = _lark(functions, free=tool_choice == "auto", parallel=parallel_tool_calls is not False)
    try:
        return GrammarConstraint(tokenizer, lark, "tools")
    except UserError as err:
        raise _from_user_error(err) from None


def tool_grammar(
    tools: list[dict], tool_choice: str | dict, parallel_tool_calls: bool | None = True
) -> str | None:
    """The Lark grammar (llguidance's dialect) of the answers `tool_choice` allows, or None
    when any answer is (`"none"`, or `"auto"` without a `strict` function):

    - `"required"`: one or more `<tool_call>` blocks (at most MAX_CALLS; one when
      `parallel_tool_calls` is false), each `{"name": <an offered function>, "arguments":
      <valid under that function's parameters>}`;
    - a named function: the same, that function only;
    - `"auto"` with a `strict` function: free text without `<tool_call>`, or text and then
      blocks as above, where a strict function's arguments follow its schema and another's
      are any JSON object.

    The blocks are spelled as the template renders a call, json.dumps's separators and all.

        >>> tools = [{"type": "function", "function": {"name": "get_time"}}]
        >>> print(tool_grammar(tools, "required", parallel_tool_calls=False), end="")
        %llguidance {}
        start: "<tool_call>" call
        call: "\\n" (f0) "\\n</tool_call>"
        f0: "{\\"name\\": \\"get_time\\", \\"arguments\\": " %json {"type": "object", \
"properties": {}, "additionalProperties": false, "x-guidance": {"whitespace_flexible": false, \
"item_separator": ", ", "key_separator": ": "}} "}"
    """
    functions = _constrained(tools, tool_choice)
    if functions is None:
        return None
    return _lark(functions, free=tool_choice == "auto", parallel=parallel_tool_calls is not False)


def _constrained(tools: list[dict], tool_choice: str | dict) -> list[tuple[str, dict]] | None:
    """(name, arguments schema) of each function the answer may call; None: any answer."""
    functions = [t["function"] for t in tools]
    if tool_choice == "none" or not functions:
        return None
    if tool_choice == "auto":
        if not any(f.get("strict") is True for f in functions):
            return None
        return [
            (f["name"], _parameters(f) if f.get("strict") is True else ANY_ARGUMENTS)
            for f in functions
        ]
    if isinstance(tool_choice, dict):
        functions = [f for f in functions if f["name"] == tool_choice["function"]["name"]]
    return [(f["name"], _parameters(f)) for f in functions]


def _parameters(function: dict) -> dict:
    """A function without `parameters` takes none (OpenAI's reading)."""
    return function.get("parameters") or NO_PARAMETERS


def _index(tools: list[dict], name: str) -> int:
    return next(i for i, t in enumerate(tools) if t["function"]["name"] == name)


def _lark(functions: list[tuple[str, dict]], free: bool, parallel: bool) -> str:
    more = f' ("\\n{OPEN}" call){{0,{MAX_CALLS - 1}}}' if parallel else ""
    if free:
        # Text that never writes <tool_call> (TEXT), or text up to the first <tool_call>
        # (`head`, lazy: it ends there) and then calls: a call cannot escape the grammar.
        lines = [
            f"start: TEXT | head call{more}",
            f"TEXT: /(?s:.*)/ & ~/(?s:.*){OPEN}(?s:.*)/",
            f"head[lazy]: /(?s:.*){OPEN}/",
        ]
    else:
        lines = [f"start: {json.dumps(OPEN)} call{more}"]
    alternatives = " | ".join(f"f{i}" for i in range(len(functions)))
    lines.append(f'call: "\\n" ({alternatives}) {json.dumps(chr(10) + CLOSE)}')
    for i, (name, schema) in enumerate(functions):
        head = json.dumps(f'{{"name": "{name}", "arguments": ')
        spelled = {**schema, "x-guidance": JSON_OPTIONS}  # one line, json.dumps's separators
        lines.append(f'f{i}: {head} %json {json.dumps(spelled)} "}}"')
    return "\n".join(["%llguidance {}", *lines]) + "\n"
