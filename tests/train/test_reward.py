"""Reward models: the Bradley-Terry loss by hand, training, held-out ranking, and as a grader."""

import json
import math

import pytest
import torch

from tuneloop.train.reward import bradley_terry_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


def test_bradley_terry_by_hand():
    losses = bradley_terry_loss(torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0]))
    want = [math.log1p(math.exp(-2)), math.log(2), math.log1p(math.exp(2))]
    assert losses.tolist() == pytest.approx(want, abs=1e-6)


def _pairs(folder, n=40):
    rows = [
        {"prompt": f"please help with message {i} about my plan",
         "chosen": "cancel_subscription", "rejected": "refund_request please go away"}
        for i in range(n)
    ]  # fmt: skip
    path = folder / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reward_model_trains_ranks_heldout_pairs_and_grades(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from tuneloop.config import GraderConfig, validate_recipe
    from tuneloop.evaluate.graders import build_grader
    from tuneloop.evaluate.run import evaluate_run
    from tuneloop.train.session import train

    recipe = validate_recipe({
        "name": "rm", "workspace": str(tmp_path / "ws"), "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(_pairs(tmp_path)), "split": {"heldout_fraction": 0.3}},
        "train": {"objective": "reward", "max_steps": 12, "batch_size": 4, "lr": 0.01,
                  "precision": "fp32", "eval_every": 6, "lora": {"r": 4, "alpha": 8}},
    })  # fmt: skip
    run = train(recipe, progress=False)
    records = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # a zero head: no view
    assert "eval_accuracy" in records[-1] and records[-1]["eval_loss"] < records[0]["loss"]
    saved = load_file(run.path / "adapter" / "adapter_model.safetensors")
    assert any("score" in k for k in saved) and any("lora_A" in k for k in saved)

    results = evaluate_run(run)
    tuned = results["tuned"]
    assert tuned["metric"] == "pair_accuracy" and tuned["n"] == 12
    assert tuned["pair_accuracy"] == 1.0 and tuned["above_chance"]
    assert tuned["ci"]["pair_accuracy"]["low"] > 0.5
    assert "pair_accuracy" in results["zero-shot"]

    grader = build_grader(GraderConfig(reward_model=run.path))
    good, bad = grader(["cancel_subscription", "refund_request please go away"], ["", ""],
                       ["please help with message 99 about my plan"] * 2)  # fmt: skip
    assert 0.0 <= bad < good <= 1.0


def test_a_run_of_another_objective_is_no_reward_model(tmp_path):
    from tuneloop.errors import UserError
    from tuneloop.train.reward import load_reward_run

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "tuneloop.json").write_text(json.dumps({"objective": "sft"}))
    with pytest.raises(UserError, match="objective is `sft`"):
        load_reward_run(tmp_path)
