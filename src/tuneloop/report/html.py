"""One self-contained HTML report per run: no external resources, plots embedded as PNG.

It is built only from what the run folder holds (run.json, metrics.jsonl, eval/, gate.json,
data/), so it can be rebuilt at any time and shows exactly what was measured.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter, defaultdict
from pathlib import Path

from tuneloop.evaluate.metrics import normalize_answer
from tuneloop.files import write_text
from tuneloop.report import plots
from tuneloop.workspace import Run

MAIN_METRICS = ("exact_match", "accuracy", "json_exact", "score")
CONFUSION_MAX_LABELS = 30
WORST_FAILURES = 20


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(x) -> str:
    return f"{x:.1%}" if isinstance(x, int | float) else "-"


def _ci(summary: dict, metric: str) -> tuple[float | None, float | None]:
    """A metric's CI from an evaluation summary: `ci: {metric: {low, high}}` (what
    `tuneloop eval` writes) or a `[low, high]` pair under `<metric>_ci` or `ci`."""
    for value in (summary.get(f"{metric}_ci"), summary.get("ci")):
        if isinstance(value, dict) and metric in value:
            value = value[metric]
        if isinstance(value, dict) and "low" in value and "high" in value:
            return float(value["low"]), float(value["high"])
        if isinstance(value, list | tuple) and len(value) >= 2:
            return float(value[0]), float(value[1])
    return None, None


def heldout_rungs(run: Run) -> dict[str, dict]:
    """Evaluation summaries of the held-out split, by rung (probe suites are shown apart)."""
    out = {}
    for path in sorted(run.eval_dir.glob("*.json")):
        summary = json.loads(path.read_text())
        if summary.get("suite", "heldout") == "heldout" and "n" in summary:
            out[summary.get("rung", path.stem)] = summary
    return out


def main_metric(rungs: dict[str, dict]) -> str | None:
    for metric in MAIN_METRICS:
        if rungs and all(metric in s for s in rungs.values()):
            return metric
    return None


def confusion_matrix(items: list[dict]) -> tuple[list[str], list[list[int]]]:
    refs = [normalize_answer(i["reference"]) for i in items]
    preds = [normalize_answer(i["prediction"]) for i in items]
    labels = [label for label, _ in Counter(refs).most_common(CONFUSION_MAX_LABELS)]
    index = {label: k for k, label in enumerate(labels)}
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for r, p in zip(refs, preds, strict=True):
        if r in index:
            matrix[index[r]][index.get(p, len(labels))] += 1
    return labels, matrix


def slices(items_by_rung: dict[str, list[dict]], metric: str) -> dict[str, dict[str, dict]]:
    """{field: {value: {rung: score}}} for metadata fields with 2 to 20 distinct values."""
    out: dict[str, dict[str, dict]] = {}
    any_items = next(iter(items_by_rung.values()), [])
    fields = {k for item in any_items for k in (item.get("meta") or {})}
    for field in sorted(fields):
        values = {str((i.get("meta") or {}).get(field)) for i in any_items}
        if not 2 <= len(values) <= 20 or field == "label":
            continue
        table: dict[str, dict] = defaultdict(dict)
        for rung, items in items_by_rung.items():
            groups: dict[str, list[float]] = defaultdict(list)
            for item in items:
                key = str((item.get("meta") or {}).get(field))
                groups[key].append(float(item["scores"].get(metric, 0.0)))
            for key, scores in groups.items():
                table[key][rung] = sum(scores) / len(scores)
        out[field] = dict(table)
    return out


def build_report(run: Run) -> Path:
    """Write `report.html` into the run folder and return its path."""
    info = run.info()
    sections: list[str] = []

    # -- overview and data audit
    data = info.get("data", {})
    trunc = info.get("truncation", {})
    overview = [
        ["run", run.id],
        ["status", info.get("status", "-")],
        ["parent run", info.get("parent") or "-"],
        ["model", (info.get("model") or {}).get("name", "-")],
        ["weights sha256", (info.get("model") or {}).get("weights_sha256_16", "-")],
        ["train data", f"{data.get('train_file', '-')} ({data.get('n_train', '-')} examples)"],
        [
            "held-out data",
            f"{data.get('heldout_file') or 'split saved in the run'} "
            f"({data.get('n_heldout', '-')} examples)",
        ],  # fmt: skip
        [
            "truncation",
            f"policy {trunc.get('policy', '-')}, max_length {trunc.get('max_length')}, "
            f"{trunc.get('dropped', 0)} dropped, {trunc.get('truncated', 0)} truncated",
        ],
        [
            "training",
            f"{info.get('steps', '-')} steps, {info.get('tokens_per_s', '-')} tokens/s, "
            f"final loss {info.get('final_loss', '-')}, precision {info.get('precision')}",
        ],
    ]
    sections.append("<h2>Run and data audit</h2>" + _table(overview, ["", ""]))
    audit = run.path / "data" / "audit.json"
    if audit.exists():
        findings = json.loads(audit.read_text())
        rows = [[f["severity"], f["code"], f["where"], f["message"]] for f in findings]
        sections.append(_table(rows, ["severity", "code", "where", "message"]))

    # -- loss curves
    log = _read_jsonl(run.metrics_path)
    train = [(r["step"], r["loss"]) for r in log if "loss" in r]
    heldout = [(r["step"], r[k]) for r in log for k in ("heldout_loss", "eval_loss") if k in r]
    if train:
        sections.append("<h2>Loss</h2>" + _img(plots.loss_curves(train, heldout), "loss curves"))

    # -- rungs vs tuned
    rungs = heldout_rungs(run)
    metric = main_metric(rungs)
    if metric:
        rows = [(name, s[metric], *_ci(s, metric)) for name, s in rungs.items()]
        table = [[n, _pct(v), f"[{_pct(lo)}, {_pct(hi)}]" if lo is not None else "-",
                  rungs[n]["n"]] for n, v, lo, hi in rows]  # fmt: skip
        sections.append(
            f"<h2>Baseline ladder vs tuned ({metric})</h2>"
            + _img(plots.rung_bars(rows, metric), "rungs")
            + _table(table, ["rung", metric, "95% CI", "items"])
        )

    # -- per class, confusion matrix, slices
    items_by_rung = {r: _read_jsonl(run.eval_dir / f"{r}.jsonl") for r in rungs}
    items_by_rung = {r: items for r, items in items_by_rung.items() if items}
    per_label = {r: s["per_label"] for r, s in rungs.items() if "per_label" in s}
    if per_label:
        labels = sorted({label for pl in per_label.values() for label in pl})[:40]
        series = {r: [pl.get(label, {}).get("accuracy", 0.0) for label in labels]
                  for r, pl in per_label.items()}  # fmt: skip
        sections.append(
            "<h2>Per class</h2>"
            + _img(plots.grouped_bars(labels, series, "accuracy (recall) per class"), "per class")
        )
    tuned_items = items_by_rung.get("tuned")
    if tuned_items and per_label:
        labels, matrix = confusion_matrix(tuned_items)
        sections.append(
            "<h2>Confusion matrix (tuned)</h2>" + _img(plots.confusion(labels, matrix), "confusion")
        )
    if metric and items_by_rung:
        for field, table in slices(items_by_rung, metric).items():
            groups = sorted(table)
            series = {r: [table[g].get(r, 0.0) for g in groups] for r in items_by_rung}
            sections.append(
                f"<h2>Slice: {html.escape(field)}</h2>"
                + _img(plots.grouped_bars(groups, series, f"{metric} by {field}"), f"slice {field}")
            )

    # -- probes and gate
    probe_rows = []
    probe_files = [*run.eval_dir.glob("*.json"), *run.eval_dir.glob("probes/*.json")]
    for path in sorted(probe_files):
        s = json.loads(path.read_text())
        if path.parent.name == "probes":
            s.setdefault("suite", path.stem)
        if s.get("suite", "heldout") != "heldout":
            shown = {k: v for k, v in s.items() if isinstance(v, int | float) and k != "seconds"}
            probe_rows.append([s.get("suite"), s.get("rung", path.stem),
                               ", ".join(f"{k}={v:.3g}" for k, v in shown.items())])  # fmt: skip
    if probe_rows:
        sections.append("<h2>Regression and safety probes</h2>"
                        + _table(probe_rows, ["suite", "model", "scores"]))  # fmt: skip
    gate_path = run.path / "gate.json"
    if gate_path.exists():
        gate = json.loads(gate_path.read_text())
        verdict = "SHIP" if gate.get("passed") else "DO NOT SHIP"
        reasons = gate.get("reasons") or [
            f"[{'ok' if c.get('passed') else 'FAIL'}] {c.get('sentence', c)}"
            for c in gate.get("conditions", [])
        ]
        items = "".join(f"<li>{html.escape(str(r))}</li>" for r in reasons)
        cls = "pass" if gate.get("passed") else "fail"
        overfit = (gate.get("overfit") or {}).get("note")
        note = (
            f"<p>Overfitting (reported, not gated): {html.escape(overfit)}</p>" if overfit else ""
        )
        sections.append(f'<h2>Gate</h2><p class="{cls}">{verdict}</p><ul>{items}</ul>{note}')

    # -- human review
    ratings_path = run.path / "review" / "ratings.json"
    if ratings_path.exists():
        r = json.loads(ratings_path.read_text())
        rows = [
            [
                f"tuned vs {r['against']}",
                r["tuned_wins"],
                r["tuned_losses"],
                r["ties"],
                _pct(r["win_rate"]),
                r["sign_test_p"] if r["sign_test_p"] is not None else "-",
            ]
        ]
        header = ["pairs", "tuned wins", "tuned losses", "ties", "win rate", "sign test p"]
        sections.append("<h2>Human review (blind pairs)</h2>" + _table(rows, header))

    # -- worst failures
    if tuned_items and metric:
        base = items_by_rung.get("zero-shot", [])
        base_by_source = {i["source"]: i["prediction"] for i in base}
        failed = [i for i in tuned_items if not i["scores"].get(metric)]
        rows = [
            [
                i["prompt"][:300],
                i["reference"],
                i["prediction"],
                base_by_source.get(i["source"], "-"),
            ]
            for i in failed[:WORST_FAILURES]
        ]
        sections.append(
            f"<h2>Failures ({len(failed)} of {len(tuned_items)} held-out items)</h2>"
            + _table(rows, ["prompt", "reference", "tuned", "zero-shot"])
        )

    page = PAGE.format(title=html.escape(f"tuneloop report: {run.id}"), body="\n".join(sections))
    target = run.path / "report.html"
    write_text(target, page)
    return target


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }}
h1 {{ font-size: 1.5em; }}
h2 {{ font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ddd; padding: 3px 8px; vertical-align: top; text-align: left; }}
img.plot {{ max-width: 100%; display: block; margin: .5em 0; }}
.pass {{ color: #1a7f37; font-weight: bold; font-size: 1.3em; }}
.fail {{ color: #cf222e; font-weight: bold; font-size: 1.3em; }}
</style></head>
<body><h1>{title}</h1>
{body}
<script>
// Lets automated checks (and people) see that every plot decoded: the title gains a count.
window.addEventListener("load", () => {{
  const imgs = [...document.querySelectorAll("img.plot")];
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.plots = `${{ok}}/${{imgs.length}}`;
}});
</script>
</body></html>
"""
