"""A held-out set that tokenizes to nothing (every example longer than `train.max_length`)
leaves no held-out loss: early stopping is refused before weights load, and a plain
`eval_every` says that it is off, in the output and in run.json."""

import json

import pytest

from tuneloop.config import validate_recipe
from tuneloop.errors import UserError
from tuneloop.train import session

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}  # fmt: skip


def recipe(tmp_path, model_dir, **train):
    short = [chat(f"item {i}", "alpha") for i in range(12)]
    long = [chat("the quick brown fox jumps over the lazy dog " * 6 + str(i), "beta")
            for i in range(4)]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short))
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long))
    return validate_recipe({
        "name": "t", "workspace": str(tmp_path / "ws"), "model": {"name": str(model_dir)},
        "data": {"train": str(tmp_path / "train.jsonl"),
                 "heldout": str(tmp_path / "heldout.jsonl")},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 0.01, "precision": "fp32",
                  "max_length": 40, "truncation": "drop", "lora": {"r": 4, "alpha": 8},
                  **train},
    })  # fmt: skip


def test_early_stopping_without_a_heldout_loss_is_refused_before_weights_load(
    tmp_path, tiny_model_dir, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the recipe was refused")

    monkeypatch.setattr(session, "load_base", refuse)
    r = recipe(tmp_path, tiny_model_dir, eval_every=1, early_stopping={"patience": 2})
    with pytest.raises(UserError) as err:
        session.train(r, progress=False)
    text = err.value.render()
    assert "train.early_stopping" in text and "4 held-out examples" in text
    assert "max_length" in text
    assert not (tmp_path / "ws" / "runs").exists()


def test_eval_every_without_a_heldout_loss_says_so_and_notes_it(tmp_path, tiny_model_dir):
    said: list[str] = []
    run = session.train(recipe(tmp_path, tiny_model_dir, eval_every=1), progress=False,
                        say=said.append)  # fmt: skip
    notice = [line for line in said if "no held-out loss" in line]
    assert notice and "4 held-out examples" in notice[0]
    info = run.info()
    assert info["heldout_loss"] is False
    assert any("no held-out loss" in note for note in info["notes"])
