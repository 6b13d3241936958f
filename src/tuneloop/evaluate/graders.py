"""Graders: score each completion in [0, 1], batched, for evaluation and for RL alike.

A grader is built once from its recipe spec (`task.metric`, a `GraderConfig`) and called on a
batch: `grader(completions, references, prompts) -> [score, ...]`. Evaluation adds its scores
as a per-item column (paired, bootstrapped and gated like any metric); objective `grpo`
rewards sampled completions with the same grader, so what is trained on is what is gated on.

    >>> from tuneloop.config import GraderConfig
    >>> g = build_grader(GraderConfig(regex=r"-?\\d+", compare="reference"))
    >>> g(["So 12 + 30 = 42.", "It is 41", "no idea"], ["42", "42", "42"])
    [1.0, 0.0, 0.0]
    >>> both = build_grader(GraderConfig(weighted=[GraderConfig(metric="json_valid", weight=1),
    ...                                            GraderConfig(metric="json_exact", weight=3)]))
    >>> both(['{"a": 1}', '{"a": 2}', "a: 1"], ['{"a": 1}'] * 3)
    [1.0, 0.25, 0.0]

Kinds: a per-item metric by name (the functions `scoring.item_scores` uses), a regex, a Python
function named by import path, an LLM judge over an OpenAI-compatible endpoint (`judge.py`), a
reward model trained with objective `reward` (`train/reward.py`), and a weighted mean of any of
these. Every score is checked to lie in [0, 1]: a function that returns 7 is a mistake the
user hears about with the field to fix, not a reward that silently dominates.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tuneloop.config import GraderConfig, JudgeConfig
from tuneloop.errors import UserError
from tuneloop.evaluate import metrics, text_metrics

# (completions, references, schema) -> one score per completion
ScoreFn = Callable[[Sequence[str], Sequence[str], dict | None], list[float]]

METRICS: dict[str, ScoreFn] = {
    "exact_match": lambda p, r, _: metrics.exact_match(p, r),
    "json_valid": lambda p, r, _: metrics.json_validity(p),
    "json_exact": lambda p, r, _: metrics.json_exact(p, r),
    "json_fields": lambda p, r, _: metrics.json_field_accuracy(p, r),
    "json_field_f1": lambda p, r, _: metrics.json_field_f1(p, r),
    "json_schema": lambda p, r, schema: metrics.json_schema_valid(p, schema),
    "contains": lambda p, r, _: text_metrics.contains(p, r),
    "token_f1": lambda p, r, _: text_metrics.token_f1(p, r),
    "rouge_l": lambda p, r, _: text_metrics.rouge_l(p, r),
    "chrf": lambda p, r, _: text_metrics.chrf(p, r),
}
WHERE = "task.metric"


@dataclass
class Grader:
    """One grader, ready to score: `name` is its per-item column in evaluations."""

    name: str
    score: Callable[[Sequence[str], Sequence[str], Sequence[str]], list[float]]
    parts: list[Grader] = field(default_factory=list)  # a weighted grader's, for logging

    def __call__(self, completions: Sequence[str], references: Sequence[str],
                 prompts: Sequence[str] | None = None) -> list[float]:  # fmt: skip
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        prompts = prompts if prompts is not None else [""] * len(completions)
        return _checked(self.name, self.score(completions, references, prompts))


def build_grader(spec: GraderConfig | str, schema: dict | None = None,
                 judge: JudgeConfig | None = None, device=None) -> Grader:  # fmt: skip
    """The grader `spec` describes. `schema` is task.json_schema (for `json_schema`), `judge`
    is eval.judge (for `judge: true`), `device` where a reward model runs."""
    if isinstance(spec, str):
        spec = GraderConfig(metric=spec)
    kind = spec.kind
    if kind == "metric":
        fn = METRICS.get(spec.metric)
        if fn is None:
            raise UserError(
                f"`{spec.metric}` is not a per-item metric a grader can compute",
                WHERE,
                f"choose one of: {', '.join(METRICS)}",
            )
        if spec.metric == "json_schema" and schema is None:
            raise UserError("`json_schema` is scored against task.json_schema, which is not set",
                            WHERE, "set `task.json_schema`, or choose another metric")  # fmt: skip
        return Grader(spec.column, lambda p, r, _: fn(p, r, schema))
    if kind == "regex":
        return Grader(spec.column, regex_scorer(spec.regex, spec.compare))
    if kind == "python":
        return Grader(spec.column, python_scorer(spec.python))
    if kind == "judge":
        cfg = judge if spec.judge is True else spec.judge
        if cfg is None:
            raise UserError(
                "`judge: true` asks the judge of eval.judge, which is not set",
                WHERE,
                "set `eval.judge`, or give the judge's url and model here",
            )
        return Grader(spec.column, judge_scorer(cfg))
    if kind == "reward_model":
        from tuneloop.train.reward import reward_model_scorer

        return Grader(spec.column, reward_model_scorer(spec.reward_model, device))
    parts = [build_grader(p, schema, judge, device) for p in spec.weighted]
    weights = [p.weight for p in spec.weighted]
    return Grader(spec.column, weighted_scorer(parts, weights), parts)


def regex_scorer(pattern: str, compare: str) -> Callable:
    """`match`: 1 where `pattern` is found in the completion. `reference`: 1 where the last
    match in the completion (its first group, if any) equals the one in the reference, both
    as `metrics.normalize_answer` leaves them; a reference without a match counts whole."""
    rx = re.compile(pattern)

    def last(text: str) -> str | None:
        found = list(rx.finditer(text))
        if not found:
            return None
        m = found[-1]
        return m.group(1) if rx.groups else m.group(0)

    def score(preds, refs, _prompts) -> list[float]:
        if compare == "match":
            return [float(rx.search(p) is not None) for p in preds]
        out = []
        for p, r in zip(preds, refs, strict=True):
            got, want = last(p), last(r)
            want = r if want is None else want
            out.append(float(got is not None and metrics.normalize_answer(got)
                             == metrics.normalize_answer(want)))  # fmt: skip
        return out

    return score


def python_scorer(path: str) -> Callable:
    """`package.module:function`, imported now (a typo fails before any work), called per
    item as function(completion, reference)."""
    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(
            f"cannot import the grader `{path}`: {err}",
            f"{WHERE}.python",
            "name an importable function as `package.module:function` (the module must be on "
            "the Python path of the process that trains or evaluates)",
        ) from None
    if not callable(fn):
        raise UserError(f"`{path}` is not a function", f"{WHERE}.python",
                        "name a function(completion, reference) -> float in [0, 1]")  # fmt: skip
    return lambda preds, refs, _prompts: [float(fn(p, r)) for p, r in zip(preds, refs, strict=True)]


def judge_scorer(cfg: JudgeConfig) -> Callable:
    """The judge's 1-5 score of each answer, rescaled to [0, 1] (`judge.judge_scores`)."""
    from tuneloop.evaluate.judge import judge_scores

    return lambda preds, refs, prompts: judge_scores(cfg, list(prompts), list(refs), list(preds))


def weighted_scorer(parts: list[Grader], weights: list[float]) -> Callable:
    """sum_i w_i * g_i / sum_i w_i: still in [0, 1]."""
    total = sum(weights)

    def score(preds, refs, prompts) -> list[float]:
        columns = [g(preds, refs, prompts) for g in parts]
        return [sum(w * c[i] for w, c in zip(weights, columns, strict=True)) / total
                for i in range(len(preds))]  # fmt: skip

    return score


def _checked(name: str, scores: list[float]) -> list[float]:
    for i, s in enumerate(scores):
        if not (isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0):
            raise UserError(
                f"grader `{name}` gave {s!r} for item {i}; a grader's score must lie in [0, 1]",
                WHERE,
                "make the grader return a number from 0 to 1 (a weighted grader keeps its "
                "parts' range)",
            )
    return scores
