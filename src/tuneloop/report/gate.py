"""The report's gate section: the verdict, each condition's change with its CI against its
bound, the test and the items that would decide an inconclusive condition.

It reads both shapes of `gate.json`: conditions with `status` (pass, fail, inconclusive) and
`numbers` holding `estimate`, `low`, `high`, `confidence`, `bound`, `test`, `p_value`, `n` and
`items_needed`; and older ones with only `passed` and their own numbers (their cells show "-",
the sentence says it all), or with only `reasons` lines.
"""

from __future__ import annotations

import html

from tuneloop.report import figures, render

HEADER = ["condition", "status", "estimate [CI]", "bound", "test", "items needed"]


def status(condition: dict) -> str:
    """pass, fail or inconclusive; conditions written before `status` have only `passed`."""
    return condition.get("status") or ("pass" if condition.get("passed") else "fail")


def verdict(gate: dict) -> tuple[str, str]:
    """The headline and its CSS class."""
    statuses = {status(c) for c in gate.get("conditions") or []}
    if gate.get("passed"):
        return "SHIP", "pass"
    if gate.get("status") == "inconclusive" or (
        "inconclusive" in statuses and "fail" not in statuses
    ):
        return "DO NOT SHIP (inconclusive: more items would decide)", "inconclusive"
    return "DO NOT SHIP", "fail"


def status_cell(condition: dict) -> str:
    """PASS, FAIL or INCONCLUSIVE, and how the gate counted it where that differs
    (`gate.inconclusive: pass` lets an inconclusive condition pass)."""
    shown = status(condition)
    if "passed" not in condition or condition["passed"] == (shown == "pass"):
        return shown.upper()
    return f"{shown.upper()} (counted as {'pass' if condition['passed'] else 'fail'})"


def condition_row(condition: dict) -> list:
    """Estimates are changes (tuned minus base or best rung; a rate for a floor), as fractions
    shown in percent, on the scale of their bound."""
    n = condition.get("numbers") or {}
    estimate = "-"
    if isinstance(n.get("estimate"), int | float):
        level = f"{n['confidence']:.0%} CI " if isinstance(n.get("confidence"), float) else ""
        low, high = render.signed_pct(n.get("low")), render.signed_pct(n.get("high"))
        estimate = f"{render.signed_pct(n['estimate'])} [{level}{low}, {high}]"
    p = n.get("p_value")
    test = [n["test"]] if n.get("test") else []
    test += [f"p={p:.3g}"] if isinstance(p, int | float) else []
    needed = n.get("items_needed")
    return [
        condition.get("name", "-"),
        status_cell(condition),
        estimate,
        render.signed_pct(n.get("bound")),
        ", ".join(test) or "-",
        "-" if needed is None else needed,
    ]


def forest_rows(conditions: list[dict]) -> list[tuple]:
    """(name, estimate, low, high, bound, status) of the conditions that carry an interval."""
    rows = []
    for c in conditions:
        n = c.get("numbers") or {}
        if all(isinstance(n.get(k), int | float) for k in ("estimate", "low", "high")):
            bound = n.get("bound") if isinstance(n.get("bound"), int | float) else None
            rows.append((c.get("name", "-"), n["estimate"], n["low"], n["high"], bound, status(c)))
    return rows


def gate_section(gate: dict, draw: render.Draw = render.figure) -> str:
    """The verdict, the conditions' table, a forest chart of their intervals, the sentences."""
    headline, cls = verdict(gate)
    parts = [f'<h2>Gate</h2><p class="{cls}">{html.escape(headline)}</p>']
    conditions = gate.get("conditions") or []
    if conditions:
        parts.append(render.table([condition_row(c) for c in conditions], HEADER))
        forest = forest_rows(conditions)
        if forest:
            parts.append(draw(figures.forest(forest), "gate conditions: CI against bound"))
        sentences = [
            f"<b>{html.escape(str(c.get('name', '-')))}</b> [{status(c).upper()}]: "
            + html.escape(str(c.get("sentence", "")))
            for c in conditions
        ]
    else:
        sentences = [html.escape(str(r)) for r in gate.get("reasons") or []]
    notes = gate.get("notes") or []  # what the gate could not test, and why
    sentences += [f"<b>not tested</b>: {html.escape(str(note))}" for note in notes]
    parts.append("<ul>" + "".join(f"<li>{s}</li>" for s in sentences) + "</ul>")
    overfit = (gate.get("overfit") or {}).get("note")
    if overfit:
        parts.append(f"<p>Overfitting (reported, not gated): {html.escape(overfit)}</p>")
    return "".join(parts)
