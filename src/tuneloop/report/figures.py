"""Every figure of the report and the dashboard, defined once, as data.

A figure is a plain dict in plotly.js's shape (`{"data": [traces], "layout": {...}}`), JSON as
it stands: the dashboard hands it to plotly.js (interactive), and the static report draws the
same dict with matplotlib as a PNG (`plots.png`). So a change to a figure here changes both.

    >>> fig = loss([(1, 2.0), (2, 1.5)], [])
    >>> fig["data"][0]["name"], fig["data"][0]["y"], fig["layout"]["yaxis"]["type"]
    ('train', [2.0, 1.5], 'log')

Only what both renderers understand is used: traces of type scatter (lines and/or markers,
asymmetric `error_x`), bar (horizontal, grouped, `error_x`, text), heatmap (with `text`) and
histogram; axis titles, ranges, log type and reversed category axes; vertical line shapes.
"""

from __future__ import annotations

TUNED = "#2ca02c"
OTHER = "#7f7f7f"
TRAIN = "#1f77b4"
HELDOUT = "#d62728"
STATUS_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#9a6700"}
# plotly's default colour cycle, so a grouped chart's series look the same in both renderers
CYCLE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _layout(x: str, y: str = "", height: int = 360, **more) -> dict:
    layout = {
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 20, "b": 50},
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}, "automargin": True},
        "showlegend": False,
    }
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def _errors(values: list[float], lows: list, highs: list) -> dict:
    """An asymmetric error bar: distances below and above each value (0 where unknown)."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [h - v if h is not None else 0 for v, h in zip(values, highs, strict=True)],
        "arrayminus": [v - lo if lo is not None else 0 for v, lo in zip(values, lows, strict=True)],
    }


def loss(train: list[tuple[int, float]], heldout: list[tuple[int, float]]) -> dict:
    """Training loss per optimizer step, and held-out loss where it was measured."""
    traces = []
    if train:
        steps, values = zip(*train, strict=True)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "train",
                "x": list(steps),
                "y": list(values),
                "line": {"color": TRAIN, "width": 1.5},
            }
        )
    if heldout:
        steps, values = zip(*heldout, strict=True)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "held-out",
                "x": list(steps),
                "y": list(values),
                "line": {"color": HELDOUT},
                "marker": {"color": HELDOUT},
            }
        )
    layout = _layout(
        "optimizer step", "loss (nats per supervised token)", showlegend=True, yaxis={"type": "log"}
    )
    return {"data": traces, "layout": layout}


def rungs(rows: list[tuple[str, float, float | None, float | None]], metric: str) -> dict:
    """One bar per rung (name, value, CI low, CI high); the tuned model stands out in colour."""
    names = [r[0] for r in rows]
    values = [r[1] for r in rows]
    bar = {
        "type": "bar",
        "orientation": "h",
        "y": names,
        "x": values,
        "error_x": _errors(values, [r[2] for r in rows], [r[3] for r in rows]),
        "marker": {"color": [TUNED if n == "tuned" else OTHER for n in names]},
        "text": [f"{v:.1%}" for v in values],
        "textposition": "outside",
        "cliponaxis": False,
    }
    layout = _layout(
        f"{metric} on held-out items (bars: 95% CI where measured)",
        height=80 + 50 * max(2, len(rows)),
        xaxis={"range": [0, 1], "tickformat": ".0%"},
        yaxis={"autorange": "reversed"},
    )
    return {"data": [bar], "layout": layout}


def grouped(
    groups: list[str],
    series: dict[str, list[float]],
    xlabel: str,
    cis: dict[str, list[tuple[float | None, float | None]]] | None = None,
) -> dict:
    """Per-class or per-slice scores, one bar per series (rung) within each group; `cis` adds
    each bar's interval (low, high) as an error bar where it is known."""
    traces = []
    for i, (name, values) in enumerate(series.items()):
        trace = {
            "type": "bar",
            "orientation": "h",
            "name": name,
            "y": groups,
            "x": values,
            "marker": {"color": CYCLE[i % len(CYCLE)]},
        }
        if cis and name in cis:
            trace["error_x"] = _errors(
                values, [lo for lo, _ in cis[name]], [hi for _, hi in cis[name]]
            )
        traces.append(trace)
    height = 80 + int(28 * len(groups) * max(1, len(series)) ** 0.5)
    layout = _layout(
        xlabel,
        height=max(200, height),
        barmode="group",
        showlegend=True,
        xaxis={"range": [0, 1], "tickformat": ".0%"},
        yaxis={"autorange": "reversed"},
    )
    return {"data": traces, "layout": layout}


def forest(rows: list[tuple[str, float, float, float, float | None, str]]) -> dict:
    """The gate's conditions as a forest plot: each change (name, estimate, CI low, CI high,
    bound, status) as a point with its interval, against its bound (a black tick) and zero.

    Estimates are fractions (changes; a rate for a floor), drawn in percent; larger is better
    for every condition, so a condition passes when its interval lies right of its bound.
    """
    names = [r[0] for r in rows]
    estimates = [r[1] * 100 for r in rows]
    point = {
        "type": "scatter",
        "mode": "markers",
        "name": "estimate",
        "y": names,
        "x": estimates,
        "error_x": _errors(estimates, [r[2] * 100 for r in rows], [r[3] * 100 for r in rows]),
        "marker": {"size": 9, "color": [STATUS_COLOURS.get(r[5], OTHER) for r in rows]},
    }
    bounded = [r for r in rows if r[4] is not None]
    bound = {
        "type": "scatter",
        "mode": "markers",
        "name": "bound",
        "y": [r[0] for r in bounded],
        "x": [r[4] * 100 for r in bounded],
        "marker": {"symbol": "line-ns-open", "size": 18, "color": "black", "line": {"width": 2}},
    }
    zero = {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": 0,
        "x1": 0,
        "y0": 0,
        "y1": 1,
        "line": {"color": OTHER, "width": 1, "dash": "dash"},
    }
    layout = _layout(
        "estimate, % (bar: CI; black tick: the bound it must clear)",
        height=100 + 45 * max(2, len(rows)),
        shapes=[zero],
        yaxis={"autorange": "reversed", "type": "category"},
    )
    return {"data": [point, bound] if bounded else [point], "layout": layout}


def confusion(labels: list[str], matrix: list[list[int]]) -> dict:
    """Rows: reference label; columns: predicted label (the last column gathers other answers)."""
    columns = [*labels, "(other)"][: len(matrix[0])] if matrix else []
    heat = {
        "type": "heatmap",
        "z": matrix,
        "x": columns,
        "y": labels,
        "colorscale": "Blues",
        "text": [[str(n) if n and len(labels) <= 20 else "" for n in row] for row in matrix],
        "texttemplate": "%{text}",
        "hovertemplate": "reference %{y}<br>predicted %{x}<br>%{z} items<extra></extra>",
    }
    layout = _layout(
        "predicted",
        "reference",
        height=560,
        xaxis={"type": "category", "tickangle": -60},
        yaxis={"type": "category", "autorange": "reversed"},
        margin={"l": 130, "b": 130},
    )
    return {"data": [heat], "layout": layout}


def histogram(values: list[int], xlabel: str) -> dict:
    """How many examples have each length (or any count)."""
    trace = {
        "type": "histogram",
        "x": list(values),
        "nbinsx": min(40, max(5, len(set(values)))),
        "marker": {"color": TRAIN},
    }
    return {"data": [trace], "layout": _layout(xlabel, "examples", height=280)}


def labels(counts: dict[str, dict[str, int]]) -> dict:
    """Label balance: examples per label, one series per split (train, held-out)."""
    names = sorted(
        {label for c in counts.values() for label in c},
        key=lambda k: -sum(c.get(k, 0) for c in counts.values()),
    )
    traces = [
        {
            "type": "bar",
            "orientation": "h",
            "name": split,
            "y": names,
            "x": [c.get(n, 0) for n in names],
            "marker": {"color": CYCLE[i % len(CYCLE)]},
        }
        for i, (split, c) in enumerate(counts.items())
    ]
    layout = _layout(
        "examples",
        height=max(200, 80 + 24 * len(names)),
        barmode="group",
        showlegend=True,
        yaxis={"autorange": "reversed"},
    )
    return {"data": traces, "layout": layout}


def points(figure: dict) -> int:
    """How many values a figure draws (the browser test checks charts are not empty)."""
    total = 0
    for trace in figure["data"]:
        if trace["type"] == "heatmap":
            total += sum(len(row) for row in trace["z"])
        else:
            total += len(trace.get("x") or [])
    return total
