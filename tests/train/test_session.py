"""Whole runs through the session on the tiny model folder, and recipes that must be refused
before any weights load."""

import json
import subprocess
import sys

import pytest
import torch

from tuneloop.config import validate_recipe
from tuneloop.data.preference_examples import write_support_preferences
from tuneloop.errors import UserError
from tuneloop.train import session

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


def write_sft(path, n=24):
    labels = ["alpha", "beta", "gamma"]
    rows = [
        {"messages": [{"role": "user", "content": f"item {i} about {labels[i % 3]} things"},
                      {"role": "assistant", "content": labels[i % 3]}]}
        for i in range(n)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tmp_path, model_dir, data, **train):
    raw = {
        "name": "t",
        "workspace": str(tmp_path / "ws"),
        "model": {"name": str(model_dir)},
        "data": {"train": str(data)},
        "train": {"max_steps": 4, "batch_size": 4, "lr": 0.02, **train},
    }
    return validate_recipe(raw).resolved(tmp_path)


@pytest.fixture()
def no_weights(monkeypatch):
    """Fail the test if any weights load."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the recipe was refused")

    monkeypatch.setattr(session, "load_base", refuse)
    monkeypatch.setattr("tuneloop.models.load.load_model", refuse)


def test_qlora_settings_with_full_finetuning_are_refused_with_the_recipe(tmp_path):
    with pytest.raises(UserError) as err:
        validate_recipe({"data": {"train": "x.jsonl"},
                         "train": {"method": "full", "qlora": {"quant_type": "nf4"}}})  # fmt: skip
    text = err.value.render()
    assert "train.qlora" in text and "cannot be trained directly" in text
    assert "method: qlora" in text


@pytest.mark.parametrize(
    ("train", "needle"),
    [
        ({"packing": True, "method": "prompt"}, "virtual tokens"),
        ({"objective": "distill"}, "needs a teacher"),
        ({"objective": "distill", "distill": {"teacher": "http://127.0.0.1:9/v1"}}, "only returns"),
        ({"early_stopping": {"patience": 2}}, "train.eval_every"),
    ],
)
def test_impossible_combinations_are_refused_with_the_recipe(train, needle):
    with pytest.raises(UserError, match=needle):
        validate_recipe({"data": {"train": "x.jsonl"}, "train": train})


def test_dora_on_an_unsupported_module_type_is_refused_before_weights(
    tmp_path, tiny_model_dir, no_weights
):
    data = write_sft(tmp_path / "train.jsonl")
    r = recipe(tmp_path, tiny_model_dir, data, method="dora",
               lora={"target_modules": ["q_proj", "input_layernorm"]})  # fmt: skip
    with pytest.raises(UserError) as err:
        session.train(r, progress=False)
    text = err.value.render()
    assert "`input_layernorm` (LlamaRMSNorm)" in text and "train.lora.target_modules" in text
    assert not (tmp_path / "ws").exists()  # no run folder either


def test_preference_data_for_an_sft_objective_is_refused_before_weights(
    tmp_path, tiny_model_dir, no_weights
):
    prefs = write_support_preferences(tmp_path / "prefs.jsonl", n_per_label=1)
    with pytest.raises(UserError) as err:
        session.train(recipe(tmp_path, tiny_model_dir, prefs), progress=False)
    assert "train.objective" in err.value.render() and "dpo" in err.value.render()


def test_sft_data_for_a_dpo_objective_is_refused_before_weights(
    tmp_path, tiny_model_dir, no_weights
):

    data = write_sft(tmp_path / "train.jsonl")
    with pytest.raises(UserError) as err:
        session.train(recipe(tmp_path, tiny_model_dir, data, objective="dpo"), progress=False)
    text = err.value.render()
    assert "train.jsonl:1" in text and "objective `sft`" in text


def test_cli_prints_the_refusal_without_a_traceback(tmp_path, tiny_model_dir):
    prefs = write_support_preferences(tmp_path / "prefs.jsonl", n_per_label=1)
    (tmp_path / "tuneloop.yaml").write_text(
        f"model: {{name: {tiny_model_dir}}}\ndata: {{train: {prefs}}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tuneloop.cli.main", "train", str(tmp_path / "tuneloop.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "objective: dpo" in proc.stderr


def test_dpo_run_with_packing_checkpointing_and_evaluation(tmp_path, tiny_model_dir):
    prefs = write_support_preferences(tmp_path / "prefs.jsonl", n_per_label=3)
    said = []
    r = recipe(tmp_path, tiny_model_dir, prefs, objective="dpo", packing=True,
               gradient_checkpointing=True, eval_every=2, dpo={"beta": 0.2})  # fmt: skip
    run = session.train(r, progress=False, say=said.append)
    info = run.info()
    assert info["status"] == "finished" and info["objective"] == "dpo"
    # per-example attention: each batch in one row, so no padding went through the model
    assert info["tokens"] == info["real_tokens"] > 0
    assert "memory estimate" in said[0] and info["memory_estimate"]["total"] > 0
    records = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert records[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference
    assert "eval_reward_margin" in records[1] and "reward_accuracy" in records[0]
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert (run.path / "data" / "heldout.jsonl").is_file()  # the split it made, in pairs


def test_full_finetuning_saves_weights_that_reload(tmp_path, tiny_model_dir):
    from tuneloop.models.adapters import load_trained

    data = write_sft(tmp_path / "train.jsonl")
    run = session.train(recipe(tmp_path, tiny_model_dir, data, method="full", lr=0.01),
                        progress=False)  # fmt: skip
    info = run.info()
    assert info["output"].endswith("model") and info["method"] == "full"
    model = load_trained(None, info["output"])
    before = load_trained(None, tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters(),
                                                      strict=True))  # fmt: skip


def test_distill_run_from_a_teacher_with_the_same_tokenizer(tmp_path, tiny_model_dir):
    data = write_sft(tmp_path / "train.jsonl")
    r = recipe(tmp_path, tiny_model_dir, data, objective="distill",
               distill={"teacher": str(tiny_model_dir), "alpha": 0.5})  # fmt: skip
    run = session.train(r, progress=False)
    records = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # student starts as the teacher
    assert run.info()["memory_estimate"]["weights"] > 0


def test_packing_auto_packs_where_it_sends_fewer_tokens_and_says_why(tmp_path, tiny_model_dir):
    """Examples of different lengths and no common prompt: packed rows send fewer tokens than
    padded ones. The same examples behind one long shared system prompt: padded rows, which
    run that prefix once per batch, send fewer. The choice is printed and kept in run.json."""

    def rows(system):
        out = []
        for i in range(16):
            chat = [{"role": "user", "content": f"question {i} " + "and more words " * (i % 5)},
                    {"role": "assistant", "content": "answer " * (1 + i % 3)}]  # fmt: skip
            out.append({"messages": ([{"role": "system", "content": system}] if system else [])
                        + chat})  # fmt: skip
        return out

    runs = {}
    for name, system in (("varied", ""), ("shared", "You sort support tickets. " * 12)):
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows(system)))
        said = []
        r = recipe(tmp_path / name, tiny_model_dir, data, max_steps=2)
        assert r.train.packing == "auto"
        run = session.train(r, progress=False, say=said.append)
        runs[name] = (run.info(), said)
    info, said = runs["varied"]
    assert info["packing"]["packed"] is True
    assert info["packing"]["tokens"]["packed"] < info["packing"]["tokens"]["padded"]
    assert any(line.startswith("train.packing: auto -> true: ") for line in said)
    assert info["tokens"] == info["real_tokens"]  # one row, no padding
    info, said = runs["shared"]
    assert info["packing"]["packed"] is False and "shared prefix run once" in info["packing"]["why"]
    assert info["packing"]["tokens"]["padded"] < info["packing"]["tokens"]["packed"]
    assert any(line.startswith("train.packing: auto -> false: ") for line in said)


def test_packing_auto_leaves_other_objectives_padded_and_says_so(tmp_path, tiny_model_dir):
    prefs = write_support_preferences(tmp_path / "prefs.jsonl", n_per_label=3)
    said = []
    run = session.train(recipe(tmp_path, tiny_model_dir, prefs, objective="dpo", max_steps=1),
                        progress=False, say=said.append)  # fmt: skip
    packing = run.info()["packing"]
    assert packing["packed"] is False and "objective sft only" in packing["why"]
    assert any("train.packing: auto -> false: auto packs objective sft only" in s for s in said)


def test_packing_auto_keeps_padded_rows_where_packed_examples_would_see_each_other(
    tmp_path, tiny_model_dir, monkeypatch
):
    """What `packing: true` refuses (the isolation probe fails), `auto` declines, and says so."""
    monkeypatch.setattr(session, "check_packing_isolates", lambda model, vocab: False)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": "q " * (1 + 3 * i)},
                                 {"role": "assistant", "content": "a"}]}) + "\n"
        for i in range(8)
    ))  # fmt: skip
    said = []
    run = session.train(recipe(tmp_path, tiny_model_dir, data, max_steps=1), progress=False,
                        say=said.append)  # fmt: skip
    assert run.info()["packing"] == {
        "packed": False,
        "why": "this model's attention ignores restarting position_ids",
    }
    assert any("auto -> false: this model's attention ignores" in line for line in said)
    with pytest.raises(UserError, match="would attend to each other"):
        session.train(recipe(tmp_path / "b", tiny_model_dir, data, max_steps=1, packing=True),
                      progress=False)  # fmt: skip
