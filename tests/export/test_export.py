"""Exports of a tiny run round-trip: merged logits within 1e-4, GGUF read back by transformers
with the adapter model's greedy answers, an Ollama template equal to the Jinja one, and a vLLM
check that refuses with reasons."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import train_tiny_run
from tuneloop.data.templates import with_instruction
from tuneloop.errors import UserError
from tuneloop.export.gguf import load_gguf, permute_qk, write_gguf
from tuneloop.export.ollama import chat_format, modelfile
from tuneloop.export.run import export
from tuneloop.export.vllm import check_vllm
from tuneloop.models.generate import generate

SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
INSTRUCTION = "Name the topic of the item."  # the tiny run's task.instruction
CHATS = [
    [{"role": "user", "content": "item 3 about alpha things"}],
    [{"role": "user", "content": "Where is my order 12?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I forgot my password"},
    ],
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("export-run")
    # An MLP weight (down_proj) adapted beside attention ones, and trained longer than the
    # serve tests' run: the merge and GGUF checks then meet an adapter that clearly moves.
    targets = ["q_proj", "v_proj", "down_proj"]
    return train_tiny_run(folder, tiny_model_dir, steps=16, lr=0.02, target_modules=targets)


@pytest.fixture(scope="module")
def exported(run):
    return export(run.path, merge=True, quants=("f16", "q8_0"), ollama=True, vllm=True)


def adapter_model(run, tiny_model_dir):
    from tuneloop.models.adapters import load_adapter
    from tuneloop.models.load import load

    model, tokenizer, _ = load(str(tiny_model_dir))
    return load_adapter(model, run.adapter_dir).eval(), tokenizer


def test_every_export_passes_its_checks(exported, run):
    assert exported.ok, [c for c in exported.checks if not c.passed]
    assert [c.name for c in exported.checks] == ["vllm", "merge", "gguf-f16", "gguf-q8_0", "ollama"]
    record = json.loads((run.path / "export" / "export.json").read_text())
    assert record["ok"] and set(record["files"]) == {
        "vllm",
        "merged",
        "gguf-f16",
        "gguf-q8_0",
        "ollama",
    }
    merge = next(c for c in exported.checks if c.name == "merge")
    assert merge.numbers["max_logit_diff_on_disk"] <= 1e-4
    f16 = next(c for c in exported.checks if c.name == "gguf-f16")
    assert f16.numbers["agree"] == f16.numbers["probes"] == 6  # the run's six held-out items
    ollama = next(c for c in exported.checks if c.name == "ollama")
    assert any(c.startswith("FROM ./model-f16.gguf is the GGUF") for c in ollama.numbers["checked"])
    assert "not checked: Ollama itself" in ollama.detail  # no binary here: said, not passed over


def test_merged_weights_give_the_adapter_models_logits(exported, run, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model, tokenizer = adapter_model(run, tiny_model_dir)
    merged = AutoModelForCausalLM.from_pretrained(exported.files["merged"], dtype=torch.float32)
    ids = torch.tensor([tokenizer("Where is my order? item 7 about beta")["input_ids"]])
    with torch.no_grad():
        want, got = model(input_ids=ids).logits, merged(input_ids=ids).logits
        base = model.get_base_model()
        with model.disable_adapter():
            plain = base(input_ids=ids).logits
    assert (want - got).abs().max() <= 1e-4
    assert (want - plain).abs().max() > 1e-3  # the adapter does change the logits
    assert (Path(exported.files["merged"]) / "chat_template.jinja").is_file()


def test_gguf_f16_greedy_answers_equal_the_adapter_models(exported, run, tiny_model_dir):
    model, tokenizer = adapter_model(run, tiny_model_dir)
    back, back_tokenizer = load_gguf(exported.files["gguf-f16"])
    assert back_tokenizer.chat_template.endswith(tokenizer.chat_template)  # plus the instruction
    # The adapter model is told the instruction, as eval tells it; the GGUF's template tells it.
    told = [with_instruction(chat, INSTRUCTION) for chat in CHATS]
    want = generate(model, tokenizer, told, max_new_tokens=8, precision="fp32")
    assert generate(back, back_tokenizer, CHATS, max_new_tokens=8, precision="fp32") == want
    q8, q8_tokenizer = load_gguf(exported.files["gguf-q8_0"])  # loads and answers
    assert len(generate(q8, q8_tokenizer, CHATS, max_new_tokens=4, precision="fp32")) == 3
    assert (
        Path(exported.files["gguf-q8_0"]).stat().st_size
        < Path(exported.files["gguf-f16"]).stat().st_size
    )


def test_gguf_rows_of_q_and_k_are_interleaved_per_head(tiny_tokenizer, tiny_model, tmp_path):
    rows = np.arange(8, dtype=np.float32)[:, None]  # two heads of four rows
    assert permute_qk(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    write_gguf(tiny_model, tiny_tokenizer, tmp_path / "base.gguf", "f16")
    back, _ = load_gguf(tmp_path / "base.gguf")
    ids = torch.tensor([tiny_tokenizer("I forgot my password")["input_ids"]])
    with torch.no_grad():
        diff = (tiny_model(input_ids=ids).logits - back(input_ids=ids).logits).abs().max()
    assert diff < 0.05  # float16 rounding only; a wrong row order moves logits by whole units


def test_the_modelfile_renders_like_the_training_template(exported, tiny_tokenizer):
    text = Path(exported.files["ollama"]).read_text()
    assert text.startswith("FROM ./model-f16.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0" in text
    assert 'SYSTEM """Name the topic of the item."""' in text
    tokenizer = tiny_tokenizer.__class__.from_pretrained(Path(exported.files["merged"]))
    tokenizer.chat_template = SMOLLM_TEMPLATE  # a template with a default system message
    fmt = chat_format(tokenizer, CHATS)
    for chat in CHATS:
        want = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert fmt.render(chat) == want
    go = modelfile("m.gguf", fmt, ["<|im_end|>"], None)
    assert '{{ if and (eq $i 0) (ne $m.Role "system") }}<|im_start|>system\nYou are' in go


def test_a_template_that_does_not_reduce_is_refused(tiny_tokenizer):
    saved = tiny_tokenizer.chat_template
    try:  # content changed by the template itself cannot be literal text around it
        tiny_tokenizer.chat_template = (
            "{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}\n{% endfor %}"
        )
        with pytest.raises(UserError, match="cannot be written as an Ollama TEMPLATE"):
            chat_format(tiny_tokenizer)
    finally:
        tiny_tokenizer.chat_template = saved


def test_vllm_refuses_what_it_would_reject_with_reasons(run, tmp_path, tiny_tokenizer):
    from peft import IA3Config, LoraConfig, get_peft_model

    from conftest import build_tiny_model

    def variant(name: str, **config) -> Path:
        folder = tmp_path / name
        shutil.copytree(run.adapter_dir, folder)
        path = folder / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
        return folder

    assert check_vllm(run.adapter_dir, "llama").ok
    assert check_vllm(run.adapter_dir, "llama").max_lora_rank == 8  # rank 4 -> smallest option
    cases = {
        "vLLM does not support DoRA": variant("dora", use_dora=True),
        "exceeds vLLM's largest --max-lora-rank": variant("big", r=512),
        "fully trained modules": variant("saved", modules_to_save=["lm_head"]),
        "trained LoRA biases": variant("bias", bias="all"),
        "vLLM puts no LoRA on ['rotary_emb']": variant("odd", target_modules=["rotary_emb"]),
    }
    for reason, folder in cases.items():
        problems = check_vllm(folder, "llama").problems
        assert any(reason in p.what for p in problems), (reason, problems)
        assert all(p.fix for p in problems)
    ia3 = get_peft_model(
        build_tiny_model(len(tiny_tokenizer)),
        IA3Config(target_modules=["v_proj", "down_proj"], feedforward_modules=["down_proj"]),
    )
    ia3.save_pretrained(tmp_path / "ia3")
    assert "LoRA adapters only; this is IA3" in check_vllm(tmp_path / "ia3").problems[0].what
    embeddings = get_peft_model(
        build_tiny_model(len(tiny_tokenizer)),
        LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]),
    )
    embeddings.save_pretrained(tmp_path / "embeddings")
    assert not check_vllm(tmp_path / "embeddings", "llama").ok

    # through export: everything refused at once, with the reasons, and nothing written
    both = variant("both", use_dora=True, r=300)
    with pytest.raises(UserError) as err:
        export(both, out=tmp_path / "out", vllm=True)
    whats = [p.what for p in err.value.problems]
    assert len(whats) == 2 and "DoRA" in whats[0] and "rank 300" in whats[1]
    assert not (tmp_path / "out").exists()


def test_the_export_command(run, tmp_path):
    from tuneloop.cli.main import app

    out = CliRunner().invoke(app, ["export", str(run.path), "--vllm", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "ok    vllm" in out.output and "vllm serve" in out.output
    assert (tmp_path / "vllm" / "serve.sh").read_text().count("--enable-lora --lora-modules") == 1
    nothing = CliRunner().invoke(app, ["export", str(run.path)])
    assert nothing.exit_code == 2 and "nothing to export" in nothing.output


def test_exports_carry_the_task_instruction(exported, run):
    """A user of llama.cpp, vLLM or transformers sends only the chat; the exported template
    adds the instruction the run was trained and evaluated with."""
    from transformers import AutoTokenizer

    training = AutoTokenizer.from_pretrained(run.adapter_dir)
    user = [{"role": "user", "content": "item 7 about beta things"}]
    told = [{"role": "system", "content": INSTRUCTION}, *user]
    want = training.apply_chat_template(told, tokenize=False, add_generation_prompt=True)
    merged = AutoTokenizer.from_pretrained(exported.files["merged"])
    _, from_gguf = load_gguf(exported.files["gguf-f16"])
    vllm_dir = Path(exported.files["vllm"]).parent
    vllm_template = (vllm_dir / "chat_template.jinja").read_text()
    for tok, template in ((merged, None), (from_gguf, None), (training, vllm_template)):
        got = tok.apply_chat_template(
            user, chat_template=template, tokenize=False, add_generation_prompt=True
        )
        assert got == want
    assert INSTRUCTION in (vllm_dir / "serve.sh").read_text()
    f16 = next(c for c in exported.checks if c.name == "gguf-f16")
    assert f16.numbers["same_ids"] == f16.numbers["agree"] == 6  # asked without the instruction


def test_serve_sh_names_its_base_portably(exported, run, tiny_model_dir, tmp_path):
    """No machine path in serve.sh: it finds the adapter beside itself and the base relative to
    itself, from any working directory and after the export folder moves with the base."""
    script = Path(exported.files["vllm"]).parent / "serve.sh"
    text = script.read_text()
    assert str(tiny_model_dir) not in text and str(run.path) not in text
    fake = tmp_path / "bin" / "vllm"  # prints the arguments it was given, one per line
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    out = subprocess.run(["sh", str(script)], env=env, cwd="/", capture_output=True, text=True)
    args = out.stdout.splitlines()
    assert args[0] == "serve" and Path(args[1]).resolve() == tiny_model_dir.resolve()
    name, _, adapter = args[args.index("--lora-modules") + 1].partition("=")
    assert (Path(adapter) / "adapter_config.json").is_file()
    assert Path(args[args.index("--chat-template") + 1]).is_file()
    override = subprocess.run(
        ["sh", str(script)], env={**env, "VLLM_BASE": "org/model"}, capture_output=True, text=True
    )
    assert override.stdout.splitlines()[1] == "org/model"


def copied_run(run, tmp_path: Path, heldout_rows: int | None) -> Path:
    """The run's adapter in a run-like folder with `heldout_rows` held-out items (None: none,
    and the recipe's held-out file points nowhere)."""
    folder = tmp_path / "run"
    shutil.copytree(run.adapter_dir, folder / "adapter")
    meta_path = folder / "adapter" / "tuneloop.json"
    meta = json.loads(meta_path.read_text())
    if heldout_rows is None:
        meta["recipe"]["data"]["heldout"] = str(tmp_path / "missing.jsonl")
    else:
        rows = [
            {"messages": [{"role": "user", "content": f"item {i} about gamma things"},
                          {"role": "assistant", "content": "gamma"}]}
            for i in range(heldout_rows)
        ]  # fmt: skip
        (folder / "data").mkdir()
        (folder / "data" / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta_path.write_text(json.dumps(meta))
    return folder / "adapter"


def test_exports_are_checked_on_every_held_out_item_or_say_they_are_not(run, tmp_path):
    said = []
    many = export(copied_run(run, tmp_path / "a", 20), merge=True, say=said.append)
    merge = next(c for c in many.checks if c.name == "merge")
    assert merge.numbers["probes"] == 20  # all of them, not the first 16
    assert "probes: 20 held-out prompts from" in "\n".join(said)

    said.clear()
    none = export(copied_run(run, tmp_path / "b", None), merge=True, say=said.append)
    merge = next(c for c in none.checks if c.name == "merge")
    assert merge.numbers["probes_from"].startswith("GENERIC prompts: this run has no held-out")
    assert any("no held-out prompts" in s for s in said)


@pytest.fixture()
def no_weights(monkeypatch):
    """Loading weights fails the test: refusals must come before it."""

    def refuse(*_a, **_k):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr("tuneloop.models.load.load_model", refuse)


def test_an_unwritable_out_is_refused_before_any_weight_loads(run, tmp_path, no_weights):
    from tuneloop.cli.main import app

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "export"
    with pytest.raises(UserError) as err:
        export(run.path, out=out, merge=True, vllm=True)
    problem = err.value.problems[0]
    assert problem.where == "--out" and str(out) in problem.what and "--out" in problem.fix
    cli = CliRunner().invoke(app, ["export", str(run.path), "--merge", "--out", str(out)])
    assert cli.exit_code == 2 and "cannot write the export" in cli.output


def test_a_prompt_tuning_run_gets_one_honest_answer(tiny_model_dir, tiny_tokenizer, tmp_path,
                                                    no_weights):  # fmt: skip
    from peft import PromptTuningConfig, get_peft_model

    from conftest import build_tiny_model

    folder = tmp_path / "prompt"
    model = get_peft_model(
        build_tiny_model(len(tiny_tokenizer)),
        PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    )
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    meta = {"base_model": str(tiny_model_dir), "recipe": {"train": {"method": "prompt"}}}
    (folder / "tuneloop.json").write_text(json.dumps(meta))
    for kinds in ({"merge": True}, {"quants": ("f16",)}, {"vllm": True}):
        with pytest.raises(UserError) as err:
            export(folder, out=tmp_path / "out", **kinds)
        problem = err.value.problems[0]
        assert "PROMPT_TUNING adapter" in problem.what and "nothing to merge" in problem.what
        assert "tuneloop serve NAME=" in problem.fix  # which serves it
    assert not (tmp_path / "out").exists()
