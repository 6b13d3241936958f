"""The canonical record every reader produces and every later step consumes.

    >>> ex = Example(
    ...     messages=[
    ...         {"role": "system", "content": "Classify the support message."},
    ...         {"role": "user", "content": "I forgot my password"},
    ...         {"role": "assistant", "content": "reset_password"},
    ...     ],
    ...     meta={"label": "reset_password"},
    ...     source="train.csv:2",
    ... )
    >>> ex.prompt_messages[-1]["content"], ex.reference
    ('I forgot my password', 'reset_password')

`messages` is the chat (roles `system`, `user`, `assistant`), `meta` holds anything else the
source carried (labels, slices, ids) and `source` is where it came from, for error messages.
The last message is the target the model must produce; the ones before it are the prompt.

A chat read from OpenAI's fine-tuning format may also use tools (`tuneloop.data.tooluse`): an
assistant message may carry `tool_calls` (its `content` then None) and `weight` (0: not trained
on), a `tool` message carries the `tool_call_id` it answers, and `tools` (the functions offered,
which the chat template shows the model) and `parallel_tool_calls` are the record's own. When
the answer is a tool call, `reference` is the calls as compact JSON, so an evaluation can score
it as a JSON answer:

    >>> call = {"id": "call_1", "type": "function",
    ...         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    >>> Example([{"role": "user", "content": "Weather in Paris?"},
    ...          {"role": "assistant", "content": None, "tool_calls": [call]}]).reference
    '[{"name":"get_weather","arguments":{"city":"Paris"}}]'
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Example:
    messages: list[dict]
    meta: dict = field(default_factory=dict)
    source: str = ""
    tools: list[dict] | None = None  # the functions the model is offered (OpenAI "tools")
    parallel_tool_calls: bool | None = None  # as the record gave it; None when it did not

    @property
    def prompt_messages(self) -> list[dict]:
        """Everything before the final assistant turn: what inference is given."""
        return self.messages[:-1]

    @property
    def reference(self) -> str:
        """The final assistant turn: what the model should answer. A turn that calls tools is
        its calls as compact JSON, `[{"name": ..., "arguments": {...}}, ...]` (any text that
        comes with the calls is left out)."""
        last = self.messages[-1]
        if last.get("tool_calls"):
            return tool_calls_text(last["tool_calls"])
        return last["content"]

    @property
    def label(self) -> str | None:
        return self.meta.get("label")

    def to_json(self) -> dict:
        """The `messages` JSONL form (the tuneloop native format; OpenAI's chat format)."""
        out: dict = {"messages": self.messages}
        if self.tools is not None:
            out["tools"] = self.tools
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        if self.meta:
            out["meta"] = self.meta
        return out


def tool_calls_text(calls: list[dict]) -> str:
    """Tool calls as compact JSON: each call's name and its arguments as a JSON object.

    >>> tool_calls_text([{"id": "call_1", "type": "function",
    ...                   "function": {"name": "f", "arguments": '{"x": 1}'}}])
    '[{"name":"f","arguments":{"x":1}}]'
    """
    out = [{"name": c["function"]["name"], "arguments": call_arguments(c)} for c in calls]
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def message_text(message: dict) -> str:
    """The text of a message as the checks read it (duplicates, personal data, characters):
    its content, then each tool call's name and arguments.

    >>> message_text({"role": "assistant", "content": None, "tool_calls": [
    ...     {"id": "c1", "type": "function",
    ...      "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]})
    'get_weather {"city": "Paris"}'
    """
    parts = [message["content"]] if message.get("content") else []
    for call in message.get("tool_calls") or ():
        parts.append(f"{call['function']['name']} {call['function']['arguments']}")
    return "\n".join(parts)


def normalize_text(text: str) -> str:
    """Unicode NFC, collapsed whitespace: the form used to compare and hash contents."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(example: Example) -> str:
    """A stable hash of what the model sees (roles and normalised contents), not of metadata.

    Two examples that differ only in spacing hash the same, so a held-out item cannot leak
    into train by a change of whitespace. Tool calls (name and arguments, not their ids) and
    the tools offered count; turn weights do not (they change what is trained, not the chat).
    """
    return _hash(example.messages, example.tools)


def prompt_hash(example: Example) -> str:
    """A hash of the prompt alone: the same question with two answers is still a leak."""
    return _hash(example.prompt_messages, example.tools)


def _hash(messages: list[dict], tools: list[dict] | None) -> str:
    canon: list = [_canon(m) for m in messages]
    if tools:  # a chat without tools hashes as it always has
        canon.insert(0, ["tools", tools])
    blob = json.dumps(canon, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _canon(message: dict) -> list:
    canon = [message["role"], normalize_text(message["content"] or "")]
    if message.get("tool_calls"):
        canon.append([[c["function"]["name"], call_arguments(c)] for c in message["tool_calls"]])
    return canon


def call_arguments(call: dict) -> object:
    """A call's arguments (a JSON string, checked when read) as the JSON value they hold."""
    try:
        return json.loads(call["function"]["arguments"])
    except (TypeError, ValueError):
        return call["function"]["arguments"]
