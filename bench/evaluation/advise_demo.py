"""`advise` on two tasks: one the few-shot rung already solves, one that every rung fails.

    .venv/bin/python bench/evaluation/advise_demo.py [--work /tmp/tl-bench/advise]

- order-number extraction (generated here): "Order ACM-482913 came damaged, what now?" ->
  "ACM-482913". Shown the answer format by a few examples, the base model copies the number;
- Acme support intents (tuneloop's own example data, 8 intents with deliberate near-borders):
  prompting cannot teach the taxonomy.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_results, write_jsonl, write_recipe  # noqa: E402

TEMPLATES = [
    "Hi, my order {id} still hasn't arrived.",
    "Can you check the status of {id}? Thanks",
    "I was charged twice for {id}.",
    "Order {id} came damaged, what now?",
    "Please cancel {id} before it ships.",
    "Where is package {id}? It's been a week.",
    "{id} is missing an item.",
    "I'd like to return order {id}, the size is wrong.",
    "The tracking for {id} hasn't updated since Monday.",
    "Hello! Quick question about order number {id}: can I change the address?",
    "my parcel {id} went to the wrong house",
    "Good morning, could you send me the invoice for {id}?",
]
EXTRACT = "Extract the order number from the customer message. Answer with the order number only."


def extraction_rows(n: int = 150, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        order = f"ACM-{rng.randint(100000, 999999)}"
        text = TEMPLATES[i % len(TEMPLATES)].format(id=order)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": EXTRACT},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": order},
                ]
            }
        )
    return rows


def run_advise(work: Path, name: str, rows: list[dict], extra: dict) -> dict:
    from tuneloop.config import load_recipe
    from tuneloop.evaluate.advise import advise, format_advice

    data = write_jsonl(work / "data" / f"{name}.jsonl", rows)
    recipe = {
        "name": name,
        "workspace": str(work / ".tuneloop"),
        "data": {"train": str(data)},
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "max_length": 256},
        **extra,
    }
    started = time.perf_counter()
    result = advise(load_recipe(write_recipe(work, recipe)), progress=False, measure_steps=3)
    seconds = round(time.perf_counter() - started, 1)
    print(format_advice(result), f"\n({seconds} s)\n", flush=True)
    return {
        "seconds": seconds,
        "verdict": result.verdict,
        "reasons": result.reasons,
        "rungs": {
            r: {
                "score": s[result.metric],
                "ci": s["ci"][result.metric],
                "n": s["n"],
                "seconds": s["seconds"],
            }
            for r, s in result.rungs.items()
        },
        "estimate": result.estimate,
        "license": result.license.to_dict(),
        "findings": [f.code for f in result.findings],
    }


def main() -> None:
    from tuneloop.data.examples import support_intents

    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/tl-bench/advise"))
    args = parser.parse_args()
    results = {
        "extraction": run_advise(
            args.work,
            "order-extraction",
            extraction_rows(),
            {
                "task": {"kind": "text", "metric": "exact_match"},
                "eval": {"max_new_tokens": 12, "batch_size": 32},
            },
        ),
        "support-intents": run_advise(
            args.work,
            "support-intents",
            [ex.to_json() for ex in support_intents(25, seed=0)],
            {
                "task": {"kind": "label"},
                "eval": {"max_new_tokens": 12, "batch_size": 32, "few_shot_k": 8},
            },
        ),
    }
    save_results("advise_demo", results)


if __name__ == "__main__":
    main()
