"""What makes an exported folder read the same in every program users take it to.

transformers 5 writes two things that transformers 4.x reads differently:

- RoPE only as `rope_parameters` (`{"rope_theta": 100000.0, "rope_type": "default"}`).
  transformers 4.5x looks for `rope_theta` and `rope_scaling`, finds neither, and silently uses
  RoPE base 10000: the model loads and answers wrong. Both conventions are written; each version
  reads its own and they agree (checked under 4.57 and 5.x: bench/export/transformers457.py).
- `tokenizer_class: TokenizersBackend`, a class 4.x does not have, so its tokenizer does not
  load. `PreTrainedTokenizerFast` is the class both versions build from `tokenizer.json`.

The task instruction travels in the chat template: `with_instruction_template` makes the
template give the run's instruction as the system message to a chat that has none, exactly what
`tuneloop eval` and `tuneloop serve` do, so llama.cpp (`--jinja`), vLLM (`--chat-template`) and
`apply_chat_template` prompt the model as it was trained without being told the instruction.
"""

from __future__ import annotations

import json
from pathlib import Path

PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def portable_config(config: dict) -> dict:
    """`config` with RoPE written both ways (5.x `rope_parameters`, 4.x `rope_theta` and
    `rope_scaling`), so both versions build the same rotary embedding:

        {"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}
        -> {"rope_parameters": {...}, "rope_theta": 100000.0, "rope_scaling": None}
    """
    out = dict(config)
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        out["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    return out


def portable_tokenizer_config(config: dict) -> dict:
    """`config` (tokenizer_config.json) with a tokenizer class transformers 4.x and 5.x know."""
    out = dict(config)
    if out.get("tokenizer_class") in (None, "TokenizersBackend"):
        out["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    return out


def make_portable(folder: Path) -> list[str]:
    """Rewrite the config and tokenizer config in `folder` (when present); the files changed."""
    changed = []
    for name, fix in (
        ("config.json", portable_config),
        ("tokenizer_config.json", portable_tokenizer_config),
    ):
        path = Path(folder) / name
        if not path.is_file():
            continue
        before = json.loads(path.read_text())
        after = fix(before)
        if after != before:
            # a new file, not a write into the old one: it may be a hard link into a cache
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(json.dumps(after, indent=2, sort_keys=True) + "\n")
            tmp.replace(path)
            changed.append(name)
    return changed


def with_instruction_template(template: str, instruction: str | None) -> str:
    """The chat template, preceded by a statement that gives a chat without a system message
    the task instruction as one (jinja2 and llama.cpp's minja read it alike):

        {%- if messages and messages[0]['role'] != 'system' -%}
        {%- set messages = [{'role': 'system', 'content': "Name the intent."}] + messages -%}
        {%- endif %}<the template>
    """
    if not instruction:
        return template
    literal = json.dumps(instruction, ensure_ascii=False)  # a valid Jinja string literal
    return (
        "{%- if messages and messages[0]['role'] != 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages -%}}"
        "{%- endif %}" + template
    )
