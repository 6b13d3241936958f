"""A reward model trained on preference pairs from real customer messages ranks held-out pairs
above chance, and above the base model's own ranking.

    .venv/bin/python bench/reward_banking77.py [--work /tmp/tl-bench/reward] [--steps 80]

The pairs come from banking77 (../shared/data/banking77, real online-banking customer messages,
each labelled with one of 77 intents): the prompt is the message, the chosen answer its labelled
intent, the rejected answer another intent drawn at random (seeded). Training pairs come from
train.csv, held-out pairs from test.csv, so no held-out message is seen in training.

`train.objective: reward` trains a LoRA adapter and a score head on the embedded model with the
Bradley-Terry loss; the gate then ranks every held-out pair with the reward model and with the
base model (log p(chosen) > log p(rejected)), paired, and asks that the reward model beat the base
and chance with its confidence interval. Writes bench/results/reward_banking77.json: the recipe,
the loss curve, seconds and the gate's numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "evaluation"))
from common import BANKING77, train_and_gate, write_jsonl, write_recipe  # noqa: E402


def pairs(path: Path, n: int, seed: int) -> list[dict]:
    """`n` preference pairs from a banking77 csv: the labelled intent over a random other one."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    labels = sorted({r["category"] for r in rows})
    rng = random.Random(seed)
    rng.shuffle(rows)
    out = []
    for r in rows[:n]:
        other = rng.choice([label for label in labels if label != r["category"]])
        out.append({"prompt": r["text"], "chosen": r["category"].replace("_", " "),
                    "rejected": other.replace("_", " ")})  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tl-bench/reward"))
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--train-pairs", type=int, default=640)
    parser.add_argument("--heldout-pairs", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()

    from tuneloop.cli.common import quiet_libraries

    quiet_libraries()
    data = args.work / "data"
    write_jsonl(data / "train.jsonl", pairs(BANKING77 / "train.csv", args.train_pairs, 0))
    write_jsonl(data / "heldout.jsonl", pairs(BANKING77 / "test.csv", args.heldout_pairs, 1))
    recipe = {
        "name": "reward-banking77",
        "workspace": str(args.work / "ws"),
        "data": {"train": str(data / "train.jsonl"), "heldout": str(data / "heldout.jsonl")},
        "task": {"instruction": "Name the intent of the customer's message."},
        "train": {
            "method": "lora",
            "objective": "reward",
            "max_steps": args.steps,
            "batch_size": 8,
            "lr": args.lr,
            "eval_every": 20,
            "checkpoint_every": 1000,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        },
        "eval": {"batch_size": 32},
    }
    path = write_recipe(args.work, recipe)
    run, report, results = train_and_gate(path, recipe, "bench/reward_banking77.py", sys.argv[1:])
    results["curve"] = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    out = REPO / "bench" / "results" / "reward_banking77.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
