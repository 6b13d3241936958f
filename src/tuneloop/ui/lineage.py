"""The lineage page: dataset -> run -> evaluations -> gate -> exports as a graph (server-drawn
SVG, one column per stage), each node a link to its page; a refined run hangs off its parent.

It reads the registry (read-only); a workspace without one shows what the run folders say.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.ui.layout import esc, page
from tuneloop.ui.store import PageError, Workspace

COLUMNS = ["data", "run", "evaluations", "gate", "exports"]
COL_W, NODE_W, NODE_H, ROW_H = 250, 215, 26, 34
KIND_COLOURS = {
    "dataset": "#ddf4ff",
    "run": "#fff8c5",
    "eval": "#f6f8fa",
    "pass": "#dafbe1",
    "fail": "#ffebe9",
    "export": "#fbefff",
}


@dataclass
class Graph:
    nodes: dict[str, dict] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    free: list[int] = field(default_factory=lambda: [0] * len(COLUMNS))

    def add(
        self, key: str, col: int, row: int, label: str, href: str, kind: str, title: str = ""
    ) -> None:
        if key not in self.nodes:
            self.nodes[key] = {
                "col": col,
                "row": row,
                "label": label,
                "href": href,
                "kind": kind,
                "title": title or label,
            }
            self.free[col] = max(self.free[col], row + 1)


def build(ws: Workspace, only: str | None = None) -> Graph:
    reg = ws.registry()
    if reg is None:
        runs, evals, gates, exports, datasets = _from_folders(ws)
    else:
        with reg:
            runs = [r for r in reg.runs() if r["id"] in set(ws.run_ids())]
            evals = {r["id"]: reg.evals(r["id"]) for r in runs}
            gates = {r["id"]: reg.gates(r["id"]) for r in runs}
            exports = {r["id"]: reg.exports(r["id"]) for r in runs}
            ids = {r[k] for r in runs for k in ("train_dataset_id", "heldout_dataset_id") if r[k]}
            datasets = {i: reg.dataset(i) for i in ids}
    if only:
        runs = _family(runs, only)
        if not runs:
            raise PageError(404, "no such run", f"the registry has no run `{only}`")
    g = Graph()
    for r in runs:
        band = max(g.free[1:])
        run_id = r["id"]
        for k, side in (("train_dataset_id", "train"), ("heldout_dataset_id", "held-out")):
            d = datasets.get(r.get(k))
            if d:
                key = f"d{d['id']}"
                lint = d.get("lint") or {}
                lint_note = (
                    (f", lint {lint.get('error', 0)} errors {lint.get('warning', 0)} warnings")
                    if lint
                    else ""
                )
                g.add(
                    key,
                    0,
                    max(g.free[0], band),
                    f"{side}: {Path(d['path']).name} ({d['n_examples']})",
                    f"/data/{run_id}",
                    "dataset",
                    f"{d['path']} sha256 {d['sha256'][:16]}{lint_note}",
                )
                g.edges.append((key, f"r:{run_id}"))
        status = r.get("status", "-")
        g.add(
            f"r:{run_id}",
            1,
            band,
            f"{run_id} [{status}]",
            f"/runs/{run_id}",
            "run",
            f"{run_id}: {status}, model {r.get('model_name') or '-'}",
        )
        if r.get("parent_id") and f"r:{r['parent_id']}" in g.nodes:
            g.edges.append((f"r:{r['parent_id']}", f"r:{run_id}"))
        latest = {}
        for e in evals.get(run_id, []):
            latest[f"{e['suite']}/{e['rung']}"] = e
        for i, (name, e) in enumerate(latest.items()):
            metrics = e.get("metrics") or {}
            headline = next(
                (
                    f"{k} {v:.1%}"
                    for k, v in metrics.items()
                    if k in ("exact_match", "refusal_rate", "accuracy")
                    and isinstance(v, int | float)
                ),
                "",
            )
            key = f"e:{run_id}:{name}"
            g.add(key, 2, band + i, f"{name} {headline}", f"/runs/{run_id}#eval", "eval")
            g.edges.append((f"r:{run_id}", key))
        for gate in gates.get(run_id, [])[-1:]:
            key = f"g:{run_id}"
            verdict = "PASS" if gate["passed"] else "FAIL"
            g.add(
                key,
                3,
                band,
                f"gate: {verdict}",
                f"/runs/{run_id}#gate",
                "pass" if gate["passed"] else "fail",
            )
            for name in latest:
                g.edges.append((f"e:{run_id}:{name}", key))
        for i, x in enumerate(exports.get(run_id, [])):
            key = f"x:{run_id}:{i}"
            g.add(
                key,
                4,
                band + i,
                f"{x['kind']}: {Path(x['path']).name}",
                f"/runs/{run_id}#exports",
                "export",
                x["path"],
            )
            g.edges.append((f"g:{run_id}" if f"g:{run_id}" in g.nodes else f"r:{run_id}", key))
    return g


def _family(runs: list[dict], run_id: str) -> list[dict]:
    """The run, its ancestors (refine's parents) and its descendants, in registry order."""
    parent = {r["id"]: r.get("parent_id") for r in runs}
    keep, at = set(), run_id
    while at and at not in keep and at in parent:
        keep.add(at)
        at = parent[at]
    grew = True
    while grew:
        grew = False
        for r in runs:
            if r["id"] not in keep and r.get("parent_id") in keep:
                keep.add(r["id"])
                grew = True
    return [r for r in runs if r["id"] in keep]


def _from_folders(ws: Workspace):
    """The same shapes as the registry's rows, from run.json, eval/*.json and gate.json."""
    runs, evals, gates = [], {}, {}
    for run_id in ws.run_ids():
        run = ws.run(run_id)
        try:
            info = ws.info(run)
        except PageError:
            info = {"status": "unreadable"}
        runs.append(
            {
                "id": run_id,
                "status": info.get("status", "-"),
                "parent_id": info.get("parent"),
                "model_name": None,
            }
        )
        evals[run_id] = []
        for path in sorted(run.eval_dir.glob("*.json")) if run.eval_dir.is_dir() else []:
            summary = ws.json(path)
            if isinstance(summary, dict) and "rung" in summary:
                evals[run_id].append(
                    {
                        "suite": summary.get("suite", "heldout"),
                        "rung": summary["rung"],
                        "metrics": summary,
                    }
                )
        if (run.path / "gate.json").is_file():
            gates[run_id] = [{"passed": bool(ws.json(run.path / "gate.json").get("passed"))}]
    return runs, evals, gates, {}, {}


def svg(g: Graph) -> str:
    rows = max(g.free) if g.nodes else 1
    width, height = COL_W * len(COLUMNS) + 40, ROW_H * rows + 50
    out = [
        f'<svg id="lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-size="12">'
    ]
    for c, name in enumerate(COLUMNS):
        out.append(f'<text x="{40 + c * COL_W}" y="16" font-weight="bold">{name}</text>')

    def box(key):
        n = g.nodes[key]
        return 40 + n["col"] * COL_W, 30 + n["row"] * ROW_H

    for a, b in g.edges:
        if a not in g.nodes or b not in g.nodes:
            continue
        (xa, ya), (xb, yb) = box(a), box(b)
        ya, yb = ya + NODE_H / 2, yb + NODE_H / 2
        if g.nodes[a]["col"] == g.nodes[b]["col"]:  # a parent run: a loop on the left side
            d = f"M{xa},{ya} C{xa - 30},{ya} {xb - 30},{yb} {xb},{yb}"
            out.append(
                f'<path class="edge parent" d="{d}" fill="none" stroke="#bf3989" '
                'stroke-dasharray="4 3"/>'
            )
        else:
            xa += NODE_W
            mid = (xa + xb) / 2
            d = f"M{xa},{ya} C{mid},{ya} {mid},{yb} {xb},{yb}"
            out.append(f'<path class="edge" d="{d}" fill="none" stroke="#8c959f"/>')
    for key, n in g.nodes.items():
        x, y = box(key)
        label = n["label"] if len(n["label"]) <= 32 else n["label"][:31] + "\u2026"
        out.append(
            f'<a href="{html.escape(n["href"])}" class="node" data-kind="{n["kind"]}">'
            f"<title>{html.escape(n['title'])}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5" '
            f'fill="{KIND_COLOURS.get(n["kind"], "#fff")}" stroke="#57606a"/>'
            f'<text x="{x + 7}" y="{y + 17}">{html.escape(label)}</text></a>'
        )
    out.append("</svg>")
    return "".join(out)


def lineage_page(ws: Workspace, run_id: str | None) -> str:
    if run_id:
        ws.run(run_id)  # 404 for an unknown id
    g = build(ws, run_id)
    scope = (
        (
            f"<p>Run {esc(run_id)} with its parents and the runs that refine it; "
            '<a href="/lineage">all runs</a>.</p>'
        )
        if run_id
        else ""
    )
    if not g.nodes:
        return page("Lineage", scope + "<p>No runs yet.</p>", str(ws.root))
    note = (
        '<p class="muted">Each box links to its page. Dashed: a run refined from its '
        "parent (<code>tuneloop refine</code>).</p>"
    )
    return page(
        "Lineage", scope + note + f'<div style="overflow-x:auto">{svg(g)}</div>', str(ws.root)
    )
