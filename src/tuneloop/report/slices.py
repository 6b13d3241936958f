"""The report's slice tables: each rung's score on every value of an `eval.slices` field, with
its 95% confidence interval and the number of items behind it."""

from __future__ import annotations

import html
from collections import defaultdict
from typing import NamedTuple

from tuneloop.evaluate.scoring import natural_key, slice_value
from tuneloop.evaluate.stats import mean_ci
from tuneloop.report import figures, render


class SliceScore(NamedTuple):
    score: float
    low: float | None
    high: float | None
    n: int


def summary_ci(summary: dict, metric: str) -> tuple[float | None, float | None]:
    """A metric's CI from an evaluation summary (or one slice of it): `ci: {metric: {low,
    high}}` (what `tuneloop eval` writes) or a `[low, high]` pair under `<metric>_ci` or `ci`."""
    for value in (summary.get(f"{metric}_ci"), summary.get("ci")):
        if isinstance(value, dict) and metric in value:
            value = value[metric]
        if isinstance(value, dict) and "low" in value and "high" in value:
            return float(value["low"]), float(value["high"])
        if isinstance(value, list | tuple) and len(value) >= 2:
            return float(value[0]), float(value[1])
    return None, None


def slice_fields(rungs: dict[str, dict], items_by_rung: dict[str, list[dict]]) -> list[str]:
    """The fields the evaluation broke its scores down by (`eval.slices`); for runs evaluated
    without them, metadata fields with 2 to 20 distinct values (`label` aside: the per-class
    section shows it)."""
    recorded = [field for s in rungs.values() for field in s.get("slices") or {}]
    if recorded:
        return list(dict.fromkeys(recorded))
    any_items = next(iter(items_by_rung.values()), [])
    fields = sorted({k for item in any_items for k in (item.get("meta") or {})} - {"label"})
    return [f for f in fields if 2 <= len({slice_value(i, f) for i in any_items}) <= 20]


def slice_scores(
    field: str, rungs: dict[str, dict], items_by_rung: dict[str, list[dict]], metric: str
) -> dict[str, dict[str, SliceScore]]:
    """{value: {rung: SliceScore}} of one slice field, values in sorted order.

    Score and n are what the evaluation wrote under `slices` where it did, and the interval too
    where it wrote one; otherwise the interval is `mean_ci` of the slice's per-item scores
    (Wilson for 0/1 scores, a bootstrap for partial credit), grouped as the evaluation grouped
    them (`scoring.slice_value`).
    """
    table: dict[str, dict[str, SliceScore]] = defaultdict(dict)
    for rung in sorted(rungs.keys() | items_by_rung.keys()):
        written = ((rungs.get(rung) or {}).get("slices") or {}).get(field) or {}
        groups: dict[str, list[float]] = defaultdict(list)
        for item in items_by_rung.get(rung, []):
            if metric in item["scores"]:
                groups[slice_value(item, field)].append(float(item["scores"][metric]))
        for value in written.keys() | groups.keys():
            entry, scores = written.get(value) or {}, groups.get(value, [])
            if metric not in entry and not scores:
                continue
            low, high = summary_ci(entry, metric)
            if low is None and scores:
                interval = mean_ci(scores)
                low, high = interval.low, interval.high
            score = entry.get(metric, sum(scores) / len(scores) if scores else 0.0)
            table[value][rung] = SliceScore(
                float(score), low, high, int(entry.get("n", len(scores)))
            )
    return {value: table[value] for value in sorted(table, key=natural_key)}


def slice_section(
    field: str,
    table: dict[str, dict[str, SliceScore]],
    metric: str,
    draw: render.Draw = render.figure,
) -> str:
    """A chart (bars with their CIs) and a table: one row per value, one column per rung."""
    groups = list(table)
    rungs = sorted({r for by_rung in table.values() for r in by_rung})
    empty = SliceScore(0.0, None, None, 0)
    cells = {r: [table[g].get(r, empty) for g in groups] for r in rungs}
    series = {r: [c.score for c in cells[r]] for r in rungs}
    cis = {r: [(c.low, c.high) for c in cells[r]] for r in rungs}
    rows = [
        # n: the same held-out items stand behind every rung, so one count per value
        [g, max(c.n for c in table[g].values())]
        + [render.with_ci(*table[g][r][:3]) if r in table[g] else "-" for r in rungs]
        for g in groups
    ]
    header = [field, "n", *(f"{r}: {metric} [95% CI]" for r in rungs)]
    chart = figures.grouped(groups, series, f"{metric} by {field} (bars: 95% CI)", cis)
    return (
        f"<h2>Slice: {html.escape(field)}</h2>"
        + draw(chart, f"slice {field}")
        + render.table(rows, header)
    )
