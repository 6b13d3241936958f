"""`tuneloop data lint|stats|split` end to end on small files: exit codes, --json, --fix,
tokenizer checks with a tiny model folder, preference routing, and banking77."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from tuneloop.cli.main import app

MALFORMED = Path(__file__).parent / "malformed"


def tuneloop(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def chat(user: str, answer: str, **extra) -> str:
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": turns, **extra}, ensure_ascii=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_lists_every_finding_with_line_and_field(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "\n".join([chat("hi", "a"), chat("x", "b")[:-1], chat("mail ann@corp.io", "b")]) + "\n"
    )
    result = tuneloop("data", "lint", data, "--json")
    assert result.exit_code == 1
    findings = json.loads(result.stdout)
    bad = next(f for f in findings if f["code"] == "invalid-json")
    assert (bad["line"], bad["severity"], bad["column"]) == (2, "error", 87)  # the missing }
    pii = next(f for f in findings if f["code"] == "pii")
    assert (pii["line"], pii["field"]) == (3, "messages[0] (user)")


def test_warnings_only_exit_0(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join([chat("hi", "a"), chat("hi", "a"), chat("yo", "b")]) + "\n")
    result = tuneloop("data", "lint", data)
    assert result.exit_code == 0, result.output
    assert "0 errors, 2 warnings" in result.output  # the duplicate, and too few examples


def test_usage_mistakes_exit_2(tmp_path):
    missing = tuneloop("data", "lint", tmp_path / "nope.jsonl")
    assert missing.exit_code == 2 and "file not found" in missing.output
    bad = tuneloop("data", "lint", MALFORMED / "bom.jsonl", "--truncation", "middle")
    assert bad.exit_code == 2 and "truncate_left" in bad.output


def test_fix_writes_a_clean_copy_and_a_log_and_leaves_the_input(tmp_path):
    train, heldout, out = (
        tmp_path / "train.jsonl",
        tmp_path / "held.jsonl",
        tmp_path / "clean.jsonl",
    )
    train.write_text(
        "\n".join(
            [
                chat("hello there", "greet", meta={"id": 1}),
                chat("hello there", "greet"),  # exact duplicate of line 1
                chat("bad", "x")[:-1],  # broken JSON
                chat("ring\x07 the bell", "bell"),  # a control character
                chat("what time do you open", "hours"),  # also in held-out
            ]
        )
        + "\n"
    )
    heldout.write_text(chat("what time do you open", "hours") + "\n")
    before = digest(train)
    result = tuneloop("data", "lint", train, "--heldout", heldout, "--fix", out)
    assert result.exit_code == 1  # the input still has errors
    assert "kept 2, dropped 3, changed 1" in result.output
    assert digest(train) == before
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert kept[0]["meta"] == {"id": 1}  # records keep their own keys
    assert kept[1]["messages"][0]["content"] == "ring the bell"
    log = [json.loads(line) for line in (tmp_path / "clean.fix-log.jsonl").read_text().splitlines()]
    assert [(e["line"], e["action"], e["code"]) for e in log] == [
        (2, "dropped", "duplicate"),
        (3, "dropped", "invalid-json"),
        (4, "changed", "control-char"),
        (5, "dropped", "leakage"),
    ]
    relint = tuneloop("data", "lint", out, "--heldout", heldout)
    assert relint.exit_code == 0, relint.output


def test_fix_keeps_csv_columns_and_refuses_to_overwrite_the_input(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("id,text,category\n1,hi,greet\n2,hi,greet\n3,\ufeffbye,farewell\n")
    out = tmp_path / "clean.csv"
    result = tuneloop("data", "lint", data, "--label-column", "category", "--fix", out)
    assert result.exit_code == 0, result.output
    assert out.read_text() == "id,text,category\n1,hi,greet\n3,bye,farewell\n"
    same = tuneloop("data", "lint", data, "--label-column", "category", "--fix", data)
    assert same.exit_code == 2 and "overwrite its input" in same.output


def test_model_tokenizer_finds_examples_that_lose_their_answer(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join([chat("hi", "a"), chat("word " * 100, "b")]) + "\n")
    args = ["data", "lint", data, "--model", tiny_model_dir, "--max-length", "40"]
    right = tuneloop(*args, "--truncation", "truncate_right")
    assert right.exit_code == 0, right.output
    row = next(r for r in right.output.splitlines() if "target-lost" in r)
    assert f"{data}:2" in row
    left = tuneloop(*args, "--truncation", "truncate_left")
    assert "target-lost" not in left.output and "too-long" in left.output


def test_recipe_supplies_data_mapping_and_limits(tmp_path, tiny_model_dir):
    data = tmp_path / "d.csv"
    data.write_text("question,intent\n" + "\n".join(f"q {'x ' * (i * 30)},l{i}" for i in range(3)))
    recipe = tmp_path / "tuneloop.yaml"
    recipe.write_text(
        f"model:\n  name: {tiny_model_dir}\n"
        f"data:\n  train: {data}\n  csv:\n    text: question\n    label: intent\n"
        "train:\n  max_length: 60\n"
    )
    result = tuneloop("data", "lint", "--recipe", recipe)
    assert result.exit_code == 0, result.output
    assert "too-long" in result.output and f"{data}: 3 examples" in result.output


def test_preference_files_are_routed(tmp_path, monkeypatch):
    pairs = MALFORMED / "preference_pairs.jsonl"
    result = tuneloop("data", "lint", pairs)
    if "tuneloop.data.preference" in sys.modules or _has_preference():
        assert "preference pairs" in result.output, result.output
        assert result.exit_code in (0, 1)
    import tuneloop.data as data_package

    monkeypatch.setitem(sys.modules, "tuneloop.data.preference", None)  # as if not installed
    monkeypatch.delattr(data_package, "preference", raising=False)
    missing = tuneloop("data", "lint", pairs)
    assert missing.exit_code == 1
    assert "preference-data" in missing.output and "Traceback" not in missing.output


def _has_preference() -> bool:
    import importlib.util

    return importlib.util.find_spec("tuneloop.data.preference") is not None


def test_stats_histogram_png_and_estimate(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    lines = [
        chat(f"message {'x ' * i}", f"l{i % 2}", meta={"label": f"l{i % 2}"}) for i in range(20)
    ]
    data.write_text("\n".join(lines) + "\n")
    png = tmp_path / "lengths.png"
    result = tuneloop(
        "data", "stats", data, "--model", tiny_model_dir, "--png", png,
        "--tokens-per-second", "100",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "labels       2 in train" in result.output
    assert "█" in result.output  # the terminal histogram
    assert "optimizer steps" in result.output and "at 100 tokens/s" in result.output
    as_json = json.loads(
        tuneloop("data", "stats", data, "--model", tiny_model_dir, "--json").stdout
    )
    assert as_json["examples"] == {"train": 20, "heldout": 0}
    assert as_json["estimate"]["steps"] == 6  # 2 epochs of ceil(20 / 8) micro-batches


def test_split_keeps_near_twins_together_by_default(tmp_path):
    data = tmp_path / "d.jsonl"
    lines = []
    for i in range(30):
        text = f"customer {i} asks about topic {i * 7} in detail with many words here"
        lines += [chat(text, f"l{i % 2}"), chat(text + "!!", f"l{i % 2}")]
    data.write_text("\n".join(lines) + "\n")
    result = tuneloop("data", "split", data, "--out", tmp_path / "split")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert manifest["near_duplicate_threshold"] == 0.8
    held = (tmp_path / "split" / "heldout.jsonl").read_text()
    for i in range(30):
        assert held.count(f"customer {i} asks ") in (0, 2)


def test_banking77_duplicates_near_duplicates_and_leakage(banking77):
    result = tuneloop(
        "data", "lint", banking77 / "train.csv", "--heldout", banking77 / "test.csv",
        "--label-column", "category", "--json",
    )  # fmt: skip
    assert result.exit_code == 1
    findings = json.loads(result.stdout)

    def where(code: str, file: str) -> list[int]:
        return [f["line"] for f in findings if f["code"] == code and f["where"].startswith(file)]

    train, test = str(banking77 / "train.csv"), str(banking77 / "test.csv")
    assert len(where("leakage", test)) == 7
    assert len(where("duplicate", train)) == 4
    assert len(where("duplicate", test)) == 1
    assert len(where("near-duplicate", train)) > 50
    assert len(where("near-leakage", test)) > 50
    assert all(f["severity"] == "warning" for f in findings if f["code"] != "leakage")
