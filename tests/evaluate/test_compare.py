"""`tuneloop compare`: items only one evaluation holds are counted and said, the paired
statistics stay on the shared ones."""

import json

from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.evaluate.compare import compare_items, format_comparison


def items(ids: range, right: set[int]) -> list[dict]:
    return [{"id": f"q{i}", "scores": {"exact_match": float(i in right)}} for i in ids]


A = items(range(0, 10), right={0, 1})  # q0..q9
B = items(range(3, 15), right={3, 4, 5, 6, 7, 8})  # q3..q14: q0-q2 only in A, q10-q14 only in B


def test_unshared_items_are_counted_and_the_pairing_stays_on_the_shared_ones():
    result = compare_items(A, B, "exact_match", n_boot=200)
    assert result["only_in_a"] == 3 and result["only_in_b"] == 5
    assert result["paired"]["n"] == 7  # q3..q9
    text = format_comparison(result, "a", "b")
    assert "paired on 7 shared items" in text
    assert "3 of A's 10 items are not in B" in text and "5 of B's 12 items are not in A" in text


def test_nothing_is_said_when_every_item_is_shared():
    result = compare_items(A, A, "exact_match", n_boot=200)
    assert result["only_in_a"] == result["only_in_b"] == 0
    assert "not in" not in format_comparison(result, "a", "b")


def test_compare_json_output_holds_the_counts(tmp_path):
    for name, rows in (("a", A), ("b", B)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["only_in_a"], out["only_in_b"], out["paired"]["n"]) == (3, 5, 7)
    plain = CliRunner().invoke(app, args[:-1])
    assert "3 of A's 10 items are not in B" in plain.output
