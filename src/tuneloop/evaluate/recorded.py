"""A recorded rung: answers a system gave once, read from a file, scored like any other rung.

For a system that cannot be called any more (last year's production model, a vendor's
fine-tune being retired), its answers to the held-out items are kept as JSONL, one a line:

    {"id": 17, "answer": "card_arrival"}
    {"prompt": "Where is my card?", "answer": "card_arrival", "latency_s": 0.8,
     "prompt_tokens": 31, "completion_tokens": 3}

An answer is matched to its item by `id` (the item's `meta.id`) or, failing that, by `prompt`
(the item's last user turn, compared with whitespace collapsed). Latency and token counts are
optional: where given, they are costed like an endpoint's. Every held-out item needs an answer:
one that has none is an error that names it, never a silent zero.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import RecordedConfig
from tuneloop.data.jsonlines import parse_jsonl, read_text
from tuneloop.data.records import Example, normalize_text
from tuneloop.errors import DataError, UserError

USAGE_KEYS = ("latency_s", "prompt_tokens", "completion_tokens")


def _question(example: Example) -> str:
    user = [m["content"] for m in example.prompt_messages if m["role"] == "user"]
    return normalize_text(user[-1] if user else "")


def read_recorded(path: Path) -> tuple[dict[str, tuple[int, dict]], dict[str, tuple[int, dict]]]:
    """The file's answers by id and by normalised prompt, each with its line."""
    by_id: dict[str, tuple[int, dict]] = {}
    by_prompt: dict[str, tuple[int, dict]] = {}
    for line, obj in parse_jsonl(path, read_text(path)):
        if not isinstance(obj, dict) or not isinstance(obj.get("answer"), str):
            raise DataError(path, line, "a recorded answer needs a string `answer`",
                            'write {"id": ..., "answer": "..."} or {"prompt": ..., '
                            '"answer": "..."}')  # fmt: skip
        if "id" not in obj and not isinstance(obj.get("prompt"), str):
            raise DataError(
                path, line, "a recorded answer names neither `id` nor `prompt`",
                "add the item's `id` (its meta.id) or its `prompt` (the question)",
            )  # fmt: skip
        keyed = [("id", obj.get("id"), by_id), ("prompt", obj.get("prompt"), by_prompt)]
        for name, key, table in keyed:
            if key is None:
                continue
            key = str(key) if name == "id" else normalize_text(key)
            if key in table and table[key][1]["answer"] != obj["answer"]:
                raise DataError(
                    path, line,
                    f"a second, different answer for the same {name} (the first is on line "
                    f"{table[key][0]})",
                    "keep one answer per item",
                )  # fmt: skip
            table[key] = (line, obj)
    return by_id, by_prompt


def recorded_answers(config: RecordedConfig, items: list[Example]) -> tuple[list[str], list[dict]]:
    """The recorded answer to each item and its usage (what the file says of latency and
    tokens; `cached` is true: nothing was asked)."""
    by_id, by_prompt = read_recorded(config.path)
    answers, usage, missing = [], [], []
    for ex in items:
        found = by_id.get(str(ex.meta["id"])) if "id" in ex.meta else None
        found = found or by_prompt.get(_question(ex))
        if found is None:
            missing.append(ex.source or _question(ex)[:60])
            answers.append("")
            usage.append({})
            continue
        obj = found[1]
        answers.append(obj["answer"])
        usage.append({k: obj[k] for k in USAGE_KEYS if isinstance(obj.get(k), int | float)}
                     | {"cached": True})  # fmt: skip
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise UserError(
            f"the recorded rung `{config.name}` has no answer for {len(missing)} of "
            f"{len(items)} held-out items: {shown}",
            str(config.path),
            "record an answer for every held-out item (matched by `id`, the item's meta.id, "
            "or by `prompt`, its question), or evaluate the rung on the items it has",
        )
    return answers, usage
