"""What a rung costs per request: tokens, latency and money, from each answer's usage.

Every way of answering fills the same usage entry per item (`generate`'s `usage`, an
endpoint's `Reply.usage`, a recorded file's fields): `prompt_tokens`, `completion_tokens`,
`latency_s`, for a local model `machine_s` (its share of the batch's wall time), and `cached`.
Money per 1,000 requests is

- for an endpoint or recorded answers: tokens at the rung's prices, USD per million
  (`price_in`, `price_out`);
- for a model on this machine: its measured machine time at `eval.price_per_hour`.

A number that was not measured is None and the summary's `cost_note` says why, never a zero.

    >>> usage = [{"prompt_tokens": 100, "completion_tokens": 10, "latency_s": 0.5},
    ...          {"prompt_tokens": 300, "completion_tokens": 30, "latency_s": 1.5}]
    >>> s = usage_summary(usage, price_in=0.15, price_out=0.60)
    >>> s["prompt_tokens_mean"], s["latency_p50_s"], round(s["cost_per_1k"], 4)
    (200.0, 1.0, 0.042)
"""

from __future__ import annotations

import numpy as np


def _mean(values: list) -> float | None:
    known = [v for v in values if isinstance(v, int | float)]
    return round(float(np.mean(known)), 1) if known and len(known) == len(values) else None


def usage_summary(
    usage: list[dict],
    price_in: float | None = None,
    price_out: float | None = None,
    price_per_hour: float | None = None,
) -> dict:
    """Token, latency (p50, p95) and cost-per-1,000-requests figures over a rung's items.

    Token prices apply when given (an endpoint, recorded answers); else machine time at
    `price_per_hour` (a local model)."""
    n = len(usage)
    latencies = [u["latency_s"] for u in usage if isinstance(u.get("latency_s"), int | float)]
    prompt = [u.get("prompt_tokens") for u in usage]
    completion = [u.get("completion_tokens") for u in usage]
    out: dict = {
        "requests": n,
        "cached": sum(1 for u in usage if u.get("cached")),
        "prompt_tokens_mean": _mean(prompt),
        "completion_tokens_mean": _mean(completion),
        "latency_p50_s": _pct(latencies, 50),
        "latency_p95_s": _pct(latencies, 95),
        "latency_measured": len(latencies),
        "cost_per_1k": None,
        "cost_basis": None,
        "cost_note": None,
    }
    if price_in is not None or price_out is not None:
        if out["prompt_tokens_mean"] is None or out["completion_tokens_mean"] is None:
            out["cost_note"] = "token counts were not reported for every request"
        else:
            per_request = (
                out["prompt_tokens_mean"] * (price_in or 0) / 1e6
                + out["completion_tokens_mean"] * (price_out or 0) / 1e6
            )
            out["cost_per_1k"] = per_request * 1000
            out["cost_basis"] = f"tokens at ${price_in or 0:g} in / ${price_out or 0:g} out per M"
        return out
    machine = [u.get("machine_s") for u in usage]
    if price_per_hour is None:
        out["cost_note"] = "set eval.price_per_hour to cost this machine's time"
    elif n == 0 or any(not isinstance(m, int | float) for m in machine):
        out["cost_note"] = "machine time was not measured for every request"
    else:
        out["machine_s_mean"] = float(np.mean(machine))
        out["cost_per_1k"] = out["machine_s_mean"] * price_per_hour / 3600 * 1000
        out["cost_basis"] = f"machine time at ${price_per_hour:g}/hour"
    return out


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def money(x: float | None) -> str:
    """USD per 1,000 requests for a table: `$0.042`, `$12.30`, or `n/a`."""
    if x is None:
        return "n/a"
    return f"${x:.3f}" if x < 1 else f"${x:,.2f}"


def seconds(x: float | None) -> str:
    return "n/a" if x is None else (f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s")


def rung_table(rungs: dict[str, dict], metric: str) -> list[str]:
    """Quality with its CI, prompt tokens, latency and cost per 1,000 requests, a row a rung."""
    rows = [("rung", metric, "CI", "prompt tok", "p50", "p95", "$/1k req")]
    for rung, s in rungs.items():
        ci, cost = s["ci"][metric], s.get("cost") or {}
        rows.append((
            rung,
            f"{s[metric]:.1%}",
            f"[{ci['low']:.1%}, {ci['high']:.1%}]",
            f"{s.get('prompt_tokens_mean') or 0:.0f}",
            seconds(cost.get("latency_p50_s")),
            seconds(cost.get("latency_p95_s")),
            money(cost.get("cost_per_1k")),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
