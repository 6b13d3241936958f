"""A run's page: the recipe, the data audit, curves, every evaluation (rungs, probes, slices
with CIs), the gate verdict with its reasons, the failures with their nearest training examples,
and the exports. Its sections are the static report's (`report.html.report_sections`) with
interactive charts; a run still training grows its loss curve through server-sent events."""

from __future__ import annotations

import html

from tuneloop.errors import UserError
from tuneloop.report.html import report_sections
from tuneloop.ui import live
from tuneloop.ui.layout import chart, esc, page
from tuneloop.ui.store import PageError, Workspace

FAILURES_SHOWN = 20
NEAREST = 3


def run_page(ws: Workspace, run_id: str) -> str:
    run = ws.run(run_id)
    info = ws.info(run)
    # report_sections reads the run's files itself; what it cannot read is a corrupt folder
    try:
        sections = report_sections(run, draw=chart)
    except UserError as err:
        raise PageError(422, "corrupt run folder", err.problems[0].render()) from None
    except (ValueError, KeyError, TypeError, IndexError, OSError) as err:
        raise PageError(
            422,
            "corrupt run folder",
            f"a file of run {run.id} cannot be read ({type(err).__name__}: {err})",
            "fix or remove the file; `tuneloop report` names it too",
        ) from None
    status = info.get("status", "-")
    links = [
        f'<a href="/lineage?run={esc(run.id)}">lineage</a>',
        f'<a href="/data/{esc(run.id)}">data</a>',
    ]
    if (run.eval_dir / "tuned.jsonl").is_file():
        links.append(
            f'<a href="/compare?a={esc(run.id)}:zero-shot&amp;b={esc(run.id)}:tuned">'
            "compare tuned with zero-shot</a>"
        )
    if (run.path / "report.html").is_file():
        links.append(f'<a href="/runs/{esc(run.id)}/report.html">static report</a>')
    parts = [
        f'<p>status <b data-field="status">{esc(status)}</b>'
        + (
            f' &middot; refines <a href="/runs/{esc(info["parent"])}">{esc(info["parent"])}</a>'
            if info.get("parent")
            else ""
        )
        + " &middot; "
        + " &middot; ".join(links)
        + "</p>",
    ]
    if status in live.LIVE:
        parts.append(_live_block(ws, run, info))
    parts += [_with_ids(s) for s in sections]
    parts.append(_failures_nearest(run))
    parts.append(_exports(ws, run))
    parts.append(_recipe(ws, run))
    return page(f"Run {run.id}", "\n".join(p for p in parts if p), str(ws.root))


def _with_ids(section: str) -> str:
    """Anchors for the lineage graph's links: #loss, #gate, #failures ..."""
    for title, anchor in (
        ("<h2>Loss", "loss"),
        ("<h2>Gate", "gate"),
        ("<h2>Baseline ladder", "eval"),
        ("<h2>Failures", "failures"),
    ):
        if section.startswith(title):
            return section.replace("<h2>", f'<h2 id="{anchor}">', 1)
    return section


def _live_block(ws: Workspace, run, info: dict) -> str:
    records = ws.jsonl(run.metrics_path)
    p = live.summary(run.id, info, records)
    from tuneloop.ui.runs import fmt

    cells = "".join(
        f'<td><span data-field="{key}">{fmt(p[key], kind)}</span></td>'
        for key, kind in (
            ("step", "n"),
            ("loss", "loss"),
            ("lr", "lr"),
            ("tokens_per_s", "speed"),
            ("eta_s", "eta"),
        )
    )
    has_loss_chart = any("loss" in r for r in records)
    note = "" if has_loss_chart else chart(_empty_loss(), "loss curves")
    return (
        f'<h2>Training now</h2><table id="live-run" data-run="{esc(run.id)}" '
        f'data-live="/events/progress?run={esc(run.id)}"><tr><th>step</th><th>loss</th>'
        f"<th>lr</th><th>tokens/s</th><th>ETA</th></tr><tr>{cells}</tr></table>{note}"
    )


def _empty_loss() -> dict:
    from tuneloop.report import figures

    fig = figures.loss([], [])
    fig["data"] = [{"type": "scatter", "mode": "lines", "name": "train", "x": [], "y": []}]
    return fig


def _failures_nearest(run) -> str:
    """Each failed item beside the training examples nearest to it (`tuneloop failures`)."""
    if not (run.eval_dir / "tuned.jsonl").is_file():
        return ""
    from tuneloop.refine import failures_with_nearest

    try:
        records = failures_with_nearest(run, NEAREST)
    except UserError as err:
        return f"<h2>Failures with their nearest training examples</h2><p>{esc(err)}</p>"
    rows = []
    for r in records[:FAILURES_SHOWN]:
        nearest = "".join(
            f"<li><pre>{esc(n['prompt'][:200])}</pre> &rarr; <b>{esc(n['answer'])}</b> "
            f'<span class="muted">({esc(n["source"])}, bm25 {n["bm25"]})</span></li>'
            for n in r["nearest_train"]
        )
        rows.append(
            f"<tr><td><pre>{esc(r['prompt'][:300])}</pre></td><td>{esc(r['reference'])}"
            f"</td><td>{esc(r['prediction'])}</td><td>{r['score']:.2f}</td>"
            f"<td><ul>{nearest}</ul></td></tr>"
        )
    return (
        f'<h2 id="nearest">Failures with their nearest training examples ({len(records)})</h2>'
        f"<p>The first {min(len(records), FAILURES_SHOWN)}; the same list as "
        f"<code>tuneloop failures {esc(run.id)}</code>.</p><table><tr><th>prompt</th>"
        "<th>reference</th><th>tuned</th><th>score</th><th>nearest training examples</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _exports(ws: Workspace, run) -> str:
    rows = []
    reg = ws.registry()
    if reg is not None:
        with reg:
            for e in reg.exports(run.id):
                details = e.get("details") or {}
                shown = ", ".join(
                    f"{k}={v}"
                    for k, v in details.items()
                    if isinstance(v, str | int | float | bool)
                )[:300]
                rows.append([e["kind"], e["path"], shown or "-", e["created"]])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    table = (
        (f"<table><tr><th>kind</th><th>path</th><th>details</th><th>when</th></tr>{body}</table>")
        if rows
        else (f"<p>None yet: <code>tuneloop export {esc(run.id)} --merge --gguf</code>.</p>")
    )
    return f'<h2 id="exports">Exports</h2>{table}'


def _recipe(ws: Workspace, run) -> str:
    text = ws.text(run.recipe_path)
    if text is None:
        return ""
    return f'<h2 id="recipe">Recipe (resolved)</h2><pre>{html.escape(text)}</pre>'
