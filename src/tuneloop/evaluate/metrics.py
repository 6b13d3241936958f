"""Metrics: pure functions from predictions and references to scores.

Per-item functions (`exact_match`, `json_validity`, `json_exact`) return one float per example,
0.0 or 1.0, because comparing two runs needs the paired scores, not just their means:

    >>> exact_match(["Refund_Request.", "bug_report"], ["refund_request", "feature_request"])
    [1.0, 0.0]
    >>> mean([1.0, 0.0])
    0.5

`label_scores` summarises a classification task (accuracy, per-label recall, macro-F1).

For JSON extraction, `json_field_f1` scores each answer by F1 over the values of every key path,
nested ones included (`slots.city`; a list is a set), and `json_field_scores` gives precision,
recall and F1 per key path with their micro and macro means, so a model better on the slots
and worse on the intent shows both instead of a tie on whole values (`json_field_accuracy`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from tuneloop.data.records import normalize_text

_QUOTES = ('"', "'", "`")
# An optional Markdown code fence around a JSON answer: ```json\n{...}\n``` or ```{...}```.
_FENCE = re.compile(r"^```[ \t]*(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```$", re.DOTALL | re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """The form two short answers are compared in: casefolded, one space, no quotes or final dot.

    >>> normalize_answer('  "Reset_Password." ')
    'reset_password'
    >>> normalize_answer("`Shipping   Status`")
    'shipping status'
    >>> normalize_answer("v1.2")
    'v1.2'
    """
    text = normalize_text(text).casefold()
    while True:
        before = text
        text = text.strip()
        if text.endswith("."):
            text = text[:-1]
        if len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
            text = text[1:-1]
        if text == before:
            return text


def _check_lengths(preds: Sequence, refs: Sequence) -> None:
    if len(preds) != len(refs):
        raise ValueError(
            f"got {len(preds)} predictions but {len(refs)} references; "
            "pass one prediction per reference, in the same order"
        )


def exact_match(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """1.0 where the prediction equals the reference after `normalize_answer`, else 0.0.

    >>> exact_match(["Bug_report", "refund"], ["bug_report", "refund_request"])
    [1.0, 0.0]
    """
    _check_lengths(preds, refs)
    return [
        float(normalize_answer(p) == normalize_answer(r)) for p, r in zip(preds, refs, strict=True)
    ]


def label_scores(
    preds: Sequence[str], refs: Sequence[str], labels: Iterable[str] | None = None
) -> dict:
    """Classification scores over normalised labels.

    The label set is the distinct references plus `labels`, if given. A prediction outside it
    (a typo, a sentence, an empty answer) counts as wrong for its item and is counted in
    `out_of_set`. Per-label scores and macro-F1 are over the labels that occur in the
    references, so a stray prediction cannot add a class of its own; a label that is never
    predicted has precision 0 and F1 0.

        >>> s = label_scores(["a", "a", "b", "zzz"], ["a", "b", "b", "a"])
        >>> s["accuracy"], round(s["macro_f1"], 4), s["out_of_set"]
        (0.5, 0.5833, 1)
        >>> s["per_label"]["a"]
        {'n': 2, 'correct': 1, 'accuracy': 0.5, 'precision': 0.5, 'f1': 0.5}

    "a" was predicted twice and right once (precision 1/2, recall 1/2, F1 1/2); "b" was
    predicted once and right (precision 1, recall 1/2, F1 2/3); macro-F1 = (1/2 + 2/3) / 2.
    `accuracy` under a label is its recall: the share of its references answered correctly.
    """
    _check_lengths(preds, refs)
    if not refs:
        raise ValueError("label_scores needs at least one reference; the evaluation set is empty")
    p_norm = [normalize_answer(p) for p in preds]
    r_norm = [normalize_answer(r) for r in refs]
    allowed = set(r_norm) | {normalize_answer(x) for x in labels or ()}

    support = Counter(r_norm)
    predicted = Counter(p_norm)
    correct = Counter(r for p, r in zip(p_norm, r_norm, strict=True) if p == r)

    per_label: dict[str, dict] = {}
    for label in sorted(support):
        tp, n, n_pred = correct[label], support[label], predicted[label]
        recall = tp / n
        precision = tp / n_pred if n_pred else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {
            "n": n,
            "correct": tp,
            "accuracy": recall,
            "precision": precision,
            "f1": f1,
        }
    return {
        "n": len(refs),
        "accuracy": sum(correct.values()) / len(refs),
        "macro_f1": sum(s["f1"] for s in per_label.values()) / len(per_label),
        "out_of_set": sum(1 for p in p_norm if p not in allowed),
        "per_label": per_label,
    }


def _strip_fence(text: str) -> str:
    text = text.strip()
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


def _reject_constant(name: str):
    # json.loads accepts NaN and Infinity, which are not JSON; a model that writes them has
    # not produced valid JSON.
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text: str):
    """The parsed value, or raise ValueError (json.JSONDecodeError is a ValueError)."""
    return json.loads(_strip_fence(text), parse_constant=_reject_constant)


def _parse_container(text: str) -> dict | list | None:
    try:
        value = _parse_json(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


def looks_like_json(text: str) -> bool:
    """True if `text` is a JSON object or array (optionally in a ```json fence).

    Decide a task's metric by checking every reference:
    `all(looks_like_json(r) for r in refs)`.

        >>> looks_like_json('{"intent": "refund_request"}'), looks_like_json("refund_request")
        (True, False)
        >>> looks_like_json("42")
        False
    """
    return _parse_container(text) is not None


def json_validity(preds: Sequence[str]) -> list[float]:
    """1.0 where the prediction parses as a JSON object or array, else 0.0.

    >>> json_validity(['{"a": 1}', '```json\\n[1, 2]\\n```', "{'a': 1}", '"text"'])
    [1.0, 1.0, 0.0, 0.0]
    """
    return [float(_parse_container(p) is not None) for p in preds]


def _json_equal(a, b) -> bool:
    """Structural equality where true is not 1 (Python says True == 1) but 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def json_exact(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """1.0 where the prediction parses to the same JSON value as the reference, else 0.0.

    Key order and spacing do not matter; types do (`true` is not `1`). A reference that does
    not parse is an error in the data, not a wrong answer, and raises ValueError.

        >>> json_exact(['{"b": 2, "a": 1}', '{"a": true}'], ['{"a": 1, "b": 2}', '{"a": 1}'])
        [1.0, 0.0]
    """
    _check_lengths(preds, refs)
    scores = []
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        try:
            ref_value = _parse_json(r)
        except ValueError as e:
            raise ValueError(
                f"reference {i} is not valid JSON ({e}): {r[:80]!r}; "
                "score non-JSON references with exact_match"
            ) from None
        try:
            pred_value = _parse_json(p)
        except ValueError:
            scores.append(0.0)
            continue
        scores.append(float(_json_equal(pred_value, ref_value)))
    return scores


def mean(xs: Iterable[float]) -> float:
    """The arithmetic mean; an empty input is an error, not 0.

    >>> mean([1.0, 0.0, 1.0, 1.0])
    0.75
    """
    xs = list(xs)
    if not xs:
        raise ValueError("mean of no values; the evaluation set is empty")
    return sum(xs) / len(xs)


def confusion_matrix(preds: Sequence[str], refs: Sequence[str]) -> dict[str, dict[str, int]]:
    """Counts of (reference -> prediction) over normalised labels; the rows are the references.

    A prediction outside the reference labels is counted under its own column, so the matrix
    shows what the model says instead (a sentence, a near-miss spelling).

        >>> confusion_matrix(["a", "b", "b", "zzz"], ["a", "b", "a", "a"])
        {'a': {'a': 1, 'b': 1, 'zzz': 1}, 'b': {'b': 1}}
    """
    _check_lengths(preds, refs)
    matrix: dict[str, Counter] = {}
    for p, r in zip(preds, refs, strict=True):
        matrix.setdefault(normalize_answer(r), Counter())[normalize_answer(p)] += 1
    return {r: dict(sorted(row.items())) for r, row in sorted(matrix.items())}


def json_schema_valid(preds: Sequence[str], schema: dict) -> list[float]:
    """1.0 where the prediction parses as JSON and conforms to `schema` (JSON Schema), else 0.0.

    >>> schema = {"type": "object", "required": ["intent"],
    ...           "properties": {"intent": {"enum": ["refund", "bug"]}}}
    >>> json_schema_valid(['{"intent": "bug"}', '{"intent": "other"}', 'bug'], schema)
    [1.0, 0.0, 0.0]
    """
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)  # a broken schema is the user's error, not a score
    validator = validator_cls(schema)
    scores = []
    for p in preds:
        try:
            value = _parse_json(p)
        except ValueError:
            scores.append(0.0)
            continue
        scores.append(float(validator.is_valid(value)))
    return scores


def json_field_accuracy(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Per item, the share of the reference object's top-level fields the prediction got equal.

    Partial credit for extraction: one wrong field out of four scores 0.75, not 0. A prediction
    that is not a JSON object scores 0; a reference that is not an object raises ValueError.

        >>> json_field_accuracy(['{"a": 1, "b": 2}', '{"a": 1}', 'oops'],
        ...                     ['{"a": 1, "b": 3}', '{"a": 1}', '{"a": 1}'])
        [0.5, 1.0, 0.0]
    """
    _check_lengths(preds, refs)
    scores = []
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        ref = _parse_container(r)
        if not isinstance(ref, dict) or not ref:
            raise ValueError(f"reference {i} is not a non-empty JSON object: {r[:80]!r}")
        pred = _parse_container(p)
        if not isinstance(pred, dict):
            scores.append(0.0)
            continue
        same = sum(k in pred and _json_equal(pred[k], v) for k, v in ref.items())
        scores.append(same / len(ref))
    return scores


# -- nested JSON fields: precision, recall and F1 per key path ---------------------------------


def _canonical(value) -> str:
    """A JSON value as text that compares as `_json_equal` does: key order ignored, 1 equals
    1.0, true is not 1."""

    def canon(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: canon(x) for k, x in v.items()}
        if isinstance(v, list):
            return [canon(x) for x in v]
        return v

    return json.dumps(canon(value), sort_keys=True, ensure_ascii=False)


def json_leaves(value) -> dict[str, frozenset[str]]:
    """The values of a JSON object by key path: objects are walked into (`slots.city`), a list
    is the set of its elements (order and repeats do not matter; an element that is an object
    is compared whole), `null` is no value.

        >>> leaves = json_leaves({"intent": "book", "slots": {"city": "Oslo", "extras":
        ...                       ["gym", "spa", "gym"], "date": None}})
        >>> {path: sorted(values) for path, values in leaves.items()}
        {'intent': ['"book"'], 'slots.city': ['"Oslo"'], 'slots.extras': ['"gym"', '"spa"'], \
'slots.date': []}

    A key that holds a dot is not told apart from a nested key (`{"a.b": 1}` and
    `{"a": {"b": 1}}` give the same path).
    """
    out: dict[str, frozenset[str]] = {}

    def walk(v, path: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{path}.{k}" if path else str(k))
        elif isinstance(v, list):
            out[path] = frozenset(_canonical(x) for x in v)
        elif v is None:
            out[path] = frozenset()
        else:
            out[path] = frozenset([_canonical(v)])

    walk(value, "")
    return out


def _reference_object(ref: str, i: int) -> dict:
    value = _parse_container(ref)
    if not isinstance(value, dict):
        raise ValueError(f"reference {i} is not a JSON object: {ref[:80]!r}")
    return value


def json_field_counts(pred: str, ref: dict) -> dict[str, tuple[int, int, int]]:
    """(true positives, false positives, false negatives) per key path of one answer against
    its parsed reference object. A path's values are sets (`json_leaves`): a right value is a
    true positive, a value the reference lacks a false positive, a reference value the answer
    lacks a false negative. An answer that is not a JSON object misses every reference value.
    Paths with no value on either side are left out.

        >>> json_field_counts('{"intent": "cancel", "slots": {"city": "Oslo", "n": 2}}',
        ...                   {"intent": "book", "slots": {"city": "Oslo", "date": "5 May"}})
        {'intent': (0, 1, 1), 'slots.city': (1, 0, 0), 'slots.date': (0, 0, 1), \
'slots.n': (0, 1, 0)}
    """
    parsed = _parse_container(pred)
    want = json_leaves(ref)
    got = json_leaves(parsed) if isinstance(parsed, dict) else {}
    counts = {}
    for path in sorted(want.keys() | got.keys()):
        r, p = want.get(path, frozenset()), got.get(path, frozenset())
        tp, fp, fn = len(r & p), len(p - r), len(r - p)
        if tp + fp + fn:
            counts[path] = (tp, fp, fn)
    return counts


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def json_field_f1(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Per item, F1 over the values of every key path, nested ones included (`json_leaves`):
    2·TP / (2·TP + FP + FN), pooled over the item's paths; 1.0 where neither side has a value.

    Unlike `json_fields`, which gives credit only for a whole top-level value, one right slot
    of two scores: the first answer below gets the intent and one of two cities right.

        >>> refs = ['{"intent": "book", "slots": {"city": ["Oslo", "Rome"], "nights": 2}}'] * 3
        >>> preds = ['{"intent": "book", "slots": {"city": ["Oslo"], "nights": 3}}',
        ...          '{"slots": {"nights": 2.0, "city": ["Rome", "Oslo"]}, "intent": "book"}',
        ...          'I cannot answer that.']
        >>> [round(s, 4) for s in json_field_f1(preds, refs)]
        [0.5714, 1.0, 0.0]

    First answer: TP 2 (intent, Oslo), FP 1 (nights 3), FN 2 (Rome, nights 2): 4 / 7.
    Every reference must be a JSON object (ValueError otherwise).
    """
    _check_lengths(preds, refs)
    scores = []
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        counts = json_field_counts(p, _reference_object(r, i)).values()
        scores.append(_f1(*(sum(c[k] for c in counts) for k in range(3))))
    return scores


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def json_field_scores(preds: Sequence[str], refs: Sequence[str]) -> dict:
    """Precision, recall and F1 per key path over all items, and their micro and macro means.

    `fields[path]` holds `precision`, `recall`, `f1`, `support` (the reference values at that
    path) and the counts. `micro` pools the counts of every path (a path the references never
    have, a made-up key, adds false positives); `macro` averages the paths the references
    have, so a rare slot weighs as much as the intent. A path never predicted has precision 0.

        >>> s = json_field_scores(['{"intent": "book", "slots": {"city": "Oslo"}}',
        ...                        '{"intent": "book", "slots": {"city": "Rome", "x": 1}}'],
        ...                       ['{"intent": "book", "slots": {"city": "Oslo"}}',
        ...                        '{"intent": "cancel", "slots": {"city": "Rome"}}'])
        >>> s["fields"]["intent"]
        {'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'support': 2, 'tp': 1, 'fp': 1, 'fn': 1}
        >>> s["fields"]["slots.city"]["f1"], s["fields"]["slots.x"]["support"]
        (1.0, 0)
        >>> {k: round(v, 4) for k, v in s["micro"].items()}
        {'precision': 0.6, 'recall': 0.75, 'f1': 0.6667}
        >>> s["macro"]
        {'precision': 0.75, 'recall': 0.75, 'f1': 0.75}
    """
    _check_lengths(preds, refs)
    totals: dict[str, list[int]] = {}
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        for path, counts in json_field_counts(p, _reference_object(r, i)).items():
            t = totals.setdefault(path, [0, 0, 0])
            for k in range(3):
                t[k] += counts[k]
    fields = {
        path: {**_prf(tp, fp, fn), "support": tp + fn, "tp": tp, "fp": fp, "fn": fn}
        for path, (tp, fp, fn) in sorted(totals.items())
    }
    pooled = [sum(t[k] for t in totals.values()) for k in range(3)]
    scored = [f for f in fields.values() if f["support"]]
    macro = {
        name: sum(f[name] for f in scored) / len(scored) if scored else 0.0
        for name in ("precision", "recall", "f1")
    }
    return {"fields": fields, "micro": _prf(*pooled), "macro": macro}


def json_field_diff(pred: str, ref: str) -> list[tuple[str, str, str]]:
    """The key paths where an answer differs from its reference, as (path, wanted, got), the
    values written as JSON (`-` where a side has none). For the report's failures table.

        >>> json_field_diff('{"intent": "book", "slots": {"city": "Rome", "n": 2}}',
        ...                 '{"intent": "book", "slots": {"city": "Oslo"}}')
        [('slots.city', '"Oslo"', '"Rome"'), ('slots.n', '-', '2')]
    """
    parsed = _parse_container(ref)
    if not isinstance(parsed, dict):
        return []
    want = json_leaves(parsed)
    answer = _parse_container(pred)
    got = json_leaves(answer) if isinstance(answer, dict) else {}

    def show(values: frozenset[str]) -> str:
        if len(values) == 1:
            return next(iter(values))
        return f"[{', '.join(sorted(values))}]" if values else "-"

    return [
        (path, show(want.get(path, frozenset())), show(got.get(path, frozenset())))
        for path in sorted(want.keys() | got.keys())
        if want.get(path, frozenset()) != got.get(path, frozenset())
    ]
