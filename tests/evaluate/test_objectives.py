"""Every objective can be evaluated, gated and reported: a tiny DPO run and a tiny distillation
run go through the real `tuneloop eval`, `gate` and `report` commands."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TOPICS
from tuneloop.cli.main import app
from tuneloop.workspace import Run

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest

# Small enough for the tiny model to answer all 205 probes twice in seconds.
EVAL = {"max_new_tokens": 3, "probe_max_new_tokens": 2, "train_sample": 4, "bootstrap": 200,
        "few_shot_k": 2, "retrieval_k": 2}  # fmt: skip


def tuneloop(*args: str):
    """The real command line, in process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def train_tiny(folder: Path, model_dir: Path, objective: str, rows: list[dict],
               task: dict | None = None, **train) -> Run:  # fmt: skip
    """A finished run of `objective` on the tiny model, made as `tuneloop train` makes one; the
    held-out split is carved out of `rows` and saved in the run, as it is by default."""
    from tuneloop.config import validate_recipe
    from tuneloop.train.session import train as train_run

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = validate_recipe(
        {
            "name": objective,
            "workspace": str(folder / "ws"),
            "model": {"name": str(model_dir)},
            "data": {"train": str(folder / "train.jsonl")},
            "task": {"instruction": "Name the topic of the item.", **(task or {})},
            "train": {
                "objective": objective,
                "max_steps": 3,
                "batch_size": 4,
                "lr": 0.01,
                "precision": "fp32",
                "lora": {"r": 4, "alpha": 8},
                **train,
            },
            "eval": EVAL,
        }
    )
    return train_run(recipe, progress=False)


def eval_gate_report(run: Run) -> None:
    """eval, gate (a tiny model fails it: exit 1, not a crash) and report on `run`."""
    ws = str(run.path.parents[1])
    code, out, err = tuneloop("eval", run.id, "--workspace", ws, "--quiet")
    assert code == 0, out + err
    code, out, err = tuneloop("gate", run.id, "--workspace", ws, "--quiet")
    assert code in (0, 1), out + err
    assert f"gate for run {run.id}" in out
    gate = json.loads((run.path / "gate.json").read_text())
    assert gate["passed"] == (code == 0)
    assert "task" in {c["name"] for c in gate["conditions"]}
    code, out, err = tuneloop("report", run.id, "--workspace", ws)
    assert code == 0, out + err
    page = (run.path / "report.html").read_text()
    assert "Gate" in page and run.id in page


def items(run: Run, name: str) -> list[dict]:
    path = run.eval_dir / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_dpo_run_is_evaluated_on_its_pairs_gated_and_reported(tmp_path, tiny_model_dir):
    from tuneloop.evaluate.preference import load_preference

    rows = [
        {
            "prompt": f"item {i} about {TOPICS[i % 3]} things",
            "chosen": TOPICS[i % 3],
            "rejected": TOPICS[(i + 1) % 3],
        }
        for i in range(30)
    ]
    run = train_tiny(tmp_path, tiny_model_dir, "dpo", rows, dpo={"beta": 0.5})
    heldout = [json.loads(line) for line in (run.path / "data" / "heldout.jsonl").open()]
    assert heldout and {"prompt", "chosen", "rejected"} <= set(heldout[0])  # pairs, not chats
    assert load_preference(run) is None

    eval_gate_report(run)

    # Each held-out pair's prompt is asked; its chosen answer is the reference, in every rung.
    for rung in ("zero-shot", "few-shot", "retrieval-few-shot", "tuned"):
        scored = items(run, f"{rung}.jsonl")
        assert [i["prompt"] for i in scored] == [p["prompt"][-1]["content"] for p in heldout]
        assert [i["reference"] for i in scored] == [p["chosen"] for p in heldout]
    summary = json.loads((run.eval_dir / "tuned.json").read_text())
    assert summary["n"] == len(heldout) and summary["metric"] == "exact_match"

    pref = load_preference(run)
    assert pref == json.loads((run.eval_dir / "preference.json").read_text())
    assert list(pref) == ["n", "beta", "reward_accuracy", "reward_accuracy_ci", "margin_mean",
                          "margin_ci", "base_margin_mean"]  # fmt: skip
    assert pref["n"] == len(heldout) and pref["beta"] == 0.5
    low, high = pref["reward_accuracy_ci"]
    assert 0 <= low <= pref["reward_accuracy"] <= high <= 1
    low, high = pref["margin_ci"]
    assert low <= pref["margin_mean"] <= high and low < high
    assert isinstance(pref["base_margin_mean"], float)
    lines = items(run, "preference.jsonl")
    assert len(lines) == len(heldout)
    for line in lines:
        assert set(line) == {"prompt", "chosen_reward", "rejected_reward", "margin", "correct"}
        assert line["margin"] == pytest.approx(line["chosen_reward"] - line["rejected_reward"])
        assert line["correct"] == (line["margin"] > 0)
    assert pref["reward_accuracy"] == pytest.approx(
        sum(line["correct"] for line in lines) / len(lines)
    )
    assert pref["margin_mean"] == pytest.approx(sum(line["margin"] for line in lines) / len(lines))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_dpo_reference_is_the_base_model(tmp_path, tiny_model_dir, method):
    """Rewards by hand: beta * (log pi - log pi_ref), pi_ref the base model loaded alone; the
    evaluation gets it by switching the adapter off, or for full fine-tuning from the base."""
    import torch

    from tuneloop.config import load_recipe
    from tuneloop.evaluate.preference import evaluate_run_preferences, heldout_pairs
    from tuneloop.evaluate.run import load_tuned
    from tuneloop.models.load import load
    from tuneloop.train.dpo import answer_logps

    rows = [{"prompt": f"item {i} about {TOPICS[i % 3]}", "chosen": TOPICS[i % 3],
             "rejected": TOPICS[(i + 2) % 3]} for i in range(20)]  # fmt: skip
    lr = 0.05 if method == "lora" else 1e-3
    run = train_tiny(tmp_path, tiny_model_dir, "dpo", rows, method=method, lr=lr)
    recipe = load_recipe(run.recipe_path)
    pairs = heldout_pairs(run, recipe)
    base, tokenizer, _ = load(str(tiny_model_dir))
    base_logps = answer_logps(base, tokenizer, pairs)
    tuned = load_tuned(run, recipe, base, "fp32", torch.device("cpu"))
    tuned_logps = answer_logps(tuned, tokenizer, pairs)
    assert not torch.allclose(tuned_logps, base_logps, atol=1e-4)  # training moved it

    summary = evaluate_run_preferences(run, recipe, tuned, base, tokenizer, "fp32")
    beta = recipe.train.dpo.beta
    want = beta * (tuned_logps - base_logps)
    lines = items(run, "preference.jsonl")
    got = torch.tensor([[i["chosen_reward"], i["rejected_reward"]] for i in lines])
    assert torch.allclose(got, want, atol=1e-5)
    base_margin = float((beta * (base_logps[:, 0] - base_logps[:, 1])).mean())
    assert summary["base_margin_mean"] == pytest.approx(base_margin, abs=1e-5)


def test_a_distillation_run_is_evaluated_gated_and_reported(tmp_path, tiny_model_dir):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"item {i} about {TOPICS[i % 3]} things"},
                {"role": "assistant", "content": TOPICS[i % 3]},
            ]
        }
        for i in range(30)
    ]
    teacher = {"teacher": str(tiny_model_dir), "alpha": 0.5}
    run = train_tiny(tmp_path, tiny_model_dir, "distill", rows, distill=teacher)
    heldout = [json.loads(line) for line in (run.path / "data" / "heldout.jsonl").open()]

    eval_gate_report(run)

    scored = items(run, "tuned.jsonl")
    assert [i["reference"] for i in scored] == [r["messages"][-1]["content"] for r in heldout]
    assert not (run.eval_dir / "preference.json").exists()  # only DPO runs rank pairs


def test_a_grpo_run_is_evaluated_with_its_grader_gated_and_reported(tmp_path, tiny_model_dir):
    """The grader GRPO trained on (`task.metric`) is the column the evaluation and the gate
    decide on, paired item by item like any metric."""
    from tuneloop.config import GraderConfig

    rows = [
        {"messages": [{"role": "user", "content": f"item {i} about {TOPICS[i % 3]} things"},
                      {"role": "assistant", "content": TOPICS[i % 3]}]}
        for i in range(30)
    ]  # fmt: skip
    grader = {"weighted": [{"metric": "exact_match", "weight": 3},
                           {"regex": "[aeiou]", "weight": 1}], "name": "graded"}  # fmt: skip
    run = train_tiny(tmp_path, tiny_model_dir, "grpo", rows, grpo={"group_size": 2,
                     "max_completion_tokens": 3}, task={"metric": grader})  # fmt: skip
    assert run.info()["objective"] == "grpo"

    eval_gate_report(run)

    summary = json.loads((run.eval_dir / "tuned.json").read_text())
    assert summary["metric"] == "graded" and "graded" in summary["ci"]
    assert GraderConfig.model_validate(grader).column == "graded"
    for item in items(run, "tuned.jsonl"):
        assert 0.0 <= item["scores"]["graded"] <= 1.0
        assert item["scores"]["graded"] == pytest.approx(
            (3 * item["scores"]["exact_match"] + any(c in item["prediction"] for c in "aeiou")) / 4
        )
    gate = json.loads((run.path / "gate.json").read_text())
    assert "graded" in json.dumps(next(c for c in gate["conditions"] if c["name"] == "task"))


def test_a_reward_run_is_gated_on_its_ranking_and_says_the_probes_do_not_apply(
    tmp_path, tiny_model_dir
):
    """A reward model writes no answers: its gate is its held-out pair accuracy against the base
    model's ranking and above chance; the probes are named as not tested, in the output, in
    gate.json and in the report."""
    rows = [
        {"prompt": f"please help with message {i} about my plan",
         "chosen": "cancel_subscription", "rejected": "refund_request please go away"}
        for i in range(40)
    ]  # fmt: skip
    run = train_tiny(tmp_path, tiny_model_dir, "reward", rows, max_steps=12)
    ws = str(run.path.parents[1])
    code, out, err = tuneloop("gate", run.id, "--workspace", ws, "--quiet")
    assert code in (0, 1), out + err
    gate = json.loads((run.path / "gate.json").read_text())
    names = [c["name"] for c in gate["conditions"]]
    assert names == ["task", "chance"]
    assert gate["metric"] == "pair_accuracy" and gate["conditions"][0]["numbers"]["best_rung"] == (
        "zero-shot"
    )
    assert "not applicable" in gate["notes"][0] and "not tested:" in out
    assert gate["passed"] == (code == 0) == all(c["passed"] for c in gate["conditions"])
    assert not (run.eval_dir / "probes").exists()  # nothing was asked to answer probes
    code, out, err = tuneloop("report", run.id, "--workspace", ws)
    assert code == 0, out + err
    assert "not applicable" in (run.path / "report.html").read_text()
