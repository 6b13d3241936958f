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
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    messages: list[dict[str, str]]
    meta: dict = field(default_factory=dict)
    source: str = ""

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Everything before the final assistant turn: what inference is given."""
        return self.messages[:-1]

    @property
    def reference(self) -> str:
        """The final assistant turn: what the model should answer."""
        return self.messages[-1]["content"]

    @property
    def label(self) -> str | None:
        return self.meta.get("label")

    def to_json(self) -> dict:
        """The `messages` JSONL form (the tuneloop native format)."""
        out: dict = {"messages": self.messages}
        if self.meta:
            out["meta"] = self.meta
        return out


def normalize_text(text: str) -> str:
    """Unicode NFC, collapsed whitespace: the form used to compare and hash contents."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(example: Example) -> str:
    """A stable hash of what the model sees (roles and normalised contents), not of metadata.

    Two examples that differ only in spacing hash the same, so a held-out item cannot leak
    into train by a change of whitespace.
    """
    canon = [[m["role"], normalize_text(m["content"])] for m in example.messages]
    blob = json.dumps(canon, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def prompt_hash(example: Example) -> str:
    """A hash of the prompt alone: the same question with two answers is still a leak."""
    canon = [[m["role"], normalize_text(m["content"])] for m in example.prompt_messages]
    blob = json.dumps(canon, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
