"""The report's plots: matplotlib figures rendered to PNG bytes (no files, no display)."""

from __future__ import annotations

import io


def _figure(width: float = 6.4, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def loss_curves(train: list[tuple[int, float]], heldout: list[tuple[int, float]]) -> bytes:
    """Training loss per optimizer step, and held-out loss where it was measured."""
    plt, fig, ax = _figure()
    if train:
        ax.plot(*zip(*train, strict=True), label="train", color="#1f77b4", linewidth=1.2)
    if heldout:
        ax.plot(*zip(*heldout, strict=True), "o-", label="held-out", color="#d62728")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per supervised token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(plt, fig)


def rung_bars(rows: list[tuple[str, float, float | None, float | None]], metric: str) -> bytes:
    """One bar per rung (name, value, CI low, CI high); the tuned model stands out in colour."""
    plt, fig, ax = _figure(6.4, 0.5 + 0.5 * max(2, len(rows)))
    names = [r[0] for r in rows]
    values = [r[1] for r in rows]
    lows = [r[1] - r[2] if r[2] is not None else 0 for r in rows]
    highs = [r[3] - r[1] if r[3] is not None else 0 for r in rows]
    colours = ["#2ca02c" if n == "tuned" else "#7f7f7f" for n in names]
    ax.barh(names, values, xerr=[lows, highs], color=colours, capsize=4)
    for y, v in enumerate(values):
        ax.text(min(v + 0.02, 0.9), y, f"{v:.1%}", va="center")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{metric} on held-out items (bars: 95% CI where measured)")
    ax.invert_yaxis()
    return _png(plt, fig)


def grouped_bars(
    groups: list[str],
    series: dict[str, list[float]],
    xlabel: str,
    cis: dict[str, list[tuple[float | None, float | None]]] | None = None,
) -> bytes:
    """Per-class or per-slice scores, one bar per series (rung) within each group; `cis` adds
    each bar's interval (low, high) as an error bar where it is known."""
    import numpy as np

    plt, fig, ax = _figure(6.4, 0.6 + 0.28 * len(groups) * max(1, len(series)) ** 0.5)
    y = np.arange(len(groups))
    height = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xerr = None
        if cis and name in cis:
            # matplotlib wants distances below and above each bar: shape (2, n_groups)
            pairs = list(zip(values, cis[name], strict=True))
            xerr = [[v - lo if lo is not None else 0 for v, (lo, _) in pairs],
                    [hi - v if hi is not None else 0 for v, (_, hi) in pairs]]  # fmt: skip
        ax.barh(y + i * height, values, height, xerr=xerr, capsize=2, label=name)
    ax.set_yticks(y + height * (len(series) - 1) / 2, groups, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    return _png(plt, fig)


def forest(rows: list[tuple[str, float, float, float, float | None, str]]) -> bytes:
    """The gate's conditions as a forest plot: each change (name, estimate, CI low, CI high,
    bound, status) as a point with its interval, against its bound (a black tick) and zero.

    Estimates are fractions (changes; a rate for a floor), drawn in percent; larger is better
    for every condition, so a condition passes when its interval lies right of its bound.
    """
    plt, fig, ax = _figure(6.4, 0.8 + 0.45 * max(2, len(rows)))
    colours = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#9a6700"}
    for y, (_, est, low, high, bound, status) in enumerate(rows):
        colour = colours.get(status, "#7f7f7f")
        ax.errorbar([est * 100], [y], xerr=[[(est - low) * 100], [(high - est) * 100]],
                    fmt="o", color=colour, capsize=4)  # fmt: skip
        if bound is not None:
            ax.plot([bound * 100], [y], marker="|", markersize=18, color="black")
    ax.axvline(0, color="#7f7f7f", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("estimate, % (bar: CI; black tick: the bound it must clear)")
    ax.grid(axis="x", alpha=0.3)
    return _png(plt, fig)


def confusion(labels: list[str], matrix: list[list[int]]) -> bytes:
    """Rows: reference label; columns: predicted label (the last column gathers other answers)."""
    plt, fig, ax = _figure(6.4, 5.6)
    image = ax.imshow(matrix, cmap="Blues")
    ticks = range(len(labels))
    columns = [*labels, "(other)"][: len(matrix[0])]
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    if len(labels) <= 20:
        for i, row in enumerate(matrix):
            for j, n in enumerate(row):
                if n:
                    dark = n > max(map(max, matrix)) / 2
                    colour = "white" if dark else "black"
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, shrink=0.7)
    return _png(plt, fig)


def histogram(values: list[int], xlabel: str) -> bytes:
    plt, fig, ax = _figure(6.4, 2.8)
    ax.hist(values, bins=min(40, max(5, len(set(values)))), color="#1f77b4")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    return _png(plt, fig)
