"""Per-item scores and the summary of one rung, by task kind, with intervals and slices.

Every kind keeps `exact_match` per item. On top of it:

- `label`: accuracy, macro-F1, per-label scores and the confusion matrix;
- `json`: validity, exact value, per-field accuracy, F1 over nested key paths
  (`json_field_f1` per item; precision, recall and F1 per key path in `fields`, with
  `json_field_f1_micro` and `json_field_f1_macro`) and, with `task.json_schema`, conformance;
- `text`: ROUGE-L and chrF per item, corpus BLEU.

Every kind also reports the refusal rate and distinct-2 of the answers (a tuned model that
refuses or repeats itself shows it here), a confidence interval for each per-item metric, and,
for each entry of `eval.slices`, every per-item metric by that entry's values. An entry is a
metadata field (`channel`) or, with `ref:`, a key path in the reference answer (`ref:intent`,
`ref:slots.city`), so a JSON task can be sliced by what it should have answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from tuneloop.config import reference_path
from tuneloop.errors import UserError
from tuneloop.evaluate import metrics, text_metrics
from tuneloop.evaluate.refusal import refusal_rate
from tuneloop.evaluate.stats import mean_ci

PRIMARY = {"label": "exact_match", "json": "json_exact", "text": "rouge_l"}
# Every per-item column `item_scores` can make, by kind (`json_fields` and `json_field_f1` only
# when every reference is a JSON object, `json_schema` only with `task.json_schema`); with
# `eval.judge`, every kind
# also gets `judge`. The recipe checks `task.metric` against these when it loads.


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
        if _all_objects(refs):
            columns["json_fields"] = metrics.json_field_accuracy(preds, refs)
            columns["json_field_f1"] = metrics.json_field_f1(preds, refs)
        if schema is not None:
            columns["json_schema"] = metrics.json_schema_valid(preds, schema)
    if kind == "text":
        columns["contains"] = text_metrics.contains(preds, refs)
        columns["token_f1"] = text_metrics.token_f1(preds, refs)
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
    if kind == "json" and refs and _all_objects(refs):
        fields = metrics.json_field_scores(preds, refs)
        summary.update(
            fields=fields["fields"],
            json_field_f1_micro=fields["micro"]["f1"],
            json_field_f1_macro=fields["macro"]["f1"],
            json_field_micro=fields["micro"],
            json_field_macro=fields["macro"],
        )
    summary["refusal_rate"] = refusal_rate(preds)
    summary["distinct_2"] = text_metrics.distinct_n(preds, 2)
    return summary


def _all_objects(refs: Sequence[str]) -> bool:
    return all(isinstance(metrics._parse_container(r), dict) for r in refs)


MISSING = "<missing>"


def _reference_value(reference: str, keys: list[str]) -> str:
    try:
        value = metrics._parse_json(reference)
    except ValueError:
        return "<not JSON>"
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        shown = sorted({x if isinstance(x, str) else metrics._canonical(x) for x in value})
        return ", ".join(shown) if shown else "<empty>"
    return metrics._canonical(value)


def slice_value(item: dict, field: str):
    """A slice entry's value for one stored item: with `ref:`, the value at that key path of the
    reference answer (a list's elements sorted and joined); else the field from the item's
    metadata, or the item itself.

    >>> item = {"reference": '{"intent": "book", "slots": {"city": "Oslo", "n": 2}}',
    ...         "meta": {"channel": "email"}}
    >>> [slice_value(item, f) for f in ("channel", "ref:intent", "ref:slots.n", "ref:slots.x")]
    ['email', 'book', '2', '<missing>']
    """
    keys = reference_path(field)
    if keys is not None:
        return _reference_value(item.get("reference", ""), keys)
    meta = item.get("meta") or {}
    value = meta.get(field, item.get(field))
    return MISSING if value is None else str(value)


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def natural_key(value: str) -> tuple:
    """Sort slice values as people read them: numbers by value (2 before 10), text by its runs
    of digits and letters (`room 2` before `room 10`), `<missing>` and the like last.

    >>> sorted(["10", "2", "<missing>", "1", "0", "-3", "2.5"], key=natural_key)
    ['-3', '0', '1', '2', '2.5', '10', '<missing>']
    >>> sorted(["room 10", "Room 9", "room 2"], key=natural_key)
    ['room 2', 'Room 9', 'room 10']
    """
    if _NUMBER.fullmatch(value.strip()):
        return (0, float(value), ())
    parts = tuple(
        (0, int(run), "") if run.isdigit() else (1, 0, run.casefold())
        for run in re.findall(r"\d+|\D+", value)
    )
    return (2 if value.startswith("<") and value.endswith(">") else 1, 0.0, parts)


def slices(items: list[dict], fields: Sequence[str]) -> dict[str, dict[str, dict]]:
    """Every per-item metric broken down by each entry's values (`slice_value`), the values in
    natural order (`natural_key`).

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
            for value, group in sorted(groups.items(), key=lambda kv: natural_key(kv[0]))
        }
    return out
