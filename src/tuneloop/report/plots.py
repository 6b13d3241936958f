"""The static report's renderer: a figure of `figures.py` (plotly.js's shape) drawn with
matplotlib as PNG bytes (no files, no display). The dashboard draws the same dicts with
plotly.js, so what a figure shows is decided in `figures.py` alone.

It understands what `figures.py` uses, nothing more: scatter (lines, markers, asymmetric
`error_x`), horizontal bars (grouped, `error_x`, colours, text), heatmaps with text, histograms,
axis titles, ranges, log and reversed axes, and vertical line shapes.
"""

from __future__ import annotations

import io

DPI = 100
WIDTH_PX = 640


def png(figure: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = figure.get("layout", {})
    fig, ax = plt.subplots(figsize=(WIDTH_PX / DPI, layout.get("height", 360) / DPI), dpi=DPI)
    traces = figure["data"]
    bars = [t for t in traces if t["type"] == "bar"]
    categories = _categories(traces)
    for trace in traces:
        kind = trace["type"]
        if kind == "scatter":
            _scatter(ax, trace, categories)
        elif kind == "bar":
            _bar(ax, trace, bars.index(trace), len(bars), categories)
        elif kind == "heatmap":
            _heatmap(fig, ax, trace)
        elif kind == "histogram":
            colour = (trace.get("marker") or {}).get("color")
            ax.hist(trace["x"], bins=trace.get("nbinsx", 10), color=colour)
        else:  # pragma: no cover - figures.py uses only the kinds above
            raise ValueError(f"the report cannot draw a {kind!r} trace")
    _axes(ax, layout, categories, traces)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _categories(traces: list[dict]) -> list[str] | None:
    """The category axis (y) shared by bar and scatter traces that name their rows."""
    names: list[str] = []
    for trace in traces:
        if (
            trace["type"] in ("bar", "scatter")
            and trace.get("y")
            and isinstance(trace["y"][0], str)
        ):
            names += [n for n in trace["y"] if n not in names]
    return names or None


def _xerr(trace: dict):
    err = trace.get("error_x")
    return [err["arrayminus"], err["array"]] if err else None


def _scatter(ax, trace: dict, categories: list[str] | None) -> None:
    mode = trace.get("mode", "lines")
    marker = trace.get("marker") or {}
    colour = (trace.get("line") or {}).get("color") or marker.get("color")
    ys = [categories.index(y) for y in trace["y"]] if categories else trace["y"]
    if marker.get("symbol", "").startswith("line-ns"):  # the gate's bound: a vertical tick
        ax.plot(trace["x"], ys, linestyle="none", marker="|", markersize=18, color="black")
        return
    if "lines" in mode:
        ax.plot(trace["x"], ys, "o-" if "markers" in mode else "-", color=colour,
                label=trace.get("name"), linewidth=1.2)  # fmt: skip
        return
    colours = colour if isinstance(colour, list) else [colour] * len(ys)
    xerr = _xerr(trace)
    for i, (x, y) in enumerate(zip(trace["x"], ys, strict=True)):
        one = [[xerr[0][i]], [xerr[1][i]]] if xerr else None
        ax.errorbar([x], [y], xerr=one, fmt="o", color=colours[i], capsize=4)


def _bar(ax, trace: dict, index: int, count: int, categories: list[str]) -> None:
    import numpy as np

    height = 0.8 / count
    y = np.array([categories.index(n) for n in trace["y"]], dtype=float)
    y += (index - (count - 1) / 2) * height
    colour = (trace.get("marker") or {}).get("color")
    ax.barh(y, trace["x"], height, xerr=_xerr(trace), capsize=3, color=colour,
            label=trace.get("name"))  # fmt: skip
    for yi, value, text in zip(y, trace["x"], trace.get("text") or [], strict=False):
        ax.text(min(value + 0.02, 0.9), yi, text, va="center")


def _heatmap(fig, ax, trace: dict) -> None:
    matrix = trace["z"]
    image = ax.imshow(matrix, cmap="Blues")
    peak = max((max(row) for row in matrix if row), default=0)
    for i, row in enumerate(trace.get("text") or []):
        for j, text in enumerate(row):
            if text:
                colour = "white" if matrix[i][j] > peak / 2 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(trace["x"])), trace["x"], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(trace["y"])), trace["y"], fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.7)


def _axes(ax, layout: dict, categories: list[str] | None, traces: list[dict]) -> None:
    xaxis, yaxis = layout.get("xaxis") or {}, layout.get("yaxis") or {}
    ax.set_xlabel((xaxis.get("title") or {}).get("text", ""))
    ax.set_ylabel((yaxis.get("title") or {}).get("text", ""))
    if yaxis.get("type") == "log":
        ax.set_yscale("log")
    if "range" in xaxis:
        ax.set_xlim(*xaxis["range"])
    heatmap = any(t["type"] == "heatmap" for t in traces)
    if categories and not heatmap:
        ax.set_yticks(range(len(categories)), categories, fontsize=8 if len(categories) > 8 else 10)
        ax.set_ylim(len(categories) - 0.5, -0.5)  # first category on top, as plotly's reversed
    elif yaxis.get("autorange") == "reversed" and not heatmap:
        ax.invert_yaxis()
    for shape in layout.get("shapes") or []:
        if shape.get("type") == "line" and shape.get("x0") == shape.get("x1"):
            ax.axvline(shape["x0"], color="#7f7f7f", linewidth=0.8, linestyle="--")
    if any(t["type"] == "scatter" for t in traces) or yaxis.get("type") == "log":
        ax.grid(alpha=0.3)
    if layout.get("showlegend") and len(traces) > 1:
        ax.legend(loc="best", fontsize=8)
