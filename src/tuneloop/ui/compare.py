"""The compare page: two evaluations (runs or rungs) on the same items. The numbers are
`tuneloop compare`'s (`evaluate.compare.compare_items`: paired bootstrap CI, exact McNemar),
optionally on one slice; below them, the discordant items side by side.

An evaluation is named `RUN:RUNG` (`20261202-025251-quickstart:tuned`,
`...:probes/tuned-safety`); only files under the workspace's run folders are read.
"""

from __future__ import annotations

from tuneloop.errors import UserError
from tuneloop.evaluate.compare import compare_items, item_key
from tuneloop.evaluate.scoring import slice_value
from tuneloop.evaluate.stats import mean_ci
from tuneloop.refine import recorded_metric
from tuneloop.report import figures
from tuneloop.ui.layout import chart, esc, page
from tuneloop.ui.store import RUNG, PageError, Workspace

DISCORDANT_SHOWN = 200


def evaluations(ws: Workspace) -> list[str]:
    """Every `RUN:RUNG` with per-item results, newest run first."""
    out = []
    for run_id in reversed(ws.run_ids()):
        eval_dir = ws.runs_root / run_id / "eval"
        if eval_dir.is_dir():
            for path in sorted(eval_dir.rglob("*.jsonl")):
                rung = path.relative_to(eval_dir).with_suffix("").as_posix()
                if RUNG.fullmatch(rung):
                    out.append(f"{run_id}:{rung}")
    return out


def load(ws: Workspace, spec: str) -> tuple[list[dict], dict | None]:
    """The items and summary of `RUN:RUNG`."""
    run_id, sep, rung = (spec or "").partition(":")
    rung = rung if sep else "tuned"
    run = ws.run(run_id)
    if not RUNG.fullmatch(rung):
        raise PageError(404, "no such evaluation", f"`{rung}` is not an evaluation name")
    path = run.eval_dir / f"{rung}.jsonl"
    items = ws.jsonl(path)
    if not items:
        raise PageError(
            404,
            "no such evaluation",
            f"run {run.id} has no evaluation `{rung}`",
            f"evaluate it first: tuneloop eval {run.id} --rung {rung}",
        )
    summary_path = run.eval_dir / f"{rung}.json"
    summary = ws.json(summary_path) if summary_path.is_file() else None
    return items, summary


def _slice_fields(items: list[dict]) -> dict[str, list[str]]:
    fields: dict[str, set] = {}
    for item in items:
        for key in item.get("meta") or {}:
            fields.setdefault(key, set()).add(slice_value(item, key))
    return {k: sorted(v) for k, v in sorted(fields.items()) if 2 <= len(v) <= 50}


def compare_page(
    ws: Workspace, a: str | None, b: str | None, metric: str | None, slice_: str | None
) -> str:
    options = evaluations(ws)
    a = a or next((o for o in options if o.endswith(":zero-shot")), None)
    b = b or next((o for o in options if o.endswith(":tuned")), None)
    form = _form(options, a, b, metric, slice_)
    if not (a and b):
        return page("Compare", form + "<p>Two evaluations are needed.</p>", str(ws.root))
    items_a, summary_a = load(ws, a)
    items_b, summary_b = load(ws, b)
    metric = metric or recorded_metric(summary_b or summary_a)
    fields = _slice_fields(items_a)
    form = _form(options, a, b, metric, slice_, fields)
    if slice_:
        field, _, value = slice_.partition("=")
        items_a = [i for i in items_a if slice_value(i, field) == value]
        items_b = [i for i in items_b if slice_value(i, field) == value]
        if not items_a:
            raise PageError(404, "empty slice", f"no item of {a} has {field} = {value}")
    try:
        result = compare_items(items_a, items_b, metric)
    except UserError as err:
        raise PageError(
            422, "these evaluations cannot be compared", err.problems[0].what, err.problems[0].fix
        ) from None
    return page("Compare", form + _result(result, a, b, items_a, items_b, metric), str(ws.root))


def _form(options, a, b, metric, slice_, fields: dict | None = None) -> str:
    def select(name: str, chosen: str | None) -> str:
        opts = "".join(
            f"<option{' selected' if o == chosen else ''}>{esc(o)}</option>" for o in options
        )
        return f'<label>{name.upper()} <select name="{name}">{opts}</select></label>'

    slices = '<option value="">all items</option>' + "".join(
        f'<option value="{esc(f)}={esc(v)}"{" selected" if slice_ == f"{f}={v}" else ""}>'
        f"{esc(f)} = {esc(v)}</option>"
        for f, values in (fields or {}).items()
        for v in values
    )
    return (
        f'<form class="controls" method="get" action="/compare">{select("a", a)}'
        f'{select("b", b)}<label>metric <input name="metric" value="{esc(metric or "")}" '
        f'size="12" placeholder="recorded"></label><label>slice <select name="slice">{slices}'
        '</select></label><button type="submit" id="compare-go">compare</button></form>'
    )


def _result(result: dict, a: str, b: str, items_a, items_b, metric: str) -> str:
    p, mc = result["paired"], result.get("mcnemar")
    level = f"{p['confidence']:.0%} CI"
    mc_p = f"{mc['p_value']:.2g}" if mc else "- (scores not 0/1)"
    stats = (
        f'<table id="paired"><tr><th>metric</th><th>A</th><th>B</th><th>B - A</th>'
        f"<th>{level} (paired bootstrap)</th><th>McNemar p (exact)</th><th>items</th></tr>"
        f"<tr><td>{esc(metric)}</td><td>{p['mean_a']:.1%}</td><td>{p['mean_b']:.1%}</td>"
        f'<td data-field="diff">{p["diff"]:+.1%}</td><td>[{p["low"]:+.1%}, {p["high"]:+.1%}]</td>'
        f'<td data-field="mcnemar">{mc_p}</td><td>{p["n"]}</td></tr></table>'
    )
    if mc:
        stats += (
            f"<p>Discordant items: A right and B wrong <b>{mc['a_only']}</b>, B right and "
            f"A wrong <b>{mc['b_only']}</b>.</p>"
        )
    if result.get("only_in_a") or result.get("only_in_b"):
        stats += (
            f"<p>Paired on {p['n']} shared items; {result['only_in_a']} only in A and "
            f"{result['only_in_b']} only in B are left out.</p>"
        )
    by_key = {item_key(i): i for i in items_b}
    pairs = [(i, by_key[item_key(i)]) for i in items_a if item_key(i) in by_key]
    bars = []
    for name, side in (("A", [x for x, _ in pairs]), ("B", [y for _, y in pairs])):
        ci = mean_ci([float(i["scores"][metric]) for i in side])
        bars.append((name, ci.value, ci.low, ci.high))
    figure = chart(figures.rungs(bars, metric), "A and B with their CIs")
    discordant = [
        (x, y) for x, y in pairs if float(x["scores"][metric]) != float(y["scores"][metric])
    ]
    trs = "".join(
        f'<tr class="discordant"><td><pre>{esc(x.get("prompt", ""))[:400]}</pre></td>'
        f"<td>{esc(x.get('reference'))}</td>"
        f'<td><div class="answer">{esc(x.get("prediction"))}</div>'
        f'<span class="muted">{float(x["scores"][metric]):.2f}</span></td>'
        f'<td><div class="answer">{esc(y.get("prediction"))}</div>'
        f'<span class="muted">{float(y["scores"][metric]):.2f}</span></td></tr>'
        for x, y in discordant[:DISCORDANT_SHOWN]
    )
    table = (
        f'<h2>Discordant items ({len(discordant)})</h2><table id="discordant"><tr><th>prompt</th>'
        f"<th>reference</th><th>A: {esc(a)}</th><th>B: {esc(b)}</th></tr>{trs}</table>"
    )
    return stats + figure + table
