"""distinct-2 of each rung is shown (`tuneloop eval`'s summary, the HTML report), and a tuned
model whose distinct-2 falls below half the zero-shot model's is flagged as a mode collapse."""

import json

from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.report.diversity import COLLAPSE_RATIO, mode_collapse
from tuneloop.report.html import build_report
from tuneloop.workspace import Run


def summary(rung: str, distinct: float, task: str = "text") -> dict:
    metric = "rouge_l" if task == "text" else "exact_match"
    return {"rung": rung, "task": task, "metric": metric, "n": 4, metric: 0.5,
            "ci": {metric: {"value": 0.5, "low": 0.3, "high": 0.7, "n": 4}},
            "distinct_2": distinct, "seconds": 1.0}  # fmt: skip


def test_the_rule_flags_a_tuned_distinct_2_below_half_the_base():
    assert COLLAPSE_RATIO == 0.5
    base = summary("zero-shot", 0.8)
    flagged = mode_collapse({"zero-shot": base, "tuned": summary("tuned", 0.3)})
    assert flagged and "mode collapse" in flagged and "0.30" in flagged and "0.80" in flagged
    assert "half" in flagged
    fine = {"zero-shot": base, "tuned": summary("tuned", 0.45)}
    assert mode_collapse(fine) is None
    # A label task answers with labels: few distinct bigrams is the point, not a collapse.
    labels = {"zero-shot": summary("zero-shot", 0.8, "label"),
              "tuned": summary("tuned", 0.0, "label")}  # fmt: skip
    assert mode_collapse(labels) is None
    assert mode_collapse({"tuned": summary("tuned", 0.1)}) is None  # no base to compare with


def fake_run(tmp_path, tuned_distinct: float) -> Run:
    run = Run(tmp_path / "runs" / "20260101-000000-text")
    run.eval_dir.mkdir(parents=True)
    (run.path / "run.json").write_text(json.dumps({"id": run.id, "status": "finished"}))
    for rung, distinct in (("zero-shot", 0.8), ("tuned", tuned_distinct)):
        (run.eval_dir / f"{rung}.json").write_text(json.dumps(summary(rung, distinct)))
        items = [{"source": f"h:{i}", "prompt": f"q{i}", "reference": "an answer",
                  "prediction": "I can help", "scores": {"exact_match": 0.0, "rouge_l": 0.5}}
                 for i in range(4)]  # fmt: skip
        (run.eval_dir / f"{rung}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return run


def test_the_report_shows_distinct_2_and_the_collapse(tmp_path):
    page = build_report(fake_run(tmp_path, 0.2)).read_text()
    assert "distinct-2" in page and "0.20" in page and "mode collapse" in page
    page = build_report(fake_run(tmp_path / "ok", 0.7)).read_text()
    assert "distinct-2" in page and "mode collapse" not in page


def test_eval_prints_distinct_2_and_the_collapse(tmp_path, monkeypatch):
    run = fake_run(tmp_path, 0.2)
    results = {r: json.loads((run.eval_dir / f"{r}.json").read_text())
               for r in ("zero-shot", "tuned")}  # fmt: skip
    monkeypatch.setattr("tuneloop.evaluate.run.evaluate_run", lambda *a, **k: results)
    result = CliRunner().invoke(app, ["eval", str(run.path)])
    assert result.exit_code == 0, result.output
    assert "distinct-2 0.80" in result.output and "distinct-2 0.20" in result.output
    assert "mode collapse" in result.output
