"""Refine: failures with their nearest training examples; blind review round trip."""

import json

import pytest

from tuneloop.errors import DataError
from tuneloop.refine import export_failures, export_review, import_ratings
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
