"""The command line on user mistakes: `error: file:line ...`, exit 2, no traceback, no run folder.

The tests run `tuneloop` in-process through typer's `CliRunner`, and one runs the real command
in a subprocess; nothing here downloads or trains (each mistake is caught before a run folder is
made).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneloop.cli.main import app


def tuneloop(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def chat(user: str, answer: str, **extra) -> str:
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": turns, **extra})


GOOD = [chat(f"message number {i}", "label_a" if i % 2 else "label_b") for i in range(6)]


def write_recipe(folder: Path, train: str, model_dir: Path, extra: str = "") -> Path:
    path = folder / "tuneloop.yaml"
    path.write_text(
        f"name: bad-data\n"
        f"workspace: {folder / '.tuneloop'}\n"
        f"model:\n  name: {model_dir}\n"
        f"data:\n  train: {train}\n"
        f"{extra}",
        encoding="utf-8",
    )
    return path


def assert_no_run_folder(folder: Path) -> None:
    runs = folder / ".tuneloop" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


# Each case: the file name, its text, the line named in the error, and words the message holds.
MALFORMED = {
    "broken-json": (
        "train.jsonl",
        "\n".join([*GOOD[:2], GOOD[2][:-1] + ",", *GOOD[3:]]) + "\n",
        3,
        "invalid JSON",
    ),
    "no-assistant": (
        "train.jsonl",
        "\n".join(
            [*GOOD[:3], json.dumps({"messages": [{"role": "user", "content": "hi"}]}), *GOOD[3:]]
        )
        + "\n",
        4,
        "no assistant turn",
    ),
    "unknown-role": (
        "train.jsonl",
        "\n".join(
            [
                GOOD[0],
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": "hi"},
                            {"role": "bot", "content": "hello"},
                        ]
                    }
                ),
                *GOOD[1:],
            ]
        )
        + "\n",
        2,
        "unknown role 'bot'",
    ),
    "empty-file": ("train.jsonl", "", None, "the file is empty"),
    "csv-missing-column": (
        "train.csv",
        "question,intent\nI lost my card,lost_card\nwhere is my money,transfer\n",
        1,
        "column 'text' not found",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_data_stops_train_with_file_and_line(tmp_path, tiny_model_dir, case):
    name, text, line, words = MALFORMED[case]
    data = tmp_path / name
    data.write_text(text, encoding="utf-8")
    recipe = write_recipe(tmp_path, name, tiny_model_dir)

    result = tuneloop("train", recipe, "--quiet")

    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    where = f"{data}:{line}" if line is not None else f"{data}"
    assert where in result.output
    assert words in result.output
    assert "fix:" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert_no_run_folder(tmp_path)


def test_unknown_recipe_key_lists_key_and_line(tmp_path, tiny_model_dir):
    (tmp_path / "train.jsonl").write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    recipe = write_recipe(tmp_path, "train.jsonl", tiny_model_dir, "train:\n  learning_rate: 0.1\n")

    result = tuneloop("train", recipe, "--quiet")

    assert result.exit_code == 2, result.output
    assert f"error: {recipe}: 1 problem(s) in the recipe" in result.output
    assert f"{recipe}:8 (train.learning_rate): unknown key `learning_rate`" in result.output
    assert "Traceback" not in result.output
    assert_no_run_folder(tmp_path)


def test_bad_set_override_is_reported(tmp_path, tiny_model_dir):
    (tmp_path / "train.jsonl").write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    recipe = write_recipe(tmp_path, "train.jsonl", tiny_model_dir)

    result = tuneloop("train", recipe, "--set", "train.lr=-1", "--set", "train.epoch=3")

    assert result.exit_code == 2, result.output
    assert "(train.lr): Input should be greater than 0; got -1" in result.output
    assert "unknown key `epoch`" in result.output and "did you mean `epochs`?" in result.output
    assert_no_run_folder(tmp_path)


def test_model_not_on_this_machine_stops_before_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "train.jsonl").write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    recipe = write_recipe(tmp_path, "train.jsonl", Path("some-org/no-such-model"))

    result = tuneloop("train", recipe, "--quiet")

    assert result.exit_code == 2, result.output
    assert "error: model.name: model `some-org/no-such-model`" in result.output
    assert "Traceback" not in result.output
    assert_no_run_folder(tmp_path)


def test_missing_recipe_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = tuneloop("train")
    assert result.exit_code == 2
    assert "error: recipe file not found: tuneloop.yaml" in result.output
    assert "tuneloop init" in result.output


def test_eval_of_a_run_that_does_not_exist(tmp_path):
    workspace = tmp_path / ".tuneloop"
    (workspace / "runs").mkdir(parents=True)

    result = tuneloop("eval", "20990101-000000-nope", "--workspace", workspace, "--quiet")

    assert result.exit_code == 2, result.output
    assert "error: no run `20990101-000000-nope`" in result.output
    assert str(workspace / "runs") in result.output
    assert "fix:" in result.output
    assert "Traceback" not in result.output


def test_data_lint_reports_duplicate_and_leak(tmp_path):
    train = tmp_path / "train.jsonl"
    heldout = tmp_path / "heldout.jsonl"
    train.write_text("\n".join([*GOOD, GOOD[1]]) + "\n", encoding="utf-8")  # line 7 = line 2
    heldout.write_text(
        "\n".join([chat("something new", "label_a"), GOOD[4]]) + "\n", encoding="utf-8"
    )

    result = tuneloop("data", "lint", train, "--heldout", heldout)

    assert result.exit_code == 1, result.output
    assert f"{heldout}:2" in result.output and "leakage" in result.output
    assert f"{train}:5" in result.output  # the training twin of the leaked example
    assert f"{train}:7" in result.output and "duplicate" in result.output
    assert f"exact duplicate of {train}:2" in result.output
    assert "1 error" in result.output

    as_json = tuneloop("data", "lint", train, "--heldout", heldout, "--json")
    assert as_json.exit_code == 1
    codes = {f["code"]: f for f in json.loads(as_json.stdout)}
    assert codes["leakage"]["severity"] == "error"
    assert codes["leakage"]["where"] == f"{heldout}:2"
    assert codes["duplicate"]["where"] == f"{train}:7"


def test_data_lint_on_a_clean_file_exits_0(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(GOOD) + "\n", encoding="utf-8")

    result = tuneloop("data", "lint", train)

    assert result.exit_code == 0, result.output
    assert f"{train}: 6 examples" in result.output
    assert "0 errors" in result.output  # only the warning that 6 examples are few


def test_data_lint_on_malformed_data_exits_1_with_line(tmp_path):
    name, text, line, words = MALFORMED["unknown-role"]
    data = tmp_path / name
    data.write_text(text, encoding="utf-8")

    result = tuneloop("data", "lint", data)

    assert result.exit_code == 1  # a data error; 2 is kept for usage mistakes
    assert f"{data}:{line} " in result.output and words in result.output
    assert "Traceback" not in result.output


def test_data_split_then_convert_round_trip(tmp_path):
    source = tmp_path / "intents.csv"
    rows = [f"message {i} about {'cards' if i % 2 else 'transfers'},{i % 2}" for i in range(20)]
    source.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "split"

    split = tuneloop("data", "split", source, "--out", out, "--heldout-fraction", "0.25")
    assert split.exit_code == 0, split.output
    assert "15 train, 5 held-out" in split.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 15, "heldout": 5}
    assert sorted(manifest["labels"]["heldout"].values()) == [2, 3]  # stratified by label

    alpaca = tmp_path / "train.alpaca.jsonl"
    convert = tuneloop("data", "convert", out / "train.jsonl", alpaca, "--to", "alpaca")
    assert convert.exit_code == 0, convert.output
    assert "wrote 15 examples" in convert.output
    records = [json.loads(line) for line in alpaca.read_text().splitlines()]
    assert len(records) == 15
    assert set(records[0]) >= {"instruction", "output"}

    back = tmp_path / "train.messages.jsonl"
    assert tuneloop("data", "convert", alpaca, back).exit_code == 0
    original = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in back.read_text().splitlines()]
    assert again == original


def test_help_lists_the_verbs():
    def verbs(output: str) -> set[str]:
        # The first word of each row in the command list (plain or boxed by rich).
        return set(re.findall(r"^[\W_]*([a-z]+)\s{2,}\S", output, re.MULTILINE))

    result = tuneloop("--help")
    assert result.exit_code == 0
    assert {"init", "data", "train", "eval", "quickstart"} <= verbs(result.output)
    data_help = tuneloop("data", "--help")
    assert {"lint", "split", "convert"} <= verbs(data_help.output)


def test_real_command_prints_the_error_on_stderr_without_traceback(tmp_path, tiny_model_dir):
    """The real command in a subprocess: what a user sees on the terminal."""
    name, text, line, _ = MALFORMED["broken-json"]
    (tmp_path / name).write_text(text, encoding="utf-8")
    recipe = write_recipe(tmp_path, name, tiny_model_dir)

    proc = subprocess.run(
        [sys.executable, "-m", "tuneloop.cli.main", "train", str(recipe), "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )

    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / name}:{line}: invalid JSON")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert_no_run_folder(tmp_path)


def test_missing_data_file_says_where_it_looked_and_that_paths_start_at_the_recipe(
    tmp_path, tiny_model_dir, monkeypatch
):
    project = tmp_path / "project"
    project.mkdir()
    recipe = write_recipe(project, "data/train.jsonl", tiny_model_dir)
    monkeypatch.chdir(tmp_path)  # the working directory is not the recipe's folder

    result = tuneloop("train", "project/tuneloop.yaml", "--quiet")

    assert result.exit_code == 2, result.output
    looked = project / "data" / "train.jsonl"
    assert f"error: {looked}: file not found" in result.output
    assert f"looked for {looked}" in result.output
    assert "relative to the recipe's folder" in result.output
    assert str(tmp_path) + " " not in result.output  # no hint about the working directory
    assert recipe.is_file()
    assert_no_run_folder(project)


def test_library_warnings_print_as_one_plain_line(capsys):
    """What the library says (e.g. shots drawn from all of train) reaches the user as
    `warning: ...` on stderr, not as a Python warning with a file name and source line."""
    import warnings

    from tuneloop.cli.common import user_errors

    @user_errors
    def verb():
        warnings.warn("shots drawn from all of train", UserWarning, stacklevel=1)
        return 7

    assert verb() == 7
    err = capsys.readouterr().err
    assert err == "warning: shots drawn from all of train\n"
