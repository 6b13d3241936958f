"""How a reward model ranks its held-out pairs, against the base model's own ranking.

A reward run (`train.objective: reward`) cannot answer prompts, so its evaluation is a ranking:
for every held-out pair, whether the reward model scores the chosen answer above the rejected
one. The baseline on the same pairs is the base language model's preference, log p(chosen) >
log p(rejected). Both are written as rungs, one 0/1 `pair_accuracy` per pair, so `tuneloop
compare` pairs them like any other rungs:

    eval/zero-shot.json(l)   the base model's ranking
    eval/tuned.json(l)       the reward model's ranking; the summary also says whether the
                             accuracy's interval lies above chance (0.5)
"""

from __future__ import annotations

import time

from tuneloop.config import Recipe
from tuneloop.data.prepare import run_pairs
from tuneloop.evaluate.stats import mean_ci
from tuneloop.workspace import Run

METRIC = "pair_accuracy"


def rank_heldout_pairs(
    run: Run, recipe: Recipe, precision: str = "fp32"
) -> list[tuple[str, dict, list[dict]]]:
    """(rung, summary, items) of the run's held-out pairs ranked by the base model
    (`zero-shot`) and by its reward model (`tuned`); `evaluate.run` saves them as rungs."""
    from tuneloop.models.load import load
    from tuneloop.train.dpo import answer_logps
    from tuneloop.train.reward import load_reward_run, score_chats

    ev = recipe.eval
    pairs = run_pairs(recipe, run.path / "data", "heldout")
    pairs = pairs[: ev.max_items] if ev.max_items else pairs
    started = time.perf_counter()
    model, tokenizer = load_reward_run(run.path)
    chosen = score_chats(model, tokenizer, [p.chosen_messages for p in pairs], ev.batch_size)
    rejected = score_chats(model, tokenizer, [p.rejected_messages for p in pairs], ev.batch_size)
    tuned_s = time.perf_counter() - started
    del model
    started = time.perf_counter()
    base, base_tokenizer, _ = load(recipe.model.name, recipe.model.trust_remote_code,
                                   recipe.model.chat_template)  # fmt: skip
    logps = answer_logps(base, base_tokenizer, pairs, ev.batch_size, precision).tolist()
    base_s = time.perf_counter() - started
    results = []
    for rung, margins, seconds, asks in (
        ("zero-shot", [c - r for c, r in logps], base_s, "base"),
        ("tuned", [c - r for c, r in zip(chosen, rejected, strict=True)], tuned_s, "tuned"),
    ):
        correct = [float(m > 0) for m in margins]
        ci = mean_ci(correct, ev.confidence, ev.bootstrap, ev.seed)
        summary = {
            "rung": rung, "asks": asks, "task": "preference", "metric": METRIC,
            "n": len(pairs), METRIC: ci.value, "ci": {METRIC: ci.to_dict()},
            "above_chance": ci.low > 0.5, "margin_mean": sum(margins) / max(len(margins), 1),
            "ranked_by": "log p(chosen) - log p(rejected) under the base model"
            if asks == "base" else "reward model score(chosen) - score(rejected)",
            "seconds": round(seconds, 2),
        }  # fmt: skip
        items = [
            {"source": p.source, "prompt": p.prompt[-1]["content"], "reference": p.chosen,
             "prediction": f"margin {m:+.4f}", "scores": {METRIC: c}, "margin": m}
            for p, m, c in zip(pairs, margins, correct, strict=True)
        ]  # fmt: skip
        results.append((rung, summary, items))
    return results
