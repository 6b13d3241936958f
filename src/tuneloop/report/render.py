"""The report's HTML pieces: tables, embedded plots and how numbers are written."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable

# How a page shows a figure of `figures.py`: (figure, alt text) -> HTML. The report embeds a PNG
# (`figure`); the dashboard passes its own, which hands the same figure to plotly.js.
Draw = Callable[[dict, str], str]


def img(png: bytes, alt: str) -> str:
    """A PNG embedded in the page (no file beside it, nothing fetched)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def figure(fig: dict, alt: str) -> str:
    """A figure of `figures.py`, drawn as an embedded PNG (the static report's way)."""
    from tuneloop.report import plots

    return img(plots.png(fig), alt)


class Raw(str):
    """A cell already written as HTML (its parts escaped by whoever built it)."""


def table(rows: list[list], header: list[str]) -> str:
    """Every cell escaped, but `Raw` ones."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    cell = lambda c: c if isinstance(c, Raw) else html.escape(str(c))  # noqa: E731
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pct(x) -> str:
    """A rate: 0.625 -> '62.5%'; '-' where nothing was measured."""
    return f"{x:.1%}" if isinstance(x, int | float) else "-"


def signed_pct(x) -> str:
    """A change of rates (or a rate beside changes), signed: 0.094 -> '+9.4%'."""
    return f"{x + 0.0:+.1%}" if isinstance(x, int | float) else "-"


def with_ci(value, low, high, fmt=pct) -> str:
    """'62.5% [40.1%, 80.2%]', or the value alone where no interval is known."""
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]" if low is not None else fmt(value)
