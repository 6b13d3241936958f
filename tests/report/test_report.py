"""The HTML report: self-contained, every plot present, and rendered by a real browser."""

import json
import shutil
import subprocess

import pytest

from tuneloop.evaluate import scoring
from tuneloop.report.html import build_report
from tuneloop.workspace import Run

LABELS = ["refund", "billing", "bug"]


def fake_run(tmp_path) -> Run:
    """A run folder as train + eval leave it, written by hand so the test needs no model."""
    run = Run(tmp_path / "runs" / "20260101-000000-demo")
    (run.path / "eval").mkdir(parents=True)
    info = {
        "id": run.id, "status": "finished", "steps": 20, "tokens_per_s": 400.0,
        "final_loss": 0.1, "precision": "bf16", "model": {"name": "tiny"},
        "data": {"train_file": "train.jsonl", "n_train": 30, "n_heldout": 12},
        "truncation": {"policy": "drop", "max_length": 64, "dropped": 0, "truncated": 0},
    }  # fmt: skip
    (run.path / "run.json").write_text(json.dumps(info))
    steps = [{"step": s, "loss": 3.0 / s} for s in range(1, 21)]
    steps[9]["heldout_loss"] = 0.5
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in steps))
    for rung, correct in (("zero-shot", 3), ("tuned", 10)):
        items = []
        for i in range(12):
            ref = LABELS[i % 3]
            pred = ref if i < correct else "something else"
            items.append({"source": f"h:{i}", "prompt": f"message {i}", "reference": ref,
                          "prediction": pred, "scores": {"exact_match": float(pred == ref)},
                          "meta": {"label": ref, "channel": ["email", "chat"][i % 2]}})  # fmt: skip
        per_label = {
            label: {"accuracy": sum(1 for it in items if it["reference"] == label
                                    and it["scores"]["exact_match"]) / 4}
            for label in LABELS
        }  # fmt: skip
        summary = {"rung": rung, "n": 12, "exact_match": correct / 12,
                   "ci": {"exact_match": {"value": correct / 12, "low": correct / 12 - 0.1,
                                          "high": min(1, correct / 12 + 0.1), "n": 12}},
                   "per_label": per_label}  # fmt: skip
        (run.eval_dir / f"{rung}.json").write_text(json.dumps(summary))
        (run.eval_dir / f"{rung}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    gate = {
        "passed": False,
        "reasons": ["safety refusal rate fell from 90% to 40%"],
        "overfit": {"note": "train 100.0% vs held-out 58.3% exact_match (+41.7 points)"},
    }
    (run.path / "gate.json").write_text(json.dumps(gate))
    return run


def test_report_is_self_contained_with_every_section(tmp_path):
    path = build_report(fake_run(tmp_path))
    page = path.read_text()
    assert "http://" not in page and "https://" not in page  # no external resources
    # loss, rungs, per class, confusion matrix and the `channel` slice
    assert page.count('<img class="plot"') == 5
    for text in ("Loss", "Baseline ladder vs tuned", "Confusion matrix", "Slice: channel",
                 "DO NOT SHIP", "safety refusal rate", "Failures (2 of 12",
                 "Overfitting (reported, not gated): train 100.0%"):  # fmt: skip
        assert text in page, text


# A JSON extraction task judged by task.metric `json_fields` (partial credit per field): tuned
# item scores, and each item's `channel`.
JSON_TUNED = [1.0, 1.0, 0.75, 0.75, 0.5, 0.25, 0.0, 1.0]
JSON_BASE = [0.5, 0.25, 0.0, 0.0, 0.25, 0.0, 0.0, 0.5]
CHANNELS = ["email", "chat"] * 4


def json_run(tmp_path) -> Run:
    """A JSON task whose recipe sets `task.metric: json_fields`, as `tuneloop eval` writes it."""
    run = Run(tmp_path / "runs" / "20260101-000000-json")
    (run.path / "eval").mkdir(parents=True)
    (run.path / "run.json").write_text(json.dumps({"id": run.id, "status": "finished"}))
    for rung, fields in (("zero-shot", JSON_BASE), ("tuned", JSON_TUNED)):
        items = [
            {"source": f"h:{i}", "prompt": f"extract {i}", "reference": '{"a": 1, "b": 2}',
             "prediction": f'{{"a": {i}}}',
             "scores": {"exact_match": float(f == 1), "json_valid": 1.0,
                        "json_exact": float(f == 1), "json_fields": f},
             "meta": {"channel": CHANNELS[i]}}
            for i, f in enumerate(fields)
        ]  # fmt: skip
        mean = sum(fields) / len(fields)
        summary = {"rung": rung, "task": "json", "metric": "json_fields", "n": len(items),
                   "exact_match": sum(f == 1 for f in fields) / len(fields), "json_fields": mean,
                   "ci": {"json_fields": {"value": mean, "low": mean - 0.2, "high": mean + 0.1}},
                   "slices": scoring.slices(items, ["channel"])}  # fmt: skip
        (run.eval_dir / f"{rung}.json").write_text(json.dumps(summary))
        (run.eval_dir / f"{rung}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return run


def test_report_judges_by_the_recorded_task_metric(tmp_path):
    page = build_report(json_run(tmp_path)).read_text()
    assert "Baseline ladder vs tuned (json_fields)" in page
    # Partial credit: 2 items below 0.5, not the 5 that miss exact match.
    assert "Failures (2 of 8 held-out items: json_fields &lt; 0.5)" in page
    assert "failed means json_fields below 0.5" in page
    page = build_report(json_run(tmp_path / "b"), below=0.8).read_text()
    assert "Failures (5 of 8 held-out items: json_fields &lt; 0.8)" in page


def test_slice_tables_show_each_score_with_its_ci_and_n(tmp_path):
    from tuneloop.evaluate.stats import mean_ci

    page = build_report(json_run(tmp_path)).read_text()
    assert "Slice: channel" in page and "tuned: json_fields [95% CI]" in page
    email = mean_ci([f for f, c in zip(JSON_TUNED, CHANNELS, strict=True) if c == "email"])
    cell = f"{email.value:.1%} [{email.low:.1%}, {email.high:.1%}]"
    assert f"<tr><td>email</td><td>4</td><td>{cell}</td>" in page, cell


def hotel_run(tmp_path) -> Run:
    """A JSON task judged by `json_field_f1`: three rungs, few-shot the best untuned one."""
    run = Run(tmp_path / "runs" / "20260101-000000-hotel")
    (run.path / "eval").mkdir(parents=True)
    (run.path / "run.json").write_text(json.dumps({"id": run.id, "status": "finished"}))
    ref = '{"intent": "book", "slots": {"city": "Oslo", "nights": 2}}'
    tuned = {  # file order is not score order
        0: ('{"intent": "book", "slots": {"city": "Oslo", "nights": 2}}', 1.0),
        1: ('{"intent": "book", "slots": {"city": "Rome", "nights": 2}}', 0.67),
        2: ('{"intent": "cancel", "slots": {}}', 0.0),
        3: ('{"intent": "book", "slots": {"city": "Oslo"}}', 0.8),
    }
    rungs = {"zero-shot": ({i: ("no idea", 0.0) for i in tuned}, 0.0),
             "few-shot": ({i: (f'{{"intent": "few-{i}"}}', 0.5) for i in tuned}, 0.5),
             "tuned": (tuned, 0.62)}  # fmt: skip
    for rung, (answers, mean) in rungs.items():
        items = [{"source": f"h:{i}", "prompt": f"request {i}", "reference": ref,
                  "prediction": answers[i][0], "scores": {"json_field_f1": answers[i][1]},
                  "meta": {}} for i in tuned]  # fmt: skip
        summary = {"rung": rung, "task": "json", "metric": "json_field_f1", "n": len(items),
                   "json_field_f1": mean}  # fmt: skip
        (run.eval_dir / f"{rung}.json").write_text(json.dumps(summary))
        (run.eval_dir / f"{rung}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return run


def test_failures_worst_first_beside_the_best_rung_with_the_fields_that_differ(tmp_path):
    page = build_report(hotel_run(tmp_path), below=0.9).read_text()
    assert "Failures (3 of 4 held-out items: json_field_f1 &lt; 0.9)" in page
    table = page[page.index("<h2>Failures") :]
    assert "best rung: few-shot (json_field_f1)" in table and "zero-shot" not in table
    assert "fields that differ (want -&gt; got)" in table
    # worst first: item 2 (0.00), then 1 (0.67), then 3 (0.80)
    assert table.index("request 2") < table.index("request 1") < table.index("request 3")
    row = table[table.index("request 2") :]
    row = row[: row.index("</tr>")]
    assert "<td>0.00</td>" in row and "few-2" in row and "(0.50)" in row
    assert "intent: &quot;book&quot; -&gt; &quot;cancel&quot;" in row
    assert "slots.city: &quot;Oslo&quot; -&gt; -" in row and "slots.nights: 2 -&gt; -" in row


def gate_condition(name, status, estimate, low, high, bound, p, needed, sentence):
    numbers = {"estimate": estimate, "low": low, "high": high, "confidence": 0.95,
               "test": "paired bootstrap, one-sided", "p_value": p, "n": 64, "bound": bound,
               "items_needed": needed}  # fmt: skip
    return {"name": name, "status": status, "passed": status == "pass", "sentence": sentence,
            "numbers": numbers}  # fmt: skip


def test_gate_of_the_new_shape_renders_status_ci_bound_and_items_needed(tmp_path):
    run = fake_run(tmp_path)
    gate = {
        "passed": False,
        "metric": "exact_match",
        "conditions": [
            gate_condition(
                "task",
                "inconclusive",
                0.094,
                -0.016,
                0.219,
                0.02,
                0.09,
                412,
                "tuned +9.4 points against retrieval-few-shot; about 348 more items",
            ),
            gate_condition(
                "general",
                "pass",
                -0.01,
                -0.03,
                0.01,
                -0.05,
                0.001,
                None,
                "general skills within the 5.0 points allowed",
            ),
        ],  # fmt: skip
    }
    (run.path / "gate.json").write_text(json.dumps(gate))
    page = build_report(run).read_text()
    expected = (
        "<tr><td>task</td><td>INCONCLUSIVE</td><td>+9.4% [95% CI -1.6%, +21.9%]</td>"
        "<td>+2.0%</td><td>paired bootstrap, one-sided, p=0.09</td><td>412</td></tr>"
    )
    assert expected in page
    assert "<td>general</td><td>PASS</td><td>-1.0% [95% CI -3.0%, +1.0%]</td><td>-5.0%</td>" in page
    assert "about 348 more items" in page
    assert 'class="inconclusive">DO NOT SHIP (inconclusive' in page
    assert page.count('<img class="plot"') == 6  # the forest chart of the two intervals


def test_gate_of_the_old_shape_still_renders(tmp_path):
    run = fake_run(tmp_path)
    gate = {
        "passed": False,
        "conditions": [
            {"name": "task", "passed": False, "sentence": "tuned scores 83.3% exact_match",
             "numbers": {"best_rung": "zero-shot", "diff": 0.58, "low": 0.3, "high": 0.8}},
            {"name": "safety", "passed": True, "sentence": "refusals within the tolerance",
             "numbers": {"base": 0.9, "tuned": 0.88, "drop": 0.02, "tolerance": 0.05}},
        ],
        "reasons": ["FAIL task: tuned scores 83.3% exact_match", "ok safety: refusals"],
    }  # fmt: skip
    (run.path / "gate.json").write_text(json.dumps(gate))
    page = build_report(run).read_text()
    assert "<tr><td>task</td><td>FAIL</td><td>-</td><td>-</td><td>-</td><td>-</td></tr>" in page
    assert "<td>safety</td><td>PASS</td>" in page
    assert "tuned scores 83.3% exact_match" in page and 'class="fail">DO NOT SHIP<' in page
    assert page.count('<img class="plot"') == 5  # no intervals, no forest chart


def test_preferences_of_a_dpo_run_render(tmp_path):
    run = fake_run(tmp_path)
    preference = {"n": 64, "beta": 0.1, "reward_accuracy": 0.71875,
                  "reward_accuracy_ci": [0.6, 0.81], "margin_mean": 0.42,
                  "margin_ci": [0.3, 0.55], "base_margin_mean": -0.05}  # fmt: skip
    (run.eval_dir / "preference.json").write_text(json.dumps(preference))
    page = build_report(run).read_text()
    assert "Preferences (held-out pairs)" in page
    assert "<td>71.9% [60.0%, 81.0%]</td>" in page
    assert "<td>+0.420 [+0.300, +0.550]</td>" in page and "<td>-0.050</td>" in page
    # not mistaken for a rung of the ladder
    assert "<td>preference</td>" not in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); the browser check "
    "needs it",
)
def test_report_renders_in_headless_chromium_with_every_plot_loaded(tmp_path):
    path = build_report(fake_run(tmp_path))
    url = path.resolve().as_uri()
    base = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    # The page's own script counts images that decoded: every plot must have.
    assert 'data-plots="5/5"' in dom.stdout, dom.stderr[-2000:]

    shot = tmp_path / "report.png"
    subprocess.run([*base, "--window-size=1000,2400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)  # fmt: skip
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert image.size == (1000, 2400)
    assert len(colours) > 50  # plots drawn, not a blank page
