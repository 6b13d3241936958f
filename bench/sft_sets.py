"""Generated SFT sets without the favourable case: no prompt prefix shared by a batch.

banking77 with one system instruction gives every example the same first 80 of its 106 tokens,
which prefix sharing (`train.share_prefix`) runs once per batch. The two sets here are built
from the same banking77 queries so that they stay learnable, but every example has its own
system prompt (the chat template would otherwise insert SmolLM's default one, 20 tokens all
examples share):

varied    instructions of different wording and length, 38-490 tokens, short answers:

    system     "Each numbered line below is a message a bank received. Reply with the intent…"
    user       "1. I am still waiting on my card?\\n2. How do I top up by card?\\n…\\nMessage 2?"
    assistant  "top_up_by_card"

long      answers longer than their prompts (99% of examples; 68-434 tokens, median 171):

    system     "You draft example messages for a bank's support team."
    user       "Write 6 messages a customer might send about: card arrival."
    assistant  "I am still waiting on my card?\\nWhat can I do if my card still hasn't…"

    from sft_sets import make_set
    train, heldout = make_set("varied", n_train=64, n_heldout=48, seed=0)
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

BANKING77 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"

# Each wording starts differently, so no batch shares a prefix long enough to run once.
VARIED_SYSTEMS = [
    "Each numbered line below is a message a bank received. Reply with the intent label of "
    "the message the user asks about, and nothing else.",
    "You label customer support messages for a bank.",
    "Banking assistant. Task: intent classification of one message out of a list. Output the "
    "label in snake_case only.",
    "Read the list of customer queries. The last line names one of them; answer with its intent.",
    "Intent tagging. Answer with a single label such as card_arrival or top_up_failed.",
    "Customer messages follow, one per numbered line. Which intent does the requested one "
    "have? Give the label only, no explanation, no punctuation.",
    "As a support triage model, return the intent label of the message the question points at.",
    "Please classify.",
]
VARIED_QUESTIONS = [
    "Message {j}?",
    "What is the intent of message {j}?",
    "Label line {j}.",
    "Which intent does number {j} express? Label only.",
]
LONG_SYSTEMS = [
    "You draft example messages for a bank's support team.",
    "Write realistic customer queries, one per line, no numbering.",
    "Generate training data: short messages bank customers send.",
    "Synthetic query writer for a banking chatbot.",
    "Customers of an online bank write to support. Imitate them.",
    "Produce plausible user questions.",
]


def queries(source: str = "train.csv") -> dict[str, list[str]]:
    """banking77 queries by intent label, in file order."""
    by_label: dict[str, list[str]] = {}
    with open(BANKING77 / source, newline="") as f:
        for row in csv.DictReader(f):
            by_label.setdefault(row["category"], []).append(" ".join(row["text"].split()))
    return by_label


def varied_example(rng: random.Random, pool: list[tuple[str, str]]) -> dict:
    """1 to 20 numbered queries (38-490 tokens with the template, median 135); the answer is
    the intent of one of them."""
    k = min(20, max(1, int(rng.paretovariate(1.0) * 2)))  # many short, a tail of long prompts
    if rng.random() < 0.35:
        k = rng.randint(1, 20)
    chosen = rng.sample(pool, k)
    j = rng.randint(1, k)
    lines = "\n".join(f"{i}. {text}" for i, (text, _) in enumerate(chosen, 1))
    question = rng.choice(VARIED_QUESTIONS).format(j=j)
    return {"messages": [
        {"role": "system", "content": rng.choice(VARIED_SYSTEMS)},
        {"role": "user", "content": f"{lines}\n{question}"},
        {"role": "assistant", "content": chosen[j - 1][1]},
    ]}  # fmt: skip


def long_example(rng: random.Random, by_label: dict[str, list[str]]) -> dict:
    """A short request, an answer of 4-16 queries of one intent (longer than the prompt)."""
    label = rng.choice(sorted(by_label))
    k = rng.randint(4, 16)
    answer = "\n".join(rng.sample(by_label[label], min(k, len(by_label[label]))))
    return {"messages": [
        {"role": "system", "content": rng.choice(LONG_SYSTEMS)},
        {"role": "user", "content": f"Write {k} messages a customer might send about: "
                                    f"{label.replace('_', ' ')}."},
        {"role": "assistant", "content": answer},
    ]}  # fmt: skip


def make_set(name: str, n_train: int, n_heldout: int, seed: int = 0) -> tuple[list, list]:
    """(train rows, held-out rows) of chat messages; held-out queries come from test.csv, and
    no held-out prompt is also a train prompt (tuneloop refuses such a leak)."""
    if name not in ("varied", "long"):
        raise ValueError(f"unknown set {name!r}: varied or long")
    rows, seen = [], set()
    for source, n, offset in (("train.csv", n_train, 0), ("test.csv", n_heldout, 1)):
        rng = random.Random(f"{name}:{seed}:{offset}")
        by_label = queries(source)
        pool = [(t, label) for label, texts in sorted(by_label.items()) for t in texts]
        made = []
        while len(made) < n:
            row = varied_example(rng, pool) if name == "varied" else long_example(rng, by_label)
            prompt = json.dumps(row["messages"][:-1])
            if offset == 0 or prompt not in seen:
                seen.add(prompt)
                made.append(row)
        rows.append(made)
    return rows[0], rows[1]
