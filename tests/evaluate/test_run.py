"""Rungs on the tiny in-memory model: files written, prompts built per rung, generation batched."""

import json

import pytest
import yaml

from conftest import count_generate_calls
from tuneloop.config import Recipe
from tuneloop.evaluate import run as run_mod
from tuneloop.evaluate.ladder import LADDER
from tuneloop.evaluate.probes import load_suite
from tuneloop.models import generate as generate_mod
from tuneloop.models.generate import generate
from tuneloop.workspace import Run

LABELS = ["alpha", "beta", "gamma"]


def chat(i: int) -> dict:
    label = LABELS[i % 3]
    return {
        "messages": [
            {"role": "user", "content": f"item {i} about {label} things"},
            {"role": "assistant", "content": label},
        ],
        "meta": {"label": label, "shard": f"s{i % 2}"},
    }


@pytest.fixture()
def ladder_run(tmp_path, tiny_model_dir) -> Run:
    run = Run(tmp_path / "runs" / "r1")
    (run.path / "data").mkdir(parents=True)
    rows = [chat(i) for i in range(30)]
    (run.path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (run.path / "data" / "heldout.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[24:])
    )
    recipe = {
        "name": "r1",
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(run.path / "data" / "train.jsonl")},
        "task": {"instruction": "Classify."},
        "eval": {"max_new_tokens": 3, "few_shot_k": 3, "retrieval_k": 2, "slices": ["shard"]},
    }
    run.recipe_path.write_text(yaml.safe_dump(recipe))
    run.info_path.write_text(json.dumps({"id": "r1", "status": "finished"}))
    return run


def test_ladder_rungs_write_per_item_results_with_intervals_and_slices(ladder_run):
    results = run_mod.evaluate_run(ladder_run, LADDER, progress=False)
    assert set(results) == set(LADDER)
    for rung in LADDER:
        summary = json.loads((ladder_run.eval_dir / f"{rung}.json").read_text())
        items = run_mod.load_items(ladder_run.eval_dir / f"{rung}.jsonl")
        assert summary["n"] == len(items) == 6
        assert summary["metric"] == "exact_match"
        ci = summary["ci"]["exact_match"]
        assert ci["method"] == "wilson" and ci["low"] <= summary["exact_match"] <= ci["high"]
        assert set(summary["slices"]["shard"]) == {"s0", "s1"}
        assert "confusion" in summary and "distinct_2" in summary
        assert all(set(i["scores"]) == {"exact_match"} for i in items)
    tokens = {r: results[r]["prompt_tokens_mean"] for r in LADDER}
    assert tokens["zero-shot"] < tokens["retrieval-few-shot"] < tokens["few-shot"]


def test_every_rung_and_the_probes_generate_in_one_batched_call(monkeypatch, tiny_tokenizer):
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, precision, progress,
                      usage=None, tools=None, constraint=None):  # fmt: skip
        calls.append((len(prompts), batch_size))
        if usage is not None:
            usage[:] = [{} for _ in prompts]
        return ["alpha"] * len(prompts)

    monkeypatch.setattr(run_mod, "generate", fake_generate)
    monkeypatch.setattr(generate_mod, "generate", fake_generate)  # what the probe suites call
    tok = tiny_tokenizer
    recipe = Recipe.model_validate({"data": {"train": "x"}, "eval": {"batch_size": 32}})
    examples = [run_mod.Example(**{k: v for k, v in chat(i).items()}) for i in range(50)]
    run_mod.evaluate_rung(None, tok, "zero-shot", examples, recipe, "fp32", False)
    run_mod.evaluate_probes(None, tok, "base", recipe, "fp32", False)
    n_probes = len(load_suite("general")) + len(load_suite("safety"))
    assert calls == [(50, 32), (n_probes, 32)]


def test_generate_runs_one_model_call_per_batch(tiny_model, tiny_tokenizer):
    seen = count_generate_calls(tiny_model)
    prompts = [[{"role": "user", "content": f"item {i}"}] for i in range(20)]
    answers = generate(tiny_model, tiny_tokenizer, prompts, max_new_tokens=2, batch_size=8)
    assert len(answers) == 20 and seen == [8, 8, 4]


def test_task_kind_and_scores_for_json_and_text():
    recipe = Recipe.model_validate(
        {"data": {"train": "x"}, "task": {"json_schema": {"type": "object", "required": ["a"]}}}
    )
    summary, items = run_mod.score("json", ['{"a": 1}', "nope"], ['{"a": 1}', '{"a": 2}'], recipe)
    assert items[0] == {
        "exact_match": 1.0,
        "json_valid": 1.0,
        "json_exact": 1.0,
        "json_fields": 1.0,
        "json_field_f1": 1.0,
        "json_schema": 1.0,
    }
    assert summary["json_schema"] == 0.5
    summary, items = run_mod.score("text", ["the cat sat"], ["the cat sat down"])
    assert set(items[0]) == {"exact_match", "contains", "token_f1", "rouge_l", "chrf"}
    assert items[0]["contains"] == 0.0 and items[0]["token_f1"] == 0.8
    assert "bleu" in summary and summary["rouge_l"] == pytest.approx(0.8571, abs=1e-4)


def test_a_task_metric_that_is_not_per_item_names_the_field(monkeypatch, tiny_tokenizer):
    from tuneloop.errors import UserError

    monkeypatch.setattr(run_mod, "generate", lambda *a, **k: ["alpha"] * len(a[2]))
    recipe = Recipe.model_validate({"data": {"train": "x"}, "task": {"metric": "macro_f1"}})
    examples = [run_mod.Example(**chat(i)) for i in range(3)]
    with pytest.raises(UserError) as err:
        run_mod.evaluate_rung(None, tiny_tokenizer, "zero-shot", examples, recipe, "fp32", False)
    assert err.value.problems[0].where == "task.metric"
    assert "exact_match" in err.value.problems[0].fix


@pytest.mark.parametrize("method", ["full", "qlora"])
def test_tuned_rung_evaluates_full_weights_and_qlora_adapters(ladder_run, tiny_model_dir,
                                                              tiny_tokenizer, method):  # fmt: skip
    """The tuned rung loads what the method saved: `model/` for full fine-tuning, the adapter
    on a 4-bit base for QLoRA; its answers are the trained model's own."""
    import torch

    from tuneloop.config import TrainConfig
    from tuneloop.models.adapters import apply_method, load_base, output_folder, save_trained
    from tuneloop.models.load import ModelSource

    recipe = yaml.safe_load(ladder_run.recipe_path.read_text())
    recipe["train"] = {"method": method, "precision": "fp32"}
    ladder_run.recipe_path.write_text(yaml.safe_dump(recipe))
    cfg = TrainConfig(method=method)
    torch.manual_seed(1)
    model = apply_method(load_base(ModelSource("tiny", tiny_model_dir, "folder"), cfg, "fp32"), cfg)
    with torch.no_grad():  # "training": move every trainable weight
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    save_trained(model, tiny_tokenizer, ladder_run.path / output_folder(method))

    results = run_mod.evaluate_run(ladder_run, rungs=("tuned",), progress=False)
    examples = run_mod.heldout_examples(ladder_run, Recipe.model_validate(recipe))
    want = generate(model, tiny_tokenizer, [ex.prompt_messages for ex in examples],
                    max_new_tokens=3)  # fmt: skip
    items = run_mod.load_items(ladder_run.eval_dir / "tuned.jsonl")
    assert results["tuned"]["n"] == len(examples)
    assert [i["prediction"] for i in items] == want


def test_tuned_rung_of_an_unfinished_run_is_refused(ladder_run):
    with pytest.raises(run_mod.UserError, match="no finished adapter/"):
        run_mod.evaluate_run(ladder_run, rungs=("tuned",), progress=False)


@pytest.mark.parametrize("saved", [True, False])
def test_a_dpo_runs_items_are_its_pairs_prompts_with_the_chosen_answer(tmp_path, saved):
    """From the split the run saved, or from the recipe's files when it saved none."""
    from tuneloop.data.preference import PreferencePair, write_preferences

    def pairs(start: int) -> list[PreferencePair]:
        return [
            PreferencePair([{"role": "user", "content": f"item {i}"}], LABELS[i % 3],
                           LABELS[(i + 1) % 3], {"label": LABELS[i % 3]}, f"p:{i}")
            for i in range(start, start + 4)
        ]  # fmt: skip

    run = Run(tmp_path / "runs" / "r1")
    (run.path / "data").mkdir(parents=True)
    folder = run.path / "data" if saved else tmp_path
    write_preferences(folder / "train.jsonl", pairs(0))
    write_preferences(folder / "heldout.jsonl", pairs(10))
    recipe = Recipe.model_validate({
        "data": {"train": str(tmp_path / "train.jsonl"),
                 "heldout": None if saved else str(tmp_path / "heldout.jsonl")},
        "train": {"objective": "dpo"},
        "task": {"instruction": "Classify."},
        "eval": {"max_items": 3},
    })  # fmt: skip
    heldout = run_mod.heldout_examples(run, recipe)
    assert [ex.prompt_messages for ex in heldout] == [
        [{"role": "system", "content": "Classify."}, {"role": "user", "content": f"item {i}"}]
        for i in (10, 11, 12)
    ]
    assert [ex.reference for ex in heldout] == [LABELS[i % 3] for i in (10, 11, 12)]
    assert heldout[0].label == LABELS[10 % 3]
    train = run_mod.train_examples(run, recipe)
    assert [ex.reference for ex in train] == [LABELS[i % 3] for i in range(4)]


def test_the_constrained_rung_holds_answers_to_the_task_schema(tiny_tokenizer, tiny_model):
    """A JSON task gets the `constrained` rung: zero-shot, every answer valid under
    task.json_schema by grammar-constrained decoding (the random tiny model writes no JSON by
    itself)."""
    schema = {"type": "object", "properties": {"topic": {"enum": ["alpha", "beta"]}},
              "required": ["topic"], "additionalProperties": False}  # fmt: skip
    recipe = Recipe.model_validate({
        "data": {"train": "x"},
        "task": {"kind": "json", "json_schema": schema},
        "eval": {"max_new_tokens": 24, "batch_size": 4},
    })  # fmt: skip
    assert "constrained" in recipe.rung_names()
    examples = [
        run_mod.Example([{"role": "user", "content": f"message number {i}"},
                         {"role": "assistant", "content": '{"topic": "alpha"}'}])
        for i in range(6)
    ]  # fmt: skip
    free = run_mod.evaluate_rung(tiny_model, tiny_tokenizer, "zero-shot", examples, recipe,
                                 "fp32", False)  # fmt: skip
    held = run_mod.evaluate_rung(tiny_model, tiny_tokenizer, "constrained", examples, recipe,
                                 "fp32", False)  # fmt: skip
    assert free.summary["json_schema"] == 0.0
    assert held.summary["json_valid"] == 1.0 and held.summary["json_schema"] == 1.0
    assert held.summary["prompting"] == "constrained"
