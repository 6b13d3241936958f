"""Per-item scores and the summary of one rung, by task kind, with intervals and slices.

Every kind keeps `exact_match` per item. On top of it:

- `label`: accuracy, macro-F1, per-label scores and the confusion matrix;
- `json`: validity, exact value, per-field accuracy and, with `task.json_schema`, conformance;
- `text`: ROUGE-L and chrF per item, corpus BLEU.

Every kind also reports the refusal rate and distinct-2 of the answers (a tuned model that
refuses or repeats itself shows it here), a confidence interval for each per-item metric, and,
for each field in `eval.slices`, every per-item metric by that field's values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tuneloop.errors import UserError
from tuneloop.evaluate import metrics, text_metrics
from tuneloop.evaluate.refusal import refusal_rate
from tuneloop.evaluate.stats import mean_ci

PRIMARY = {"label": "exact_match", "json": "json_exact", "text": "rouge_l"}
# Every per-item column `item_scores` can make, by kind (`json_fields` only when every reference
# is a JSON object, `json_schema` only with `task.json_schema`); with `eval.judge`, every kind
# also gets `judge`. The recipe checks `task.metric` against these when it loads.
ITEM_METRICS = {
    "label": ("exact_match",),
    "json": ("exact_match", "json_valid", "json_exact", "json_fields", "json_schema"),
    "text": ("exact_match", "rouge_l", "chrf"),
}


def primary_metric(kind: str, override: str | None = None) -> str:
    """The per-item metric that decides for this task (`task.metric` overrides)."""
    return override or PRIMARY[kind]


def item_scores(
    kind: str,
    preds: Sequence[str],
    refs: Sequence[str],
    schema: dict | None = None,
    sources: Sequence[str] | None = None,
) -> dict[str, list[float]]:
    """Per-item columns: metric name -> one score per item.

    A `json` task's references must all be JSON: one that is not is a mistake in the data, and
    a `UserError` names its item (`sources[i]`, its "file:line", when given) rather than a score
    quietly computed another way."""
    columns = {"exact_match": metrics.exact_match(preds, refs)}
    if kind == "json":
        check_json_references(refs, sources)
        columns["json_valid"] = metrics.json_validity(preds)
        columns["json_exact"] = metrics.json_exact(preds, refs)
        if all(isinstance(metrics._parse_container(r), dict) for r in refs):
            columns["json_fields"] = metrics.json_field_accuracy(preds, refs)
        if schema is not None:
            columns["json_schema"] = metrics.json_schema_valid(preds, schema)
    if kind == "text":
        columns["rouge_l"] = text_metrics.rouge_l(preds, refs)
        columns["chrf"] = text_metrics.chrf(preds, refs)
    return columns


def check_json_references(refs: Sequence[str], sources: Sequence[str] | None) -> None:
    """Every reference of a `json` task parses, or a `UserError` names the first that does not."""
    for i, ref in enumerate(refs):
        try:
            metrics._parse_json(ref)
        except ValueError as e:
            why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else e
            raise UserError(
                f"the reference is not valid JSON ({why}), and task.kind is json: {ref[:80]!r}",
                sources[i] if sources else f"held-out item {i + 1}",
                "write the answer as JSON in the data (quotes around strings, double quotes), "
                "or set `task.kind: text` (or `label`) to score the answers as text",
            ) from None


def summarize(
    kind: str,
    preds: Sequence[str],
    refs: Sequence[str],
    columns: dict[str, list[float]],
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Means, intervals and the kind's corpus-level scores."""
    summary: dict = {name: metrics.mean(values) for name, values in columns.items()}
    summary["ci"] = {
        name: mean_ci(values, confidence, n_boot, seed).to_dict()
        for name, values in columns.items()
    }
    if kind == "label":
        labels = metrics.label_scores(preds, refs)
        summary.update(
            accuracy=labels["accuracy"],
            macro_f1=labels["macro_f1"],
            out_of_set=labels["out_of_set"],
            per_label=labels["per_label"],
            confusion=metrics.confusion_matrix(preds, refs),
        )
    if kind == "text":
        summary["bleu"] = text_metrics.bleu(preds, refs)
    summary["refusal_rate"] = refusal_rate(preds)
    summary["distinct_2"] = text_metrics.distinct_n(preds, 2)
    return summary


def slice_value(item: dict, field: str):
    """A slice field's value for one stored item: from its metadata, else the item itself."""
    meta = item.get("meta") or {}
    value = meta.get(field, item.get(field))
    return "<missing>" if value is None else str(value)


def slices(items: list[dict], fields: Sequence[str]) -> dict[str, dict[str, dict]]:
    """Every per-item metric broken down by each field's values.

    >>> items = [{"meta": {"lang": "en"}, "scores": {"exact_match": 1.0}},
    ...          {"meta": {"lang": "de"}, "scores": {"exact_match": 0.0}},
    ...          {"meta": {"lang": "en"}, "scores": {"exact_match": 0.0}}]
    >>> slices(items, ["lang"])
    {'lang': {'de': {'n': 1, 'exact_match': 0.0}, 'en': {'n': 2, 'exact_match': 0.5}}}
    """
    out: dict[str, dict[str, dict]] = {}
    for field in fields:
        groups: dict[str, list[dict]] = {}
        for item in items:
            groups.setdefault(slice_value(item, field), []).append(item)
        out[field] = {
            value: {
                "n": len(group),
                **{m: metrics.mean(i["scores"][m] for i in group) for m in group[0]["scores"]},
            }
            for value, group in sorted(groups.items())
        }
    return out
