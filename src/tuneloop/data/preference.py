"""Preference pairs for DPO: one canonical record, readers for the common layouts, and lint.

    >>> pair = PreferencePair(
    ...     prompt=[{"role": "user", "content": "My card never arrived."}],
    ...     chosen="Sorry about that! I can send a replacement card today.",
    ...     rejected="Not my problem.",
    ...     source="prefs.jsonl:1",
    ... )
    >>> pair.chosen_messages[-1]
    {'role': 'assistant', 'content': 'Sorry about that! I can send a replacement card today.'}

`read_preferences` reads JSONL (or a JSON array) in any of these layouts, one pair per record:

    explicit prompt     {"prompt": "My card never arrived.", "chosen": "Sorry ...",
                         "rejected": "Not my problem."}
                        (prompt, chosen and rejected may also be lists of chat messages, as in
                        TRL's conversational form; an optional "system" string leads the prompt)
    implicit prompt     {"chosen": [{"role": "user", ...}, {"role": "assistant", ...}],
                         "rejected": [{"role": "user", ...}, {"role": "assistant", ...}]}
    transcripts         {"chosen": "\\n\\nHuman: My card never arrived.\\n\\nAssistant: Sorry ...",
                         "rejected": "\\n\\nHuman: My card never arrived.\\n\\nAssistant: Not ..."}
                        (the "Human: ... Assistant: ..." style of public preference sets)

Where the prompt comes from both sides (implicit prompts and transcripts) and the two differ,
the rejected side's prompt is kept in `rejected_prompt` for `lint_pairs` to report. Structural
mistakes (bad JSON, missing keys, wrong types) are `DataError`s with file and line; problems of
content (empty or identical sides, prompts that differ) are lint findings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.data.jsonlines import parse_json_array, parse_jsonl, read_text
from tuneloop.data.lint import Finding
from tuneloop.data.records import Example, normalize_text
from tuneloop.data.templates import with_instruction
from tuneloop.errors import DataError
from tuneloop.files import write_text

_ROLES = ("system", "user", "assistant")
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_PAIR_FIX = (
    'write each record as {"prompt": "...", "chosen": "...", "rejected": "..."}, or as '
    '{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}'
)


@dataclass
class PreferencePair:
    """A prompt (chat messages ending with the user's turn) and two answers, the better first."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    meta: dict = field(default_factory=dict)
    source: str = ""
    rejected_prompt: list[dict[str, str]] | None = None  # only when it differs from `prompt`

    @property
    def chosen_messages(self) -> list[dict[str, str]]:
        return [*self.prompt, {"role": "assistant", "content": self.chosen}]

    @property
    def rejected_messages(self) -> list[dict[str, str]]:
        prompt = self.rejected_prompt if self.rejected_prompt is not None else self.prompt
        return [*prompt, {"role": "assistant", "content": self.rejected}]

    def as_example(self) -> Example:
        """The prompt with the chosen answer: how a pair is split and checked for leakage."""
        return Example(self.chosen_messages, dict(self.meta), self.source)

    def to_json(self) -> dict:
        out: dict = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        if self.meta:
            out["meta"] = self.meta
        return out


def pair_with_instruction(pair: PreferencePair, instruction: str | None) -> PreferencePair:
    """The pair with `templates.with_instruction` applied to both sides' prompts."""
    prompt = with_instruction(pair.prompt, instruction)
    rejected = pair.rejected_prompt
    rejected_prompt = None if rejected is None else with_instruction(rejected, instruction)
    if prompt is pair.prompt and rejected_prompt is rejected:
        return pair
    return PreferencePair(prompt, pair.chosen, pair.rejected, pair.meta, pair.source,
                          rejected_prompt)  # fmt: skip


def looks_like_preferences(path: str | Path) -> bool:
    """True when the first record of a JSON/JSONL file has both "chosen" and "rejected"."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv") or not path.is_file():
        return False
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return False
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except (json.JSONDecodeError, RecursionError):  # the reader will say which line
            return False
        first = records[0] if isinstance(records, list) and records else None
    else:
        line = next((ln for ln in text.split("\n") if ln.strip()), "")
        try:
            first = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # the reader will say which line
            return False
    return isinstance(first, dict) and {"chosen", "rejected"} <= set(first)


def read_preferences(path: str | Path) -> list[PreferencePair]:
    """Every pair of a JSONL file (or JSON array); the first structural mistake is a
    `DataError` naming the file and line."""
    path = Path(path)
    text = read_text(path)
    parse = parse_json_array if text.lstrip().startswith("[") else parse_jsonl
    records = parse(path, text)
    if not records:
        raise DataError(path, 1, "no preference pairs: the file is empty", fix=_PAIR_FIX)
    pairs = []
    for line, obj in records:
        try:
            pairs.append(_pair(obj, f"{path}:{line}"))
        except _Bad as bad:
            raise DataError(path, line, bad.what, bad.fix) from None
    return pairs


def write_preferences(path: str | Path, pairs: list[PreferencePair]) -> Path:
    """JSONL with explicit prompts (the canonical layout), written atomically."""
    lines = "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in pairs)
    write_text(path, lines)
    return Path(path)


class _Bad(Exception):
    def __init__(self, what: str, fix: str = _PAIR_FIX):
        self.what, self.fix = what, fix


def _pair(obj: object, source: str) -> PreferencePair:
    if not isinstance(obj, dict):
        raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("chosen", "rejected") if k not in obj]
    if missing:
        hint = (
            " (this looks like a supervised example: train it with objective `sft`)"
            if {"messages", "completion", "conversations", "output"} & set(obj)
            else ""
        )
        raise _Bad(f"missing {' and '.join(repr(k) for k in missing)}; the record has "
                   f"{sorted(obj)}{hint}")  # fmt: skip
    meta = {k: v for k, v in obj.items() if k not in ("prompt", "chosen", "rejected", "system")}
    own = meta.pop("meta", None) or {}
    if not isinstance(own, dict):
        raise _Bad(f"'meta' must be an object, got {type(own).__name__}")
    meta.update(own)
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise _Bad(f"'system' must be a string, got {type(system).__name__}")
    lead = [{"role": "system", "content": system}] if system and system.strip() else []

    given = lead + _prompt(obj["prompt"]) if "prompt" in obj else []
    chosen, chosen_prompt = _answer(obj["chosen"], "chosen")
    rejected, rejected_prompt = _answer(obj["rejected"], "rejected")
    # A side given as a whole chat carries its own prompt; otherwise it answers `prompt`.
    chosen_prompt = lead + chosen_prompt if chosen_prompt else given
    rejected_prompt = lead + rejected_prompt if rejected_prompt else given
    if not chosen_prompt:
        raise _Bad(
            "no prompt: without a 'prompt' key, 'chosen' must hold the whole conversation",
            fix="add a 'prompt' key, or give 'chosen' and 'rejected' as transcripts "
            '("\\n\\nHuman: ...\\n\\nAssistant: ...") or as lists of chat messages',
        )
    differs = _canon(chosen_prompt) != _canon(rejected_prompt)
    return PreferencePair(
        chosen_prompt, chosen, rejected, meta, source, rejected_prompt if differs else None
    )


def _prompt(value: object) -> list[dict[str, str]]:
    if isinstance(value, list):
        messages = _messages(value, "prompt")
    elif isinstance(value, str):
        messages = _transcript(value) if _is_transcript(value) else []
        if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
            messages = messages[:-1]  # "...\n\nAssistant:" ends with the empty answer slot
        messages = messages or [{"role": "user", "content": value}]
    else:
        raise _Bad(f"'prompt' must be a string or a list of messages, got {type(value).__name__}")
    if messages[-1]["role"] != "user":
        raise _Bad(
            f"the prompt ends with a '{messages[-1]['role']}' turn; it must end with the user's "
            "turn that the two answers reply to",
            fix="drop the trailing turn from the prompt",
        )
    return messages


def _answer(value: object, key: str) -> tuple[str, list[dict[str, str]]]:
    """(the answer, the prompt before it) from a string, a transcript or a list of messages."""
    if isinstance(value, str):
        if not _is_transcript(value):
            return value, []
        messages = _transcript(value)
    elif isinstance(value, list):
        messages = _messages(value, key)
    else:
        raise _Bad(f"'{key}' must be a string or a list of messages, got {type(value).__name__}")
    if messages[-1]["role"] != "assistant":
        raise _Bad(
            f"'{key}' ends with a '{messages[-1]['role']}' turn; its last turn must be the "
            "assistant's answer",
            fix=f"end '{key}' with the answer",
        )
    return messages[-1]["content"], messages[:-1]


def _messages(items: list, key: str) -> list[dict[str, str]]:
    if not items:
        raise _Bad(f"'{key}' is an empty list", fix="give the messages, or a string")
    out = []
    for n, turn in enumerate(items, start=1):
        if not (isinstance(turn, dict) and isinstance(turn.get("content"), str)):
            raise _Bad(
                f"message {n} of '{key}' must be an object with a string 'content'",
                fix='write each message as {"role": "user", "content": "..."}',
            )
        if turn.get("role") not in _ROLES:
            raise _Bad(
                f"message {n} of '{key}' has unknown role {turn.get('role')!r}",
                fix=f"use one of {', '.join(_ROLES)}",
            )
        out.append({"role": turn["role"], "content": turn["content"]})
    return out


def _is_transcript(text: str) -> bool:
    return text.lstrip().startswith("Human:")


def _transcript(text: str) -> list[dict[str, str]]:
    """ "\\n\\nHuman: Hi\\n\\nAssistant: Hello" -> user and assistant messages, in order.

    >>> _transcript("\\n\\nHuman: Hi there\\n\\nAssistant: Hello!")
    [{'role': 'user', 'content': 'Hi there'}, {'role': 'assistant', 'content': 'Hello!'}]
    """
    text = "\n\n" + text.lstrip()
    marks = list(_TURN.finditer(text))
    messages = []
    for mark, nxt in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end() : nxt.start() if nxt else len(text)].strip()
        messages.append({"role": "user" if mark.group(1) == "Human" else "assistant",
                         "content": body})  # fmt: skip
    return messages


def _canon(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(m["role"], normalize_text(m["content"])) for m in messages]


def lint_pairs(pairs: list[PreferencePair]) -> list[Finding]:
    """Pairs that would teach nothing or teach noise: empty sides, identical sides, prompts
    that differ between the two sides (a transcript pair from two conversations), and exact
    duplicates. Errors first.

    >>> [f.code for f in lint_pairs([PreferencePair([{"role": "user", "content": "Hi"}],
    ...                                             "Hello", " hello ", source="p.jsonl:3")])]
    ['identical-sides']
    """
    findings: list[Finding] = []
    seen: dict[tuple, str] = {}
    for pair in pairs:
        empty = [side for side in ("chosen", "rejected") if not getattr(pair, side).strip()]
        for side in empty:
            findings.append(Finding("empty-side", "error", pair.source,
                                    f"the {side} answer is empty",
                                    fix="write the answer, or drop the pair"))  # fmt: skip
        if (
            not empty
            and normalize_text(pair.chosen).lower() == normalize_text(pair.rejected).lower()
        ):
            findings.append(Finding(
                "identical-sides", "error", pair.source,
                "chosen and rejected are the same text: the pair carries no preference",
                fix="drop the pair, or replace one side with a different answer",
            ))  # fmt: skip
        if pair.rejected_prompt is not None and _canon(pair.rejected_prompt) != _canon(pair.prompt):
            findings.append(Finding(
                "prompt-mismatch", "error", pair.source,
                "the chosen and rejected answers reply to different prompts: "
                f"{_first_difference(pair.prompt, pair.rejected_prompt)}",
                fix="pair two answers to the same conversation, or drop the pair",
            ))  # fmt: skip
        key = (
            tuple(_canon(pair.prompt)),
            normalize_text(pair.chosen),
            normalize_text(pair.rejected),
        )
        if key in seen:
            findings.append(Finding("duplicate", "warning", pair.source,
                                    f"exact duplicate of {seen[key]}; it weighs that pair double",
                                    fix="drop one of the two"))  # fmt: skip
        else:
            seen[key] = pair.source
    return sorted(findings, key=lambda f: f.severity != "error")


def _first_difference(a: list[dict[str, str]], b: list[dict[str, str]]) -> str:
    for n, (x, y) in enumerate(zip(a, b, strict=False), start=1):
        if (x["role"], normalize_text(x["content"])) != (y["role"], normalize_text(y["content"])):
            return (
                f"turn {n} reads {x['content'][:40]!r} on the chosen side, "
                f"{y['content'][:40]!r} on the rejected side"
            )
    return f"the chosen side's prompt has {len(a)} turns, the rejected side's {len(b)}"
