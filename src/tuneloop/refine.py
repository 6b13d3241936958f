"""Refine: turn what failed into the next dataset, and what metrics cannot judge into ratings.

- `failure_rule`: which held-out items count as failed, judged by the metric the evaluation
  recorded (`task.metric`, or the task kind's default); the report uses the same rule.
- `export_failures`: the held-out items the tuned model got wrong, each with its nearest training
  examples (BM25), for a person to fix labels, add examples or drop bad ones.
- `export_review` / `import_ratings`: blind side-by-side pairs (tuned vs a baseline rung, order
  shuffled, identities hidden) for people to rate; the key that unblinds them stays in the run.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import DataError, UserError
from tuneloop.files import write_json, write_text
from tuneloop.workspace import Run

DEFAULT_BELOW = 0.5
# What evaluations written before summaries recorded their metric were judged by; every task
# kind keeps it per item.
LEGACY_METRIC = "exact_match"


@dataclass(frozen=True)
class FailureRule:
    """Which held-out items count as failed: those scoring below `below` on `metric`.

    `metric` is the one the evaluation recorded. When every item's score on it is 0 or 1
    (exact_match, json_exact, json_valid) an item fails at 0 and `below` plays no part; for
    partial-credit scores (rouge_l, chrf, json_fields, judge) an item fails below `below`.

        >>> rule = FailureRule("json_fields", 0.5, binary=False)
        >>> rule.failed({"scores": {"json_fields": 0.25}}), str(rule)
        (True, 'json_fields < 0.5')
    """

    metric: str
    below: float
    binary: bool

    def score(self, item: dict) -> float:
        return float(item["scores"][self.metric])

    def failed(self, item: dict) -> bool:
        return self.score(item) < (1.0 if self.binary else self.below)

    def __str__(self) -> str:
        return f"{self.metric} = 0" if self.binary else f"{self.metric} < {self.below:g}"

    def explain(self) -> str:
        """The rule in a sentence, for the command line and the report."""
        if self.binary:
            return f"failed means {self.metric} = 0 (every item scored 0 or 1 on it)"
        return (
            f"failed means {self.metric} below {self.below:g} (it gives partial credit; "
            "the line is set with --below)"
        )


def recorded_metric(summary: dict | None) -> str:
    """The metric an `eval/<rung>.json` summary says the task is judged by."""
    return (summary or {}).get("metric") or LEGACY_METRIC


def failure_rule(
    summary: dict | None, items: list[dict], below: float = DEFAULT_BELOW, where: str = ""
) -> FailureRule:
    """The rule for one evaluation: its recorded metric, 0/1 or partial credit as its scores are.

    `where` (the items' file) names the evaluation in the error for an item without the score.
    """
    from tuneloop.evaluate.stats import is_binary

    metric = recorded_metric(summary)
    for item in items:
        if metric not in item.get("scores", {}):
            raise UserError(
                f"item {item.get('source')} has no `{metric}` score, the metric its evaluation "
                f"is judged by (scores: {', '.join(item.get('scores', {})) or 'none'})",
                where or None,
                "re-evaluate the rung so every item is scored on the task's metric",
            )
    return FailureRule(metric, below, is_binary([float(i["scores"][metric]) for i in items]))


def _items(run: Run, rung: str) -> list[dict]:
    path = run.eval_dir / f"{rung}.jsonl"
    if not path.exists():
        raise UserError(
            f"run {run.id} has no evaluation of rung `{rung}`",
            str(path),
            f"evaluate it first: tuneloop eval {run.id} --rung {rung}",
        )
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _train_examples(run: Run):
    """The run's training rows as examples, whatever its objective (DPO: prompt + chosen)."""
    from tuneloop.config import load_recipe
    from tuneloop.data.prepare import run_examples

    return run_examples(load_recipe(run.recipe_path), run.path / "data", "train")


def tuned_failure_rule(run: Run, below: float = DEFAULT_BELOW) -> FailureRule:
    """The failure rule for the run's tuned evaluation (`eval/tuned.json` and `.jsonl`)."""
    summary_path = run.eval_dir / "tuned.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return failure_rule(summary, _items(run, "tuned"), below, str(run.eval_dir / "tuned.jsonl"))


def export_failures(run: Run, out: Path, k: int = 3, rule: FailureRule | None = None) -> int:
    """Write the tuned model's failed held-out items with their k nearest training examples.

    `rule` decides what failed (default: `tuned_failure_rule(run)`); each line keeps the metric
    and the item's score on it, so partial credit shows.
    """
    records = failures_with_nearest(run, k, rule)
    write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)


def failures_with_nearest(run: Run, k: int = 3, rule: FailureRule | None = None) -> list[dict]:
    """The tuned model's failed held-out items, each with its k nearest training examples
    (BM25 over the last user message): what `export_failures` writes, one dict per item."""
    from rank_bm25 import BM25Okapi

    rule = rule or tuned_failure_rule(run)
    failed = [item for item in _items(run, "tuned") if rule.failed(item)]
    train = _train_examples(run)
    corpus = [_tokens(ex.prompt_messages[-1]["content"]) for ex in train]
    bm25 = BM25Okapi(corpus) if train else None
    records = []
    for item in failed:
        nearest = []
        if bm25 is not None:
            scores = bm25.get_scores(_tokens(item["prompt"]))
            best = sorted(range(len(train)), key=lambda i: -scores[i])[:k]
            nearest = [
                {"source": train[i].source, "prompt": train[i].prompt_messages[-1]["content"],
                 "answer": train[i].reference, "bm25": round(float(scores[i]), 3)}
                for i in best
            ]  # fmt: skip
        record = {key: item.get(key) for key in ("source", "prompt", "reference", "prediction")}
        record.update(metric=rule.metric, score=rule.score(item), meta=item.get("meta", {}),
                      nearest_train=nearest, run=run.id)  # fmt: skip
        records.append(record)
    return records


def export_review(run: Run, out: Path, against: str = "zero-shot", seed: int = 0) -> int:
    """Blind pairs: each held-out prompt with two answers, A and B, in shuffled order.

    The file for raters holds no model names; the key (pair id -> which side is tuned) is kept in
    `<run>/review/key.json`. Items where both answers are identical are left out.
    """
    tuned = {i["source"]: i for i in _items(run, "tuned")}
    other = {i["source"]: i for i in _items(run, against)}
    rng = random.Random(seed)
    pairs, key = [], {}
    for n, source in enumerate(sorted(tuned.keys() & other.keys())):
        t, o = tuned[source]["prediction"], other[source]["prediction"]
        if t.strip() == o.strip():
            continue
        pair_id = f"p{n:05d}"
        tuned_is_a = rng.random() < 0.5
        a, b = (t, o) if tuned_is_a else (o, t)
        pairs.append({"id": pair_id, "prompt": tuned[source]["prompt"], "a": a, "b": b})
        key[pair_id] = {"a": "tuned" if tuned_is_a else against,
                        "b": against if tuned_is_a else "tuned", "source": source}  # fmt: skip
    write_json(run.path / "review" / "key.json",
               {"against": against, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "pairs": key})  # fmt: skip
    rows = [json.dumps(p, ensure_ascii=False) + "\n" for p in pairs]
    write_text(out, "".join(rows))
    return len(pairs)


def import_ratings(run: Run, ratings: Path) -> dict:
    """Read `{"id": ..., "winner": "a" | "b" | "tie"}` lines, unblind them, and summarise.

    The summary (tuned wins, losses, ties, win rate among decided pairs, and a two-sided exact
    sign test) is saved to `<run>/review/ratings.json` for `compare` and the report.
    """
    from scipy.stats import binomtest

    key_path = run.path / "review" / "key.json"
    if not key_path.exists():
        raise UserError(
            f"run {run.id} has no review key", str(key_path),
            f"export pairs first: tuneloop review export {run.id} --out pairs.jsonl",
        )  # fmt: skip
    key = json.loads(key_path.read_text())
    wins = losses = ties = 0
    for line_no, line in enumerate(Path(ratings).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rating = json.loads(line)
            pair, winner = key["pairs"][rating["id"]], rating["winner"]
        except json.JSONDecodeError as exc:
            msg = f"invalid JSON: {exc.msg}"
            raise DataError(ratings, line_no, msg, "write one JSON object a line") from None
        except (KeyError, TypeError):
            raise DataError(
                ratings, line_no, "needs an `id` from the exported pairs and a `winner`",
                'write {"id": "p00001", "winner": "a"} (winner: a, b or tie)',
            ) from None  # fmt: skip
        if winner not in ("a", "b", "tie"):
            raise DataError(ratings, line_no, f"winner {winner!r} is not a, b or tie",
                            "use a, b or tie")  # fmt: skip
        if winner == "tie":
            ties += 1
        elif pair[winner] == "tuned":
            wins += 1
        else:
            losses += 1
    decided = wins + losses
    summary = {
        "against": key["against"],
        "tuned_wins": wins,
        "tuned_losses": losses,
        "ties": ties,
        "win_rate": wins / decided if decided else None,
        "sign_test_p": binomtest(wins, decided).pvalue if decided else None,
    }
    write_json(run.path / "review" / "ratings.json", summary)
    return summary
