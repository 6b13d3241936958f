"""System prompts that differ across examples: the model learns one behaviour per prompt, and
is evaluated with the prompt of the held-out items.

When most examples share one system prompt (or most have none), every other variant is named
once, at its first example, with how many examples use it:

    warning  system-prompt  train.jsonl:41  2 examples use another system prompt,
             'You are a helpful bank assistant.', than the 310 that use
             'Classify the support message.' (first at train.jsonl:1)

When there is no majority prompt (each example carries its own, as in instruction-following
sets), only a mix of examples with and without a system prompt is reported. The recipe's
`task.instruction` is the system prompt of examples that have none, so it is applied first.
"""

from __future__ import annotations

from collections import Counter

from tuneloop.data.findings import Finding, LintOptions, shorten
from tuneloop.data.records import Example, normalize_text
from tuneloop.data.templates import example_with_instruction

MAX_VARIANTS = 10  # variants named one by one; the rest are counted in one finding


def system_prompt(example: Example) -> str | None:
    first = example.messages[0]
    return normalize_text(first["content"]) if first["role"] == "system" else None


def check_system_prompts(
    train: list[Example], heldout: list[Example], options: LintOptions
) -> list[Finding]:
    examples = [example_with_instruction(ex, options.instruction) for ex in [*train, *heldout]]
    n_train = len(train)
    prompts = [system_prompt(ex) for ex in examples]
    counts = Counter(prompts)
    if len(counts) <= 1:
        return []
    first: dict[str | None, int] = {}
    for i, prompt in enumerate(prompts):
        first.setdefault(prompt, i)
    common, n_common = counts.most_common(1)[0]
    if n_common * 2 <= len(examples):
        return _mixed_presence(examples, prompts, counts, first)
    in_train = set(prompts[:n_train])
    findings = []
    variants = sorted((p for p in counts if p != common), key=first.__getitem__)
    for prompt in variants[:MAX_VARIANTS]:
        i = first[prompt]
        used = "no system prompt" if prompt is None else f"the system prompt {shorten(prompt)}"
        majority = "none" if common is None else shorten(common)
        only_heldout = prompt not in in_train
        message = (
            f"{counts[prompt]} example(s) have {used}, while {n_common} have "
            f"{majority} (first at {examples[first[common]].source})"
        )
        if only_heldout:
            message += "; held-out only: the model is evaluated on a prompt it never trained on"
        findings.append(
            Finding(
                "system-prompt",
                "warning",
                examples[i].source,
                message,
                fix="use one system prompt for the task (or set task.instruction and drop the "
                "per-example ones), unless the examples really are different tasks",
                related=examples[first[common]].source,
            )
        )
    if len(variants) > MAX_VARIANTS:
        rest = variants[MAX_VARIANTS:]
        findings.append(
            Finding(
                "system-prompt",
                "warning",
                examples[first[rest[0]]].source,
                f"... and {len(rest)} more system-prompt variants "
                f"({sum(counts[p] for p in rest)} examples)",
            )
        )
    return findings


def _mixed_presence(
    examples: list[Example],
    prompts: list[str | None],
    counts: Counter,
    first: dict[str | None, int],
) -> list[Finding]:
    missing = counts.get(None, 0)
    if missing == 0:
        return []  # every example has its own prompt: a property of the data, not a mistake
    having = len(examples) - missing
    return [
        Finding(
            "system-prompt",
            "warning",
            examples[first[None]].source,
            f"{missing} example(s) have no system prompt while {having} have one "
            f"({len(counts) - 1} different)",
            fix="give every example a system prompt, or set task.instruction as the default",
        )
    ]
