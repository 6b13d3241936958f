"""One self-contained HTML report per run: no external resources, plots embedded as PNG.

It is built only from what the run folder holds (run.json, metrics.jsonl, eval/, gate.json,
data/), so it can be rebuilt at any time and shows exactly what was measured. Scores are on the
metric the evaluation recorded (`task.metric`, or the task kind's default), and failures are
judged by the same rule as `tuneloop failures` (`tuneloop.refine.failure_rule`).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

from tuneloop.evaluate import metrics
from tuneloop.evaluate.metrics import normalize_answer
from tuneloop.files import write_text
from tuneloop.refine import DEFAULT_BELOW, failure_rule, recorded_metric
from tuneloop.report import figures, render
from tuneloop.report.audit import audit_section
from tuneloop.report.diversity import mode_collapse
from tuneloop.report.gate import gate_section
from tuneloop.report.slices import slice_fields, slice_scores, slice_section, summary_ci
from tuneloop.workspace import Run

CONFUSION_MAX_LABELS = 30
WORST_FAILURES = 20


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def heldout_rungs(run: Run) -> dict[str, dict]:
    """Evaluation summaries of the held-out split, by rung (probe suites are shown apart, and
    `preference.json` of a DPO run has a section of its own)."""
    out = {}
    for path in sorted(run.eval_dir.glob("*.json")):
        summary = json.loads(path.read_text())
        if summary.get("suite", "heldout") == "heldout" and "rung" in summary and "n" in summary:
            out[summary["rung"]] = summary
    return out


def main_metric(rungs: dict[str, dict]) -> str | None:
    """The metric the tuned model's evaluation recorded (else the first rung's)."""
    if not rungs:
        return None
    return recorded_metric(rungs.get("tuned") or next(iter(rungs.values())))


def _distinct(summary: dict) -> str:
    """distinct-2 of a rung's answers (distinct bigrams over all bigrams), or '-'."""
    value = summary.get("distinct_2")
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


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


def preference_section(pref: dict) -> str:
    """A DPO run's held-out pairs (`eval/preference.json`): how often the tuned model ranks the
    chosen answer first, and by how much, beside the base model's margin."""

    def num(x) -> str:
        return f"{x:+.3f}" if isinstance(x, int | float) else "-"

    def with_ci(value, pair, fmt) -> str:
        known = isinstance(pair, list | tuple) and len(pair) == 2
        return render.with_ci(value, *(pair if known else (None, None)), fmt=fmt)

    rows = [
        ["held-out pairs", pref.get("n", "-")],
        ["beta", pref.get("beta", "-")],
        ["reward accuracy, tuned [95% CI]",
         with_ci(pref.get("reward_accuracy"), pref.get("reward_accuracy_ci"), render.pct)],
        ["margin, mean, tuned [95% CI]",
         with_ci(pref.get("margin_mean"), pref.get("margin_ci"), num)],
        ["margin, mean, base model", num(pref.get("base_margin_mean"))],
    ]  # fmt: skip
    return (
        "<h2>Preferences (held-out pairs)</h2>"
        "<p>Reward accuracy: the share of held-out pairs whose chosen answer the tuned model "
        "ranks above the rejected one (50% is chance). Margin: chosen minus rejected, averaged "
        "over the pairs.</p>" + render.table(rows, ["", ""])
    )


def best_rung(rungs: dict[str, dict], metric: str) -> str | None:
    """The untuned rung with the highest score on `metric` (the first such, on a tie)."""
    scored = [(s[metric], name) for name, s in rungs.items()
              if name != "tuned" and isinstance(s.get(metric), int | float)]  # fmt: skip
    return max(scored, key=lambda x: x[0])[1] if scored else None


def _field_diff(item: dict) -> str:
    """The key paths where a JSON answer differs from its reference: `path: want -> got`."""
    diff = metrics.json_field_diff(item["prediction"], item["reference"])
    return "; ".join(f"{path}: {want} -> {got}" for path, want, got in diff) or "-"


def failures_section(
    rungs: dict[str, dict], items_by_rung: dict[str, list[dict]], metric: str, below: float,
    where: Path,
) -> str:  # fmt: skip
    """The tuned model's failed items, worst first (lowest score on the task metric; file order
    among equals), each beside the answer of the best untuned rung and, for a JSON task, the
    key paths where the tuned answer differs from the reference."""
    tuned_items = items_by_rung["tuned"]
    rule = failure_rule(rungs.get("tuned"), tuned_items, below, str(where))
    best = best_rung(rungs, metric)
    best_by_source = {i["source"]: i for i in items_by_rung.get(best, [])} if best else {}
    is_json = all(isinstance(metrics._parse_container(i["reference"]), dict) for i in tuned_items)
    failed = sorted((i for i in tuned_items if rule.failed(i)), key=rule.score)
    rows = []
    for i in failed[:WORST_FAILURES]:
        other = best_by_source.get(i["source"])
        row = [i["prompt"][:300], i["reference"], i["prediction"], f"{rule.score(i):.2f}"]
        if best:
            shown = "-" if other is None else other["prediction"]
            if other is not None and metric in other.get("scores", {}):
                shown += f" ({other['scores'][metric]:.2f})"
            row.append(shown)
        if is_json:
            row.append(_field_diff(i))
        rows.append(row)
    header = ["prompt", "reference", "tuned", f"tuned {rule.metric}"]
    header += [f"best rung: {best} ({rule.metric})"] if best else []
    header += ["fields that differ (want -> got)"] if is_json else []
    beside = (
        f", each beside the answer of {best}, the rung with the highest {metric} "
        f"({rungs[best][metric]:.1%})"
        if best
        else ""
    )
    return (
        f"<h2>Failures ({len(failed)} of {len(tuned_items)} held-out items: "
        f"{html.escape(str(rule))})</h2><p>{html.escape(rule.explain())}; the worst "
        f"{min(len(failed), WORST_FAILURES)} are shown, lowest score first"
        f"{html.escape(beside)}.</p>" + render.table(rows, header)
    )


def _cost_cells(summary: dict) -> list[str]:
    from tuneloop.evaluate.cost import money, seconds

    cost = summary.get("cost") or {}
    return [seconds(cost.get("latency_p50_s")), seconds(cost.get("latency_p95_s")),
            money(cost.get("cost_per_1k"))]  # fmt: skip


def retrieval_failures(
    rung: str, summary: dict, items: list[dict], metric: str, below: float, where: Path
) -> str:
    """A RAG rung's failed items with the passages retrieved for each: was the answer's
    passage found and misread, or never found?"""
    rule = failure_rule(summary, items, below, str(where))
    failed = sorted((i for i in items if rule.failed(i)), key=rule.score)
    rows = []
    for i in failed[:WORST_FAILURES]:
        passages = "<br>".join(
            f"<b>{html.escape(p['id'])}</b> {html.escape(p.get('excerpt', ''))}"
            for p in i["retrieved"]
        )
        named = i.get("retrieval_hit")
        rows.append([i["prompt"][:300], i["reference"], i["prediction"],
                     "-" if named is None else ("yes" if named else "no"),
                     render.Raw(passages)])  # fmt: skip
    hit = (summary.get("retrieval") or {}).get("hit_rate")
    rate = (
        f" The passage that answers an item was retrieved for {hit['rate']:.1%} of the "
        f"{hit['named']} items that name it."
        if hit
        else ""
    )
    header = ["prompt", "reference", rung, "answer's passage retrieved", "retrieved passages"]
    return (
        f"<h2>Failures of {html.escape(rung)} with what it retrieved ({len(failed)} of "
        f"{len(items)} items)</h2><p>{html.escape(rule.explain())}; the worst "
        f"{min(len(failed), WORST_FAILURES)} are shown.{html.escape(rate)}</p>"
        + render.table(rows, header)
    )


def build_report(run: Run, below: float = DEFAULT_BELOW) -> Path:
    """Write `report.html` into the run folder and return its path.

    `below`: the line under which a partial-credit score (rouge_l, json_fields, ...) counts as a
    failure, as in `tuneloop failures --below`.
    """
    sections = report_sections(run, below)
    page = PAGE.format(title=html.escape(f"tuneloop report: {run.id}"), body="\n".join(sections))
    target = run.path / "report.html"
    write_text(target, page)
    return target


def report_sections(
    run: Run, below: float = DEFAULT_BELOW, draw: render.Draw = render.figure
) -> list[str]:
    """The report's sections, as HTML: the static report draws figures as PNGs (the default
    `draw`); the dashboard's run page shows the same sections with interactive charts."""
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
    sections.append("<h2>Run and data audit</h2>" + render.table(overview, ["", ""]))
    audit = run.path / "data" / "audit.json"  # written by training (`train/session.py`)
    if audit.exists():
        sections.append(audit_section(json.loads(audit.read_text())))

    # -- loss curves
    log = _read_jsonl(run.metrics_path)
    train = [(r["step"], r["loss"]) for r in log if "loss" in r]
    heldout = [(r["step"], r[k]) for r in log for k in ("heldout_loss", "eval_loss") if k in r]
    if train:
        sections.append("<h2>Loss</h2>" + draw(figures.loss(train, heldout), "loss curves"))

    # -- rungs vs tuned
    rungs = heldout_rungs(run)
    metric = main_metric(rungs)
    if metric:
        rows = [(name, s[metric], *summary_ci(s, metric)) for name, s in rungs.items()
                if metric in s]  # fmt: skip
        table = [[n, render.pct(v), f"[{render.pct(lo)}, {render.pct(hi)}]" if lo is not None
                  else "-", rungs[n]["n"], _distinct(rungs[n]), *_cost_cells(rungs[n])]
                 for n, v, lo, hi in rows]  # fmt: skip
        collapse = mode_collapse(rungs)
        others = sorted({recorded_metric(s) for s in rungs.values()} - {metric})
        mixed = (
            f"<p>Some rungs were evaluated on another metric ({html.escape(', '.join(others))});"
            f" all are shown on {html.escape(metric)}, the tuned model's.</p>"
            if others
            else ""
        )
        sections.append(
            f"<h2>Baseline ladder vs tuned ({html.escape(metric)})</h2>"
            + mixed
            + (draw(figures.rungs(rows, metric), "rungs") if rows else "")
            + render.table(
                table,
                [
                    "rung",
                    metric,
                    "95% CI",
                    "items",
                    "distinct-2",
                    "p50 latency",
                    "p95 latency",
                    "$ per 1,000 requests",
                ],
            )
            + (f"<p><strong>Warning:</strong> {html.escape(collapse)}</p>" if collapse else "")
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
            + draw(figures.grouped(labels, series, "accuracy (recall) per class"), "per class")
        )
    tuned_items = items_by_rung.get("tuned")
    if tuned_items and per_label:
        labels, matrix = confusion_matrix(tuned_items)
        sections.append(
            "<h2>Confusion matrix (tuned)</h2>"
            + draw(figures.confusion(labels, matrix), "confusion")
        )
    if metric:
        for field in slice_fields(rungs, items_by_rung):
            table = slice_scores(field, rungs, items_by_rung, metric)
            if table:
                sections.append(slice_section(field, table, metric, draw))

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
                        + render.table(probe_rows, ["suite", "model", "scores"]))  # fmt: skip
    gate_path = run.path / "gate.json"
    if gate_path.exists():
        sections.append(gate_section(json.loads(gate_path.read_text()), draw))
    preference_path = run.eval_dir / "preference.json"
    if preference_path.exists():
        sections.append(preference_section(json.loads(preference_path.read_text())))

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
                render.pct(r["win_rate"]),
                r["sign_test_p"] if r["sign_test_p"] is not None else "-",
            ]
        ]
        header = ["pairs", "tuned wins", "tuned losses", "ties", "win rate", "sign test p"]
        sections.append("<h2>Human review (blind pairs)</h2>" + render.table(rows, header))

    # -- worst failures, by the rule `tuneloop failures` uses
    if tuned_items and metric:
        sections.append(failures_section(rungs, items_by_rung, metric, below, run.eval_dir))
    for rung, rung_items in items_by_rung.items():
        if metric and any("retrieved" in i for i in rung_items):
            sections.append(retrieval_failures(rung, rungs[rung], rung_items, metric, below,
                                               run.eval_dir))  # fmt: skip

    return sections


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
.inconclusive {{ color: #9a6700; font-weight: bold; font-size: 1.3em; }}
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
