"""What training tells the registry beyond ids: the hardware it ran on, the data lint's counts,
the teacher's provenance of a distilled dataset; and what happens when the registry fails."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.config import validate_recipe
from tuneloop.files import provenance_path
from tuneloop.registry import Registry, record
from tuneloop.train.session import train
from tuneloop.train.teacher import generate_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest

TOPICS = ["alpha", "beta", "gamma"]


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"item {i} about {TOPICS[i % 3]} things"},
                         {"role": "assistant", "content": TOPICS[i % 3]}]}  # fmt: skip


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def tiny_recipe(tmp_path, model_dir, train_file, heldout_file=None, **train_cfg):
    data = {"train": str(train_file)}
    if heldout_file is not None:
        data["heldout"] = str(heldout_file)
    return validate_recipe({
        "name": "t", "workspace": str(tmp_path / "ws"), "model": {"name": str(model_dir)},
        "data": data,
        "train": {"max_steps": 2, "batch_size": 4, "lr": 0.01, "precision": "fp32",
                  "lora": {"r": 4, "alpha": 8}, **train_cfg},
    })  # fmt: skip


def runs_show(workspace, run_id) -> str:
    result = CliRunner().invoke(app, ["runs", "show", run_id, "--workspace", str(workspace)])
    assert result.exit_code == 0, result.output
    return result.output


def test_hardware_and_lint_are_recorded_and_shown(tmp_path, tiny_model_dir):
    rows = [chat(i) for i in range(24)]
    write_rows(tmp_path / "train.jsonl", [*rows, rows[0]])  # one exact duplicate
    write_rows(tmp_path / "heldout.jsonl", [chat(i) for i in range(100, 106)])
    run = train(tiny_recipe(tmp_path, tiny_model_dir, tmp_path / "train.jsonl",
                            tmp_path / "heldout.jsonl"), progress=False)  # fmt: skip
    with Registry(tmp_path / "ws") as reg:
        row = reg.run(run.id)
        hardware = row["hardware"]
        lint = reg.dataset(row["train_dataset_id"])["lint"]
    assert hardware["device"] == "cpu" and hardware["torch"] and hardware["cpus"] >= 1
    assert hardware["memory_gb"] > 0 and hardware["cpu"]
    assert lint["warning"] >= 1 and lint["codes"]["duplicate"] == 1
    shown = runs_show(tmp_path / "ws", run.id)
    assert "hardware  cpu" in shown and "torch" in shown
    assert "lint" in shown and "duplicate 1" in shown


class FakeTeacher:
    def describe(self) -> dict:
        return {"kind": "endpoint", "url": "http://teacher/v1/chat/completions", "model": "big"}

    def answer(self, prompts, max_new_tokens, temperature) -> list[str]:
        return [TOPICS[i % 3] for i in range(len(prompts))]


def test_a_distilled_datasets_provenance_is_linked_and_shown(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"item {i} about {TOPICS[i % 3]} things\n" for i in range(20)))
    out = tmp_path / "distilled.jsonl"
    generate_dataset(FakeTeacher(), prompts, out)
    run = train(tiny_recipe(tmp_path, tiny_model_dir, out), progress=False)
    with Registry(tmp_path / "ws") as reg:
        ds = reg.dataset(reg.run(run.id)["train_dataset_id"])
    assert ds["provenance"]["path"] == str(provenance_path(out))
    assert ds["provenance"]["teacher"]["model"] == "big" and ds["provenance"]["matches"] is True
    shown = runs_show(tmp_path / "ws", run.id)
    assert f"provenance {provenance_path(out)}" in shown and "big" in shown


def test_a_registry_failure_is_said_and_noted_and_training_goes_on(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    def broken(self, *args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Registry, "add_dataset", broken)
    write_rows(tmp_path / "train.jsonl", [chat(i) for i in range(24)])
    run = train(tiny_recipe(tmp_path, tiny_model_dir, tmp_path / "train.jsonl"), progress=False)
    assert run.info()["status"] == "finished"
    err = capsys.readouterr().err
    assert "registry" in err and "disk I/O error" in err
    assert any("disk I/O error" in note for note in run.info()["notes"])


def test_data_that_cannot_be_read_again_is_not_registered_as_empty(
    tmp_path, tiny_model_dir, capsys
):
    write_rows(tmp_path / "train.jsonl", [chat(i) for i in range(24)])
    run = train(tiny_recipe(tmp_path, tiny_model_dir, tmp_path / "train.jsonl"), progress=False)
    (tmp_path / "train.jsonl").unlink()  # the recipe's file is gone; so is the saved split
    for name in ("train.jsonl", "heldout.jsonl"):
        (run.path / "data" / name).unlink()
    capsys.readouterr()
    info = dict(run.info()["data"], train_sha256="f" * 64)
    record.run_updated(run.path, run.id, {"data": info})
    with Registry(tmp_path / "ws") as reg:
        sizes = [row[0] for row in reg.db.execute("SELECT n_examples FROM datasets")]
    assert sizes and 0 not in sizes
    assert "registry" in capsys.readouterr().err
