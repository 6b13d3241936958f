"""DPO on our own preference set raises the chosen-over-rejected margin on held-out pairs.

    python bench/dpo_margin.py                    # LoRA DPO on the embedded default model
    python bench/dpo_margin.py --steps 30 --beta 0.1

The pairs are Acme support replies (`tuneloop.data.preference_examples`): a courteous reply on
the message's intent is preferred to a curt one or to one about another intent. A seeded split
holds out pairs whose prompts never appear in training. For every held-out pair the margin is
log p(chosen) - log p(rejected) under the model; the script prints its mean and the share of
pairs with a positive margin, for the base model and after DPO training
(bench/results/dpo_margin.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def summary(margins: list[float]) -> dict:
    return {
        "mean_margin": sum(margins) / len(margins),
        "accuracy": sum(m > 0 for m in margins) / len(margins),
        "n": len(margins),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--per-label", type=int, default=12)
    args = parser.parse_args()

    from tuneloop.cli.common import quiet_libraries
    from tuneloop.config import validate_recipe
    from tuneloop.data.preference import read_preferences
    from tuneloop.data.preference_examples import write_support_preferences
    from tuneloop.models.adapters import load_base, load_trained
    from tuneloop.models.load import load_tokenizer, resolve
    from tuneloop.train.dpo import preference_margins
    from tuneloop.train.session import train

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prefs = write_support_preferences(folder / "prefs.jsonl", n_per_label=args.per_label)
        recipe = validate_recipe({
            "name": "dpo-margin",
            "workspace": str(folder / "ws"),
            "data": {"train": str(prefs), "split": {"heldout_fraction": 0.25, "seed": 0}},
            "train": {"method": "lora", "objective": "dpo", "max_steps": args.steps,
                      "batch_size": 4, "lr": args.lr, "max_length": 256, "eval_every": 8,
                      "dpo": {"beta": args.beta}, "checkpoint_every": 1000},
        }).resolved(folder)  # fmt: skip
        run = train(recipe, progress=False, say=print)
        heldout = read_preferences(run.path / "data" / "heldout.jsonl")

        source = resolve(recipe.model.name)
        tokenizer = load_tokenizer(source)
        precision = run.info()["precision"]
        base = load_base(source, recipe.train, precision)
        before = summary(preference_margins(base, tokenizer, heldout, precision=precision))
        tuned = load_trained(load_base(source, recipe.train, precision), run.adapter_dir)
        after = summary(preference_margins(tuned, tokenizer, heldout, precision=precision))
        log = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
        keys = ("step", "eval_loss", "eval_reward_margin", "eval_reward_accuracy")
        evals = [{k: r[k] for k in keys} for r in log if "eval_loss" in r]

    print(f"held-out pairs: {before['n']} (their prompts never seen in training)")
    print(f"base model:  mean margin {before['mean_margin']:+.3f} nats, "
          f"chosen preferred in {before['accuracy']:.0%}")  # fmt: skip
    print(f"after DPO:   mean margin {after['mean_margin']:+.3f} nats, "
          f"chosen preferred in {after['accuracy']:.0%}")  # fmt: skip
    for e in evals:
        print(
            f"  step {e['step']:3}: held-out DPO loss {e['eval_loss']:.4f}, reward margin "
            f"{e['eval_reward_margin']:+.3f}, reward accuracy {e['eval_reward_accuracy']:.0%}"
        )
    out = REPO / "bench" / "results" / "dpo_margin.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "before": before, "after": after, "evals": evals}
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if after["mean_margin"] > before["mean_margin"] else 1


if __name__ == "__main__":
    sys.exit(main())
