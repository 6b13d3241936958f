"""Token lengths with the model's own tokenizer and chat template, against `max_length`.

Each example is rendered and masked exactly as training does (`templates.tokenize_example`),
and every example longer than `max_length` goes through the training truncation policy
(`templates.apply_truncation`) to see what would happen to it:

    warning  too-long     train.jsonl:12  700 tokens > max_length 512: `truncate_right` keeps
                                          the first 512, 3 of 9 answer tokens
    warning  target-lost  train.jsonl:40  900 tokens > max_length 512: after `truncate_right`
                                          no answer token is left, so it trains nothing and
                                          is dropped
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.data.findings import Finding, LintOptions, files_of
from tuneloop.data.records import Example
from tuneloop.data.templates import (
    TokenizedExample,
    TruncationReport,
    apply_truncation,
    example_with_instruction,
    tokenize_example,
)
from tuneloop.errors import UserError

FIX_LENGTH = "raise train.max_length (--max-length), shorten the example, or drop it"


@dataclass
class Lengths:
    """Every example tokenized, and what the truncation policy did to the whole set."""

    items: list[TokenizedExample]
    report: TruncationReport

    @property
    def lengths(self) -> list[int]:
        return [len(item.input_ids) for item in self.items]


def measure(
    tokenizer, examples: list[Example], max_length: int, policy: str, instruction: str | None = None
) -> Lengths:
    """Tokenize as training would (the task instruction as default system prompt) and apply
    the truncation policy, without changing anything."""
    items = [
        tokenize_example(tokenizer, example_with_instruction(ex, instruction)) for ex in examples
    ]
    _, report = apply_truncation(items, max_length, policy)
    return Lengths(items, report)


def check_token_lengths(
    train: list[Example], heldout: list[Example], options: LintOptions
) -> list[Finding]:
    """Each training example over `max_length`, and what the policy makes of it. Skipped when
    no tokenizer is given (`tuneloop data lint --model`)."""
    if options.tokenizer is None or not train:
        return []
    limit, policy = options.max_length, options.truncation
    try:
        measured = measure(options.tokenizer, train, limit, policy, options.instruction)
    except UserError as e:  # a template that cannot render the data (tool calls): say so
        problem = e.problems[0]
        return [Finding("chat-template", "error", files_of(train), problem.what, fix=problem.fix)]
    findings = []
    for item in measured.items:
        n = len(item.input_ids)
        if n <= limit:
            continue
        kept, one = apply_truncation([item], limit, policy)
        head = f"{n} tokens > max_length {limit}: "
        if one.lost_target:
            findings.append(
                Finding(
                    "target-lost",
                    "warning",
                    item.source,
                    head + f"after `{policy}` no answer token is left, so it trains nothing "
                    "and is dropped",
                    fix=FIX_LENGTH + "; `truncate_left` keeps the answer and cuts the prompt",
                )
            )
        elif one.dropped:
            findings.append(
                Finding(
                    "too-long",
                    "warning",
                    item.source,
                    head + f"policy `{policy}` drops it from training",
                    fix=FIX_LENGTH,
                )
            )
        else:
            findings.append(
                Finding(
                    "too-long",
                    "warning",
                    item.source,
                    head + f"`{policy}` keeps {limit} tokens, {kept[0].n_supervised} of "
                    f"{item.n_supervised} answer tokens",
                    fix=FIX_LENGTH,
                )
            )
    report = measured.report
    if report.kept == 0:
        findings.append(
            Finding(
                "no-trainable-examples",
                "error",
                files_of(train),
                f"no example is left to train on: {report.summary()}",
                fix=FIX_LENGTH,
            )
        )
    return findings
