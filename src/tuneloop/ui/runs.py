"""The runs page: every run with its status, method, objective, data, key metric with its CI
and gate verdict; sortable and filterable in the browser; a running run's loss, learning rate,
tokens/s and ETA follow its training through server-sent events (`live`)."""

from __future__ import annotations

import html
from pathlib import Path

from tuneloop.refine import recorded_metric
from tuneloop.report import render
from tuneloop.report.gate import verdict
from tuneloop.report.slices import summary_ci
from tuneloop.ui import live
from tuneloop.ui.layout import esc, page
from tuneloop.ui.store import PageError, Workspace

HEADER = [
    "run",
    "status",
    "method",
    "objective",
    "data",
    "key metric [95% CI]",
    "gate",
    "step",
    "loss",
    "lr",
    "tokens/s",
    "ETA",
    "created",
]


def run_row(ws: Workspace, run_id: str, registry_rows: dict) -> dict:
    """What the table shows of one run; a run folder that cannot be read says so in its row."""
    try:
        run = ws.run(run_id)
        info = ws.info(run)
    except PageError as err:
        return {"id": run_id, "error": err.message}
    recipe = _recipe(ws, run)
    train = recipe.get("train") or {}
    status = info.get("status", "-")
    if live.process_gone(registry_rows.get(run_id)) and status in live.LIVE:
        status = "stopped (its process is gone)"
    data = info.get("data") or {}
    train_file = data.get("train_file") or (recipe.get("data") or {}).get("train")
    row = {
        "id": run_id,
        "status": status,
        "method": info.get("method") or train.get("method", "-"),
        "objective": info.get("objective") or train.get("objective", "-"),
        "data": f"{Path(train_file).name} ({data.get('n_train', '?')})" if train_file else "-",
        "metric": "-",
        "metric_value": None,
        "gate": ("-", ""),
        "created": info.get("created", "-"),
        "parent": info.get("parent"),
    }
    tuned = run.eval_dir / "tuned.json"
    if tuned.is_file():
        summary = ws.json(tuned)
        metric = recorded_metric(summary)
        value = summary.get(metric)
        if isinstance(value, int | float):
            low, high = summary_ci(summary, metric)
            row["metric"] = f"{metric} {render.with_ci(value, low, high)}"
            row["metric_value"] = value
    gate = run.path / "gate.json"
    if gate.is_file():
        row["gate"] = verdict(ws.json(gate))
    records = ws.jsonl(run.metrics_path) if run.metrics_path.is_file() else []
    row["progress"] = live.summary(run_id, info, records)
    return row


def _recipe(ws: Workspace, run) -> dict:
    import yaml

    text = ws.text(run.recipe_path)
    try:
        recipe = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as err:
        raise PageError(422, "corrupt run folder", f"{run.recipe_path}: {err}") from None
    return recipe if isinstance(recipe, dict) else {}


def fmt(value, kind: str) -> str:
    if not isinstance(value, int | float):
        return "-"
    if kind == "loss":
        return f"{value:.4f}"
    if kind == "lr":
        return f"{value:.2e}"
    if kind == "eta":
        minutes, seconds = divmod(int(round(value)), 60)
        return f"{minutes}:{seconds:02d}"
    return f"{value:,.0f}" if kind == "speed" else str(value)


def runs_page(ws: Workspace) -> str:
    banner = ""
    registry_rows: dict = {}
    try:
        reg = ws.registry()
        if reg is not None:
            with reg:
                registry_rows = {r["id"]: r for r in reg.runs()}
    except PageError as err:
        banner = f'<div class="error"><b>{esc(err.title)}</b>: {esc(err.message)}</div>'
    rows = [run_row(ws, run_id, registry_rows) for run_id in reversed(ws.run_ids())]
    body = [banner]
    if not rows:
        body.append(
            f"<p>No runs in {esc(ws.root)} yet: <code>tuneloop train RECIPE</code> "
            "or <code>tuneloop quickstart</code> makes one.</p>"
        )
    body.append(
        '<div class="controls"><label>filter <input id="filter" type="search" '
        'placeholder="any text in the row"></label><label>status <select id="status-filter">'
        '<option value="">any</option><option>finished</option><option>training</option>'
        "<option>failed</option></select></label></div>"
    )
    head = "".join(
        f'<th class="sortable" data-col="{i}">{html.escape(h)}</th>' for i, h in enumerate(HEADER)
    )
    trs = []
    for r in rows:
        if "error" in r:
            trs.append(
                f'<tr data-run="{esc(r["id"])}" data-status="corrupt"><td>'
                f'<a href="/runs/{esc(r["id"])}">{esc(r["id"])}</a></td>'
                f'<td class="fail">unreadable</td><td colspan="{len(HEADER) - 2}">'
                f"{esc(r['error'])}</td></tr>"
            )
            continue
        p = r["progress"]
        status = r["status"]
        cls = ' class="live"' if status in live.LIVE else ""
        headline, gate_cls = r["gate"]
        parent = f' <span class="muted">(refines {esc(r["parent"])})</span>' if r["parent"] else ""
        cells = [
            f'<a href="/runs/{esc(r["id"])}">{esc(r["id"])}</a>{parent}',
            f'<span data-field="status">{esc(status)}</span>',
            esc(r["method"]),
            esc(r["objective"]),
            esc(r["data"]),
            f'<span data-sort="{r["metric_value"] if r["metric_value"] is not None else -1}">'
            f"{esc(r['metric'])}</span>",
            f'<span class="{gate_cls}">{esc(headline)}</span>',
            f'<span data-field="step">{esc(p["step"])}'
            + (f" / {esc(p['total_steps'])}" if p.get("total_steps") else "")
            + "</span>",
            f'<span data-field="loss">{fmt(p["loss"], "loss")}</span>',
            f'<span data-field="lr">{fmt(p["lr"], "lr")}</span>',
            f'<span data-field="tokens_per_s">{fmt(p["tokens_per_s"], "speed")}</span>',
            f'<span data-field="eta_s">{fmt(p["eta_s"], "eta")}</span>',
            esc(r["created"]),
        ]
        trs.append(
            f'<tr data-run="{esc(r["id"])}" data-status="{esc(status)}"{cls}>'
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    body.append(
        f'<table id="runs" data-live="/events/progress"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(trs)}</tbody></table>"
    )
    return page("Runs", "".join(body), str(ws.root))
