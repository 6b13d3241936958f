"""distinct-2 (distinct bigrams over all bigrams of a rung's answers, `text_metrics.distinct_n`)
and the mode-collapse flag that `tuneloop eval` prints and the report shows.

The rule: a free-text task's tuned model collapses when its distinct-2 falls below
`COLLAPSE_RATIO` (half) of the zero-shot base model's on the same held-out prompts: it says
fewer different things than the model it started from. Label and JSON tasks are not flagged:
answering with a few labels or one schema is what they are trained to do (a label task's
collapse onto one class shows in its per-class scores).
"""

from __future__ import annotations

COLLAPSE_RATIO = 0.5


def mode_collapse(rungs: dict[str, dict]) -> str | None:
    """A sentence when the tuned rung's distinct-2 is below half the zero-shot rung's, else
    None (also when either is missing, or the task is not free text).

    >>> base, tuned = {"task": "text", "distinct_2": 0.8}, {"task": "text", "distinct_2": 0.3}
    >>> mode_collapse({"zero-shot": base, "tuned": tuned})  # doctest: +ELLIPSIS
    "possible mode collapse: the tuned model's distinct-2 is 0.30, below half ... 0.80 ..."
    """
    base, tuned = rungs.get("zero-shot") or {}, rungs.get("tuned") or {}
    b, t = base.get("distinct_2"), tuned.get("distinct_2")
    known = all(isinstance(x, int | float) for x in (b, t))
    if tuned.get("task") != "text" or not known or b <= 0 or t >= COLLAPSE_RATIO * b:
        return None
    return (
        f"possible mode collapse: the tuned model's distinct-2 is {t:.2f}, below half the "
        f"zero-shot model's {b:.2f} (rule: tuned < {COLLAPSE_RATIO:g} x zero-shot); its answers "
        "repeat the same phrases: read a sample of them"
    )
