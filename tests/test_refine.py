"""Refine: failures with their nearest training examples; blind review round trip."""

import json

import pytest
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.errors import DataError, UserError
from tuneloop.refine import export_failures, export_review, import_ratings, tuned_failure_rule
from tuneloop.workspace import Run


def make_run(tmp_path) -> Run:
    run = Run(tmp_path / "runs" / "r1")
    (run.path / "eval").mkdir(parents=True)
    (run.path / "data").mkdir()
    train = [("my card payment was declined", "card_declined"),
             ("how do I reset my password", "reset_password"),
             ("the parcel never arrived", "shipping_status")]  # fmt: skip
    lines = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
             for q, a in train]  # fmt: skip
    (run.path / "data" / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run.path / "recipe.yaml").write_text("name: r1\ndata: {train: data/train.jsonl}\n")
    held = [
        ("payment declined at the shop", "card_declined", "reset_password", "hello"),
        ("where is my parcel", "shipping_status", "shipping_status", "it is on its way"),
    ]
    for rung, col in (("tuned", 2), ("zero-shot", 3)):
        items = [
            {
                "source": f"h:{i}",
                "prompt": h[0],
                "reference": h[1],
                "prediction": h[col],
                "scores": {"exact_match": float(h[col] == h[1])},
            }
            for i, h in enumerate(held)
        ]
        (run.eval_dir / f"{rung}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    return run


def test_failures_come_with_their_nearest_training_examples(tmp_path):
    run = make_run(tmp_path)
    out = tmp_path / "review.jsonl"
    assert export_failures(run, out, k=2) == 1
    (failure,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert failure["prediction"] == "reset_password"
    assert failure["nearest_train"][0]["prompt"] == "my card payment was declined"


def json_run(tmp_path) -> Run:
    """A JSON task whose recipe set `task.metric: json_fields`: partial credit per field."""
    run = make_run(tmp_path)
    (run.path / "run.json").write_text(json.dumps({"id": run.id, "status": "finished"}))
    fields = [1.0, 0.75, 0.25, 0.0]
    items = [
        {"source": f"j:{i}", "prompt": f"card payment declined {i}", "reference": '{"a": 1}',
         "prediction": "{}", "scores": {"exact_match": float(f == 1), "json_fields": f}}
        for i, f in enumerate(fields)
    ]  # fmt: skip
    (run.eval_dir / "tuned.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    summary = {"rung": "tuned", "task": "json", "metric": "json_fields", "n": len(items)}
    (run.eval_dir / "tuned.json").write_text(json.dumps(summary))
    return run


def test_failures_are_judged_by_the_recorded_task_metric(tmp_path):
    run = json_run(tmp_path)
    out = tmp_path / "review.jsonl"
    # exact match would call 3 of 4 failed; json_fields below 0.5 calls 2
    assert export_failures(run, out, k=1) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["metric"], r["score"]) for r in rows] == [("json_fields", 0.25), ("json_fields", 0)]
    assert export_failures(run, out, rule=tuned_failure_rule(run, below=0.8)) == 3
    # a 0/1 metric fails an item at 0, whatever --below says
    assert str(tuned_failure_rule(make_run(tmp_path / "b"), below=0.2)) == "exact_match = 0"


def test_failures_command_states_its_rule(tmp_path):
    run = json_run(tmp_path)
    out = tmp_path / "review.jsonl"
    result = CliRunner().invoke(app, ["failures", str(run.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 failed items" in result.output
    assert "failed means json_fields below 0.5" in result.output
    result = CliRunner().invoke(app, ["failures", str(run.path), "--out", str(out),
                                      "--below", "0.8"])  # fmt: skip
    assert "wrote 3 failed items" in result.output and "below 0.8" in result.output


def test_failures_refuse_items_without_the_recorded_metric(tmp_path):
    run = make_run(tmp_path)
    summary = {"rung": "tuned", "task": "text", "metric": "rouge_l", "n": 2}
    (run.eval_dir / "tuned.json").write_text(json.dumps(summary))
    with pytest.raises(UserError) as err:
        export_failures(run, tmp_path / "review.jsonl")
    assert "no `rouge_l` score" in str(err.value)


def test_blind_review_round_trip(tmp_path):
    run = make_run(tmp_path)
    pairs_path = tmp_path / "pairs.jsonl"
    assert export_review(run, pairs_path) == 2
    pairs = [json.loads(line) for line in pairs_path.read_text().splitlines()]
    assert all(set(p) == {"id", "prompt", "a", "b"} for p in pairs)  # no identities
    key = json.loads((run.path / "review" / "key.json").read_text())["pairs"]
    # The rater prefers the tuned answer every time.
    ratings = [{"id": p["id"], "winner": "a" if key[p["id"]]["a"] == "tuned" else "b"}
               for p in pairs]  # fmt: skip
    rated = tmp_path / "ratings.jsonl"
    rated.write_text("".join(json.dumps(r) + "\n" for r in ratings))
    summary = import_ratings(run, rated)
    assert summary["tuned_wins"] == 2 and summary["tuned_losses"] == 0 and summary["win_rate"] == 1
    assert json.loads((run.path / "review" / "ratings.json").read_text()) == summary

    rated.write_text('{"id": "p00000", "winner": "a"}\n{"id": "p00001", "winner": "c"}\n')
    with pytest.raises(DataError) as err:
        import_ratings(run, rated)
    assert err.value.problems[0].where.endswith("ratings.jsonl:2")
