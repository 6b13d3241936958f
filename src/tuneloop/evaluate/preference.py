"""How a DPO run ranks its held-out pairs: reward accuracy and reward margin.

DPO's implicit reward of an answer y to a prompt x (Rafailov et al. 2023, arXiv:2305.18290) is

    r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))

with pi the tuned model and pi_ref the base it started from: as in training, the same weights
with the adapter switched off (no second copy), or for full fine-tuning the base model itself.
A pair's margin is r(x, y_chosen) - r(x, y_rejected); it is `correct` when the margin is
positive, and the reward accuracy is the share of correct pairs. The generation rungs ask
whether the tuned model *writes* the chosen answer; this asks whether it *ranks* the chosen
answer above the rejected one, which is what DPO trains.

    eval/preference.json    {"n": 16, "beta": 0.1,
                             "reward_accuracy": 0.75, "reward_accuracy_ci": [0.51, 0.9],
                             "margin_mean": 0.42, "margin_ci": [0.18, 0.66],
                             "base_margin_mean": -0.03}
    eval/preference.jsonl   one line per pair: {"prompt", "chosen_reward", "rejected_reward",
                            "margin", "correct"}

`base_margin_mean` is the base model's own preference on the same scale,
beta * (log pi_ref(y_chosen|x) - log pi_ref(y_rejected|x)) averaged over the pairs; the tuned
model's is `base_margin_mean + margin_mean`. Intervals: Wilson for the accuracy, a percentile
bootstrap for the mean margin, at the recipe's `eval.confidence`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tuneloop.config import Recipe
from tuneloop.data.preference import PreferencePair
from tuneloop.data.prepare import run_pairs
from tuneloop.evaluate.stats import mean_ci
from tuneloop.files import write_json, write_text
from tuneloop.workspace import Run

SUMMARY = "preference.json"
ITEMS = "preference.jsonl"


@dataclass
class PreferenceResult:
    summary: dict
    items: list[dict]


def heldout_pairs(run: Run, recipe: Recipe) -> list[PreferencePair]:
    """The DPO run's held-out pairs: the same items, in the same order, as its held-out rungs."""
    pairs = run_pairs(recipe, run.path / "data", "heldout")
    return pairs[: recipe.eval.max_items] if recipe.eval.max_items else pairs


def evaluate_preferences(
    model,
    tokenizer,
    pairs: list[PreferencePair],
    recipe: Recipe,
    precision: str,
    reference=None,
) -> PreferenceResult:
    """Implicit rewards of both answers of every pair under the tuned `model`, against
    `reference` (None: `model` with its adapter switched off)."""
    from tuneloop.train.dpo import answer_logps

    beta, ev = recipe.train.dpo.beta, recipe.eval
    policy = answer_logps(model, tokenizer, pairs, ev.batch_size, precision)  # (P, 2)
    if reference is None:
        with model.disable_adapter():  # PEFT: the base model, for these forwards only
            ref = answer_logps(model, tokenizer, pairs, ev.batch_size, precision)
    else:
        ref = answer_logps(reference, tokenizer, pairs, ev.batch_size, precision)
    rewards = beta * (policy - ref)  # (P, 2): chosen, rejected
    margins = (rewards[:, 0] - rewards[:, 1]).tolist()
    correct = [m > 0 for m in margins]
    accuracy = mean_ci([float(c) for c in correct], ev.confidence, ev.bootstrap, ev.seed)
    margin = mean_ci(margins, ev.confidence, ev.bootstrap, ev.seed, bootstrap=True)
    base_margins = beta * (ref[:, 0] - ref[:, 1])
    summary = {
        "n": len(pairs),
        "beta": beta,
        "reward_accuracy": accuracy.value,
        "reward_accuracy_ci": [accuracy.low, accuracy.high],
        "margin_mean": margin.value,
        "margin_ci": [margin.low, margin.high],
        "base_margin_mean": float(base_margins.mean()),
    }
    items = [
        {
            "prompt": pair.prompt[-1]["content"],
            "chosen_reward": float(r[0]),
            "rejected_reward": float(r[1]),
            "margin": m,
            "correct": c,
        }
        for pair, r, m, c in zip(pairs, rewards.tolist(), margins, correct, strict=True)
    ]
    return PreferenceResult(summary, items)


def evaluate_run_preferences(
    run: Run, recipe: Recipe, tuned, base, tokenizer, precision: str
) -> dict:
    """Rank the run's held-out pairs with its `tuned` model, save and return the summary.
    The reference is the base as in training: `tuned` with its adapter off, or `base` itself
    for full fine-tuning (which has no adapter to switch off)."""
    reference = base if recipe.train.method == "full" else None
    pairs = heldout_pairs(run, recipe)
    result = evaluate_preferences(tuned, tokenizer, pairs, recipe, precision, reference)
    save_preferences(run, result)
    return result.summary


def save_preferences(run: Run, result: PreferenceResult) -> None:
    lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in result.items)
    write_text(run.eval_dir / ITEMS, lines)
    write_json(run.eval_dir / SUMMARY, result.summary)
    from tuneloop.registry import record

    record.evaluation(run.path, run.id, "tuned", "preference", result.summary, run.eval_dir / ITEMS)


def load_preference(run: Run) -> dict | None:
    """The run's `eval/preference.json`, or None when it has none (not a DPO run, or its tuned
    model has not been evaluated yet)."""
    path = run.eval_dir / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None
