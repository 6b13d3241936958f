"""Exports of a tiny run round-trip: merged logits within 1e-4, GGUF read back by transformers
with the adapter model's greedy answers, an Ollama template equal to the Jinja one, and a vLLM
check that refuses with reasons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import train_tiny_run
from tuneloop.errors import UserError
from tuneloop.evaluate.generate import generate
from tuneloop.export.gguf import load_gguf, permute_qk, write_gguf
from tuneloop.export.ollama import chat_format, modelfile
from tuneloop.export.run import export
from tuneloop.export.vllm import check_vllm

SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
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
    assert back_tokenizer.chat_template == tokenizer.chat_template
    want = generate(model, tokenizer, CHATS, max_new_tokens=8, precision="fp32")
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
