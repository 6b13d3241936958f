"""The `rag` rung and a recorded rung through the real commands on a finished run: `tuneloop
eval` keeps the passages each item was given, `tuneloop report` shows a RAG rung's failures
with what it retrieved, and a recorded rung is scored beside them."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from conftest import TOPICS, train_tiny_run
from tuneloop.cli.main import app

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    return train_tiny_run(tmp_path_factory.mktemp("rag-run"), tiny_model_dir)


def test_eval_and_report_a_rag_rung_and_a_recorded_rung(run, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for topic in TOPICS:
        (docs / f"{topic}.md").write_text(f"# {topic}\n\nItems about {topic} things are {topic}.")
    (docs / "logo.png").write_bytes(b"\x89PNG")
    heldout = [json.loads(line) for line in (run.path.parents[2] / "heldout.jsonl").open()]
    recorded = tmp_path / "prod.jsonl"
    recorded.write_text("".join(
        json.dumps({"prompt": row["messages"][-2]["content"],
                    "answer": row["messages"][-1]["content"],
                    "latency_s": 0.5, "prompt_tokens": 20, "completion_tokens": 1}) + "\n"
        for row in heldout
    ))  # fmt: skip
    recipe = yaml.safe_load(run.recipe_path.read_text())
    recipe["task"]["knowledge"] = {"paths": [str(docs)], "k": 2}
    recipe["eval"]["recorded"] = [{"name": "prod", "path": str(recorded), "price_in": 1.0,
                                   "price_out": 2.0}]  # fmt: skip
    run.recipe_path.write_text(yaml.safe_dump(recipe))

    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(run.path), "--rung", "rag", "--rung", "prod",
                                 "--rung", "tuned", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in (run.eval_dir / "rag.jsonl").open()]
    assert len(items) == len(heldout)
    for item in items:
        assert len(item["retrieved"]) == 2 and item["retrieved"][0]["id"].endswith(".md#1")
        topic = item["reference"]
        assert item["retrieved"][0]["id"] == f"{topic}.md#1"  # BM25 finds the item's topic
        assert item["retrieval_hit"] is None  # the items name no source document
    summary = json.loads((run.eval_dir / "rag.json").read_text())
    assert summary["prompting"] == "rag" and summary["retrieval"]["k"] == 2
    assert summary["retrieval"]["index"]["skipped"] == 1  # the PNG, counted
    assert summary["prompt_tokens_mean"] > json.loads(
        (run.eval_dir / "tuned.json").read_text())["prompt_tokens_mean"]  # fmt: skip

    prod = json.loads((run.eval_dir / "prod.json").read_text())
    assert prod["asks"] == "recorded" and prod[prod["metric"]] == 1.0  # the answers recorded
    assert prod["cost"]["cost_per_1k"] == pytest.approx((20 * 1.0 + 1 * 2.0) / 1e3)
    assert prod["cost"]["latency_p50_s"] == 0.5

    report = runner.invoke(app, ["report", str(run.path)])
    assert report.exit_code == 0, report.output
    page = (run.path / "report.html").read_text()
    assert "Failures of rag with what it retrieved" in page
    assert "<b>alpha.md#1</b>" in page or "<b>beta.md#1</b>" in page or "<b>gamma.md#1</b>" in page
    assert "$ per 1,000 requests" in page and "$0.022" in page  # prod's cost per 1,000


def test_a_rag_rung_without_documents_is_refused_before_any_work(run):
    recipe = yaml.safe_load(run.recipe_path.read_text())
    recipe["task"].pop("knowledge", None)
    run.recipe_path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["eval", str(run.path), "--rung", "rag"])
    assert result.exit_code == 2
    assert "`rag` is not a rung of this recipe" in result.output
    assert "`rag` by task.knowledge" in result.output
