"""Render chats with the model's own chat template and mark which tokens the loss sees.

Only assistant tokens are supervised, and each assistant turn's end-of-turn token is
supervised too, so the model learns to stop. With SmolLM2's ChatML template:

    <|im_start|>system\\nClassify the message.<|im_end|>\\n<|im_start|>user\\nI forgot my
    password<|im_end|>\\n<|im_start|>assistant\\nreset_password<|im_end|>\\n
                                                 ^^^^^^^^^^^^^^^^^^^^^^^^^^
                                                 labels; every other token is -100

The trailing newline after `<|im_end|>` is not trained: generation stops at `<|im_end|>`.
Inference renders prompts with the very same template (`render_prompt`), ending with the
assistant header, so the model sees at inference exactly what it saw in training.

A chat from OpenAI's fine-tuning format (`tuneloop.data.tooluse`) is rendered with its `tools`
passed to the template, and its tool calls in the template's own spelling. A turn that calls a
tool is trained like any answer (with `chatml-tools`: `<tool_call>...</tool_call><|im_end|>`);
an assistant turn of `"weight": 0` is not trained at all, and tool results never are. A
template that cannot render tool use is refused (`chat_templates.check_renders_tools`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from tuneloop.data.chat_templates import check_renders_tools
from tuneloop.data.records import Example
from tuneloop.data.tooluse import template_messages, uses_tools
from tuneloop.errors import UserError

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where the loss is not computed
    source: str = ""

    @property
    def n_supervised(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass
class TruncationReport:
    """What the truncation policy did, so it is never silent."""

    policy: str
    max_length: int
    total: int = 0
    kept: int = 0
    truncated: int = 0  # kept, but shortened
    dropped: int = 0  # removed entirely
    lost_target: int = 0  # would have had no supervised token left
    dropped_sources: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> TruncationReport:
        return cls(**d)

    def summary(self) -> str:
        if self.truncated == 0 and self.dropped == 0:
            return f"all {self.total} examples fit in max_length={self.max_length}"
        return (
            f"{self.dropped} dropped and {self.truncated} truncated of {self.total} examples "
            f"longer than max_length={self.max_length} (policy `{self.policy}`)"
        )


def with_instruction(messages: list[dict], instruction: str | None) -> list[dict]:
    """The task instruction (`task.instruction`) as the system message of a chat that has none;
    a chat with its own system message keeps it. The one rule that training, evaluation,
    distillation, serving and export apply, so a model is asked as it was trained.

        >>> with_instruction([{"role": "user", "content": "I lost my card"}], "Classify.")
        [{'role': 'system', 'content': 'Classify.'}, {'role': 'user', 'content': 'I lost my card'}]
    """
    if not instruction or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": instruction}, *messages]


def example_with_instruction(example: Example, instruction: str | None) -> Example:
    """The example with `with_instruction` applied to its chat."""
    messages = with_instruction(example.messages, instruction)
    if messages is example.messages:
        return example
    return replace(example, messages=messages)


def render_chat(
    tokenizer, messages: list[dict], tools: list[dict] | None = None, generation: bool = False
) -> str:
    """The chat as the model's template renders it, with the `tools` offered; `generation`
    adds the assistant header. A chat with tool use first checks that the template can
    render it (a `UserError` naming `model.chat_template` if not)."""
    if uses_tools(messages, tools):
        check_renders_tools(tokenizer)
    extra = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        template_messages(messages), add_generation_prompt=generation, tokenize=False, **extra
    )


def render_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The text inference feeds the model: the chat so far plus the assistant header."""
    return render_chat(tokenizer, messages, tools, generation=True)


def assistant_spans(
    tokenizer, messages: list[dict], tools: list[dict] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans of every assistant turn (content + end token),
    weight-0 turns included (`tokenize_example` leaves them out of the loss).

    A span runs from the end of the prompt rendered up to that turn (with the assistant header)
    to the end of the chat rendered through that turn, minus trailing whitespace. Templates that
    do not end a turn with the end-of-sequence token get it appended, so every turn can stop.
    The `tools` are rendered in every prefix, as in the whole chat, so the prefixes still agree.
    """
    text = render_chat(tokenizer, messages, tools)
    eos = tokenizer.eos_token
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_prompt(tokenizer, messages[:i], tools)
        through = render_chat(tokenizer, messages[: i + 1], tools)
        if not (text.startswith(before) and text.startswith(through)):
            raise UserError(
                "the model's chat template renders a conversation differently depending on "
                "what follows it, so assistant tokens cannot be located for the loss mask",
                "model.name",
                "use a model whose chat template renders each turn independently",
            )
        end = len(through.rstrip())
        if eos and not through[:end].endswith(eos):
            text = text[:end] + eos + text[end:]
            end += len(eos)
        spans.append((len(before), end))
    return text, spans


def tokenize_example(tokenizer, example: Example) -> TokenizedExample:
    """Token ids and labels for one chat, with loss only on assistant spans of weight 1.

    A token is supervised when its characters overlap the span of an assistant turn that does
    not carry `"weight": 0`; a tool-call turn's span is its rendered calls.
    """
    text, every = assistant_spans(tokenizer, example.messages, example.tools)
    weights = [m.get("weight", 1) for m in example.messages if m["role"] == "assistant"]
    spans = [span for span, weight in zip(every, weights, strict=True) if weight != 0]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [IGNORE_INDEX] * len(enc["input_ids"])
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if any(start < s_end and end > s_start for s_start, s_end in spans):
            labels[t] = enc["input_ids"][t]
    return TokenizedExample(list(enc["input_ids"]), labels, example.source)


def apply_truncation(
    items: list[TokenizedExample], max_length: int, policy: str
) -> tuple[list[TokenizedExample], TruncationReport]:
    """Enforce max_length with an explicit policy and count what it did.

    `drop` removes long examples; `truncate_right` cuts their end (the answer may lose its
    end-of-turn token); `truncate_left` cuts the start of the prompt and keeps the answer.
    An example left without any supervised token is always dropped: it would train nothing.
    """
    report = TruncationReport(policy=policy, max_length=max_length, total=len(items))
    kept: list[TokenizedExample] = []
    for item in items:
        if len(item.input_ids) <= max_length:
            kept.append(item)
            continue
        if policy == "drop":
            report.dropped += 1
            report.dropped_sources.append(item.source)
            continue
        cut = slice(0, max_length) if policy == "truncate_right" else slice(-max_length, None)
        short = TokenizedExample(item.input_ids[cut], item.labels[cut], item.source)
        if short.n_supervised == 0:
            report.lost_target += 1
            report.dropped += 1
            report.dropped_sources.append(item.source)
            continue
        report.truncated += 1
        kept.append(short)
    report.kept = len(kept)
    return kept, report


def tokenize_dataset(
    tokenizer, examples: list[Example], max_length: int, policy: str
) -> tuple[list[TokenizedExample], TruncationReport]:
    items = [tokenize_example(tokenizer, ex) for ex in examples]
    kept, report = apply_truncation(items, max_length, policy)
    if not kept:
        raise UserError(
            f"no training example is left after truncation: {report.summary()}",
            "train.max_length",
            "raise train.max_length, or use train.truncation: truncate_left",
        )
    return kept, report


def length_histogram(items: list[TokenizedExample], bucket: int = 64) -> dict[int, int]:
    counts = Counter((len(i.input_ids) // bucket) * bucket for i in items)
    return dict(sorted(counts.items()))
