"""The page shell every dashboard page shares (navigation, style, scripts), the chart element,
and the error page. Pages are server-rendered HTML; the one script (`static/dashboard.js`) draws
charts, sorts and filters tables, and follows server-sent events."""

from __future__ import annotations

import html
import json

from tuneloop.report import figures

NAV = [
    ("/", "Runs"),
    ("/compare", "Compare"),
    ("/lineage", "Lineage"),
    ("/playground", "Playground"),
]


def chart(fig: dict, alt: str) -> str:
    """A figure of `report.figures`, drawn in the browser by plotly.js (the static report draws
    the same dict as a PNG)."""
    spec = html.escape(json.dumps(fig, separators=(",", ":"), default=float), quote=True)
    return (
        f'<div class="chart" role="img" aria-label="{html.escape(alt)}" '
        f'data-points="{figures.points(fig)}" data-figure="{spec}"></div>'
    )


def page(title: str, body: str, status_line: str = "") -> str:
    links = "".join(f'<a href="{href}">{name}</a>' for href, name in NAV)
    return PAGE.format(
        title=html.escape(title), nav=links, body=body, status=html.escape(status_line)
    )


def error_page(status: int, title: str, message: str, fix: str | None = None) -> str:
    fix_line = f'<p class="fix">fix: {html.escape(fix)}</p>' if fix else ""
    body = (
        f'<div class="error" data-status="{status}"><h2>{status}: {html.escape(title)}</h2>'
        f"<p>{html.escape(message)}</p>{fix_line}</div>"
    )
    return page(title, body)


def esc(value) -> str:
    return html.escape("-" if value is None else str(value))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - tuneloop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #222; }}
header {{ background: #24292f; color: #fff; padding: .6em 1.5em; display: flex; gap: 1.5em;
         align-items: baseline; }}
header b {{ font-size: 1.1em; }}
header a {{ color: #d0d7de; text-decoration: none; }}
header a:hover {{ color: #fff; }}
main {{ max-width: 1180px; margin: 1em auto 3em; padding: 0 1.5em; }}
h1 {{ font-size: 1.4em; }}
h2 {{ font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ddd; padding: 3px 8px; vertical-align: top; text-align: left; }}
th.sortable {{ cursor: pointer; user-select: none; }}
th.sortable::after {{ content: " \\2195"; color: #999; }}
td pre, .answer {{ white-space: pre-wrap; margin: 0; font: 12px/1.4 ui-monospace, monospace; }}
.chart {{ width: 100%; max-width: 900px; margin: .5em 0; }}
img.plot {{ max-width: 100%; }}
.pass {{ color: #1a7f37; font-weight: bold; }}
.fail {{ color: #cf222e; font-weight: bold; }}
.inconclusive {{ color: #9a6700; font-weight: bold; }}
.live {{ background: #fff8c5; }}
.error {{ border: 2px solid #cf222e; padding: .5em 1.2em; border-radius: 6px; }}
.fix {{ color: #555; }}
.muted {{ color: #777; }}
.controls {{ margin: .8em 0; display: flex; gap: 1em; flex-wrap: wrap; align-items: end; }}
.side {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 1em; }}
.side section {{ border: 1px solid #ddd; border-radius: 6px; padding: .5em 1em; }}
svg a text {{ fill: #0969da; }}
</style>
<script src="/static/plotly.min.js"></script>
<script src="/static/dashboard.js" defer></script>
</head>
<body><header><b>tuneloop</b>{nav}<span class="muted">{status}</span></header>
<main><h1>{title}</h1>
{body}
</main></body></html>
"""
