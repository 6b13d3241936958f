"""GRPO on arithmetic with a checkable answer raises the held-out score of the embedded model.

    .venv/bin/python bench/grpo_arithmetic.py [--work /tmp/tl-bench/grpo] [--steps 40]

The task, generated here with a seed: sums and products of two digits 1-9 asked as "What is 7 times
8? Answer with the number only." (GSM8K-style arithmetic at the size SmolLM2-135M-Instruct gets
partly right: it knows many facts, but often starts explaining and runs out of tokens). The
grader is the recipe's `task.metric`, the same for training and the gate:

    {regex: '-?\\d+', compare: reference, name: answer}   # the last number equals the answer

GRPO (LoRA, group 8, 3 prompts a step) trains on 400 prompts (108 facts in four wordings);
the gate then scores the base model zero-shot and the tuned model on 200 held-out prompts (the
other 54 facts, never seen in training in any wording) with the same grader, paired, and
prints its verdict. Writes bench/results/grpo_arithmetic.json: the recipe, steps, seconds, the
reward curve (mean reward and KL per step) and the gate's numbers; and the curve as
docs/images/grpo_arithmetic.png.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "evaluation"))
from common import train_and_gate, write_jsonl, write_recipe  # noqa: E402

GRADER = {"regex": r"-?\d+", "compare": "reference", "name": "answer"}


WORDINGS = (
    "What is {a} {w} {b}?",
    "Compute {a} {w} {b}.",
    "How much is {a} {w} {b}?",
    "Calculate {a} {w} {b}.",
)


def arithmetic(facts: list[tuple[int, int, str]]) -> list[dict]:
    """Every fact (a, b, "+" or "x") in every wording, as chats with the answer."""
    rows = []
    for a, b, op in facts:
        for wording in WORDINGS:
            word = "plus" if op == "+" else "times"
            question = wording.format(a=a, b=b, w=word) + " Answer with the number only."
            answer = a + b if op == "+" else a * b
            rows.append({"messages": [{"role": "user", "content": question},
                                      {"role": "assistant", "content": str(answer)}],
                         "meta": {"op": "sum" if op == "+" else "product"}})  # fmt: skip
    return rows


def plot_curve(curve: list[dict], base: float, tuned: float, path: Path) -> None:
    """Mean reward and KL per step, with the held-out scores of the base and the tuned model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in curve]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
    top.plot(steps, [c["reward"] for c in curve], marker="o", ms=3, label="mean reward (train)")
    top.axhline(base, color="grey", ls="--", label=f"held-out, base {base:.1%}")
    top.axhline(tuned, color="green", ls="--", label=f"held-out, tuned {tuned:.1%}")
    top.set_ylim(0, 1.05)
    top.set_ylabel("reward")
    top.legend(loc="lower right", fontsize=8)
    bottom.plot(steps, [c["kl"] for c in curve], color="tab:red", marker="o", ms=3)
    bottom.set_ylabel("KL to base")
    bottom.set_xlabel("step (3 prompts x 8 completions)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tl-bench/grpo"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()

    from tuneloop.cli.common import quiet_libraries

    quiet_libraries()
    # 162 facts; a third held out, so no held-out fact is in training in any wording.
    facts = [(a, b, op) for a in range(1, 10) for b in range(1, 10) for op in ("+", "x")]
    random.Random(0).shuffle(facts)
    train_rows, heldout_rows = arithmetic(facts[54:]), arithmetic(facts[:54])
    random.Random(1).shuffle(train_rows)
    random.Random(2).shuffle(heldout_rows)
    train_rows, heldout_rows = train_rows[:400], heldout_rows[:200]
    data = args.work / "data"
    write_jsonl(data / "train.jsonl", train_rows)
    write_jsonl(data / "heldout.jsonl", heldout_rows)
    recipe = {
        "name": "grpo-arithmetic",
        "workspace": str(args.work / "ws"),
        "data": {"train": str(data / "train.jsonl"), "heldout": str(data / "heldout.jsonl")},
        # A short system prompt instead of the model's default one: shorter rows, faster steps.
        "task": {"kind": "text", "metric": GRADER, "instruction": "You are a calculator."},
        "train": {
            "method": "lora",
            "objective": "grpo",
            "max_steps": args.steps,
            "batch_size": 3,
            "lr": args.lr,
            "warmup_ratio": 0.0,
            "schedule": "constant",
            "checkpoint_every": 10,
            "lora": {
                "r": 16,
                "alpha": 32,
                "dropout": 0.0,
                "target_modules": [
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "up_proj",
                    "down_proj",
                    "gate_proj",
                ],
            },
            "grpo": {"group_size": 8, "max_completion_tokens": 8, "temperature": 1.0, "beta": 0.04},
        },  # fmt: skip
        "eval": {"max_new_tokens": 8, "batch_size": 50, "train_sample": 0},
        "gate": {"rungs": ["zero-shot"], "margin": 0.0},
    }
    path = write_recipe(args.work, recipe)
    run, report, results = train_and_gate(path, recipe, "bench/grpo_arithmetic.py", sys.argv[1:])
    keys = ("step", "reward", "reward_std", "kl", "completion_length", "clip_fraction", "loss")
    records = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    results["curve"] = curve = [{k: r[k] for k in keys} for r in records]
    out = REPO / "bench" / "results" / "grpo_arithmetic.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    figure = REPO / "docs" / "images" / "grpo_arithmetic.png"
    plot_curve(curve, results["heldout"]["base"], results["heldout"]["tuned"], figure)
    print(f"results: {out}, {figure}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
