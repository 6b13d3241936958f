"""Chat templates for tool use: the built-in `chatml-tools`, `model.chat_template`, and the
check that a model's template can render tools at all.

Chats are rendered by the model's own chat template (`tokenizer.apply_chat_template`). Many
small models' templates know only text turns: SmolLM2's plain ChatML concatenates
`message['content']`, so an assistant turn that only calls a tool (content None) breaks it,
and `tools` are never shown. Training on such a rendering would teach the model nothing of the
calls, so `check_renders_tools` renders a probe chat (a tool offered, called, answered) before
any chat with tools is rendered, and refuses a template that raises or leaves any of the three
out. The fix is `model.chat_template`: a template file, or the built-in

    chatml-tools  SmolLM2's ChatML, byte for byte, for chats without tools (including its
                  default system prompt), plus the Hermes/Qwen2.5 convention for tools:

    <|im_start|>system
    You answer weather questions.

    # Tools

    You may call one or more functions to assist with the user query.

    You are provided with function signatures within <tools></tools> XML tags:
    <tools>
    {"type": "function", "function": {"name": "get_weather", ...}}
    </tools>

    For each function call, return a json object with function name and arguments within
    <tool_call></tool_call> XML tags:
    <tool_call>
    {"name": <function-name>, "arguments": <args-json-object>}
    </tool_call><|im_end|>
    <|im_start|>user
    Weather in Paris?<|im_end|>
    <|im_start|>assistant
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    18°C, sunny
    </tool_response><|im_end|>
    <|im_start|>assistant
    18°C and sunny in Paris.<|im_end|>

(the "For each function call" line is one line in the rendering). Consecutive tool results
share one user turn. The template is saved with the trained tokenizer, so export and serving
render as training did.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.data.tooluse import template_messages
from tuneloop.errors import UserError

_SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CHATML_TOOLS = (
    "{%- set default_system = '" + _SMOLLM_SYSTEM + "' %}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- default_system }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query."
    "\\n\\nYou are provided with function signatures within <tools></tools> XML tags:"
    "\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{"name": <function-name>, "arguments": <args-json-object>}'
    "\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}"
    "{%- if not tools %}"
    "{{- '<|im_start|>system\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'assistant' and message.tool_calls %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + tool_call.name + \'", "arguments": \' }}'
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}"
    "{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

BUILTIN = {"chatml-tools": CHATML_TOOLS}

FIX = (
    "set `model.chat_template: chatml-tools` (ChatML with Hermes-style <tool_call> tags, for "
    "ChatML models such as SmolLM2 and Qwen2), or the path of a Jinja template that renders "
    "`tools`, assistant `tool_calls` and `tool` turns"
)


def read_chat_template(value: str) -> str:
    """The Jinja text `model.chat_template` names: a built-in name, or a template file.

    >>> read_chat_template("chatml-tools") == CHATML_TOOLS
    True
    """
    if value in BUILTIN:
        return BUILTIN[value]
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(
            f"chat template {value!r} is neither a built-in template nor a file "
            f"(looked for {path.absolute()})",
            "model.chat_template",
            f"use a built-in name ({', '.join(BUILTIN)}) or the path of a Jinja template file; "
            "a path in a recipe starts at the recipe's folder",
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"cannot read the chat template {path}: {e}",
            "model.chat_template",
            "give a readable UTF-8 Jinja file",
        ) from None


# A tool offered, called and answered, each with a marker that a rendering must show.
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_probe",
            "description": "probe-tool-description",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]
_PROBE_CHAT = [
    {"role": "user", "content": "Look it up."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_probe",
                "type": "function",
                "function": {"name": "lookup_probe", "arguments": '{"query": "probe-argument"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_probe", "content": "probe-tool-result"},
    {"role": "assistant", "content": "Found it."},
]
_PROBE_MARKS = {
    "probe-tool-description": "the tools offered (`tools`)",
    "probe-argument": "the tool call",
    "probe-tool-result": "the tool result",
}
_probed: dict[str, str | None] = {}  # template text -> why it cannot render tools, or None


def check_renders_tools(tokenizer) -> None:
    """Raise a `UserError` naming `model.chat_template` unless the tokenizer's chat template
    renders tools, tool calls and tool results (checked once per template)."""
    template = str(getattr(tokenizer, "chat_template", None))
    if template not in _probed:
        _probed[template] = _why_not(tokenizer)
    reason = _probed[template]
    if reason is not None:
        raise UserError(
            f"the model's chat template cannot render tool use, which this data has: {reason}; "
            "tuneloop never drops tool calls silently",
            "model.chat_template",
            FIX,
        )


def _why_not(tokenizer) -> str | None:
    try:
        text = tokenizer.apply_chat_template(
            template_messages(_PROBE_CHAT), tools=_PROBE_TOOLS, tokenize=False
        )
    except Exception as e:  # a template's own error, whatever its kind: that is the finding
        return f"rendering a chat with a tool call raised {type(e).__name__}: {e}"
    missing = [what for mark, what in _PROBE_MARKS.items() if mark not in text]
    if missing:
        return f"a chat rendered with it leaves out {', '.join(missing)}"
    return None
