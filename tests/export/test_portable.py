"""Exported folders read alike by transformers 4.5x and 5.x, templates that carry the task
instruction, and a Modelfile check that checks (fast: no training)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from conftest import CHATML
from tuneloop.export.merge import save_merged
from tuneloop.export.ollama import chat_format, check_modelfile, modelfile, parse_modelfile
from tuneloop.export.portable import portable_config, with_instruction_template

INSTRUCTION = 'Name the topic: "alpha", {beta} or gamma.\nOne word.'


def test_merged_config_and_tokenizer_carry_both_conventions(tiny_model, tiny_tokenizer, tmp_path):
    """transformers 4.5x reads `rope_theta`/`rope_scaling` and needs a tokenizer class it has;
    5.x writes only `rope_parameters` and `TokenizersBackend`. Both must be in the folder, and
    5.x must read it back unchanged (4.57 is checked by bench/export/transformers457.py)."""
    from transformers import AutoConfig, AutoTokenizer

    tiny_model.config.rope_parameters = {"rope_theta": 100000.0, "rope_type": "default"}
    folder = save_merged(tiny_model, tiny_tokenizer, tmp_path / "merged")
    config = json.loads((folder / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0
    assert "rope_scaling" in config and config["rope_scaling"] is None  # 4.x: no scaling
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # 4.x knows it

    back = AutoConfig.from_pretrained(folder)
    assert back.rope_parameters == {"rope_theta": 100000.0, "rope_type": "default"}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    chat = [{"role": "user", "content": "Where is my order 12?"}]
    assert tokenizer.apply_chat_template(chat) == tiny_tokenizer.apply_chat_template(chat)
    assert len(tokenizer) == len(tiny_tokenizer)


def test_scaled_rope_is_written_the_4x_way_too():
    scaled = {"rope_parameters": {"rope_theta": 5e5, "rope_type": "linear", "factor": 2.0}}
    out = portable_config(scaled)
    assert out["rope_theta"] == 5e5
    assert out["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    assert out["rope_parameters"] == scaled["rope_parameters"]


def test_the_instruction_template_adds_the_instruction_only_when_a_chat_has_no_system(
    tiny_tokenizer,
):
    def render(template, chat):
        return tiny_tokenizer.apply_chat_template(
            chat, chat_template=template, tokenize=False, add_generation_prompt=True
        )

    template = with_instruction_template(CHATML, INSTRUCTION)
    user = [{"role": "user", "content": "item 3 about alpha things"}]
    with_system = [{"role": "system", "content": INSTRUCTION}, *user]
    assert render(template, user) == render(CHATML, with_system)
    own = [{"role": "system", "content": "Be brief."}, *user]
    assert render(template, own) == render(CHATML, own)
    assert with_instruction_template(CHATML, None) == CHATML


def written_modelfile(tmp_path: Path, tiny_tokenizer, system=INSTRUCTION) -> tuple:
    fmt = chat_format(tiny_tokenizer)
    (tmp_path / "model-f16.gguf").write_bytes(b"GGUF")
    path = tmp_path / "Modelfile"
    path.write_text(modelfile("model-f16.gguf", fmt, ["<|im_end|>"], system))
    return path, fmt


def test_the_modelfile_is_read_back_and_checked(tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ollama binary
    path, fmt = written_modelfile(tmp_path, tiny_tokenizer)
    commands = parse_modelfile(path.read_text())
    assert commands[0] == ("from", "./model-f16.gguf")
    assert ("template", fmt.go_template()) in commands and ("system", INSTRUCTION) in commands

    gguf = tmp_path / "model-f16.gguf"
    check = check_modelfile(path, gguf, fmt, INSTRUCTION, ["<|im_end|>"], "run")
    assert check.ok, check.problems
    assert any("FROM ./model-f16.gguf is the GGUF" in c for c in check.checked)
    assert any("no `ollama` binary" in n for n in check.not_checked)

    # each thing it checks, broken on purpose
    wrong = check_modelfile(path, gguf, fmt, "another instruction", ["<|im_end|>"], "run")
    assert any("SYSTEM" in p for p in wrong.problems)
    gguf.unlink()
    gone = check_modelfile(path, gguf, fmt, INSTRUCTION, ["<|im_end|>"], "run")
    assert any("not the written GGUF" in p for p in gone.problems)
    gguf.write_bytes(b"GGUF")
    path.write_text(path.read_text().replace("temperature 0", "temperature cold"))
    bad = check_modelfile(path, gguf, fmt, INSTRUCTION, ["<|im_end|>"], "run")
    assert any("temperature 'cold' is not a float" in p for p in bad.problems)
    path.write_text(path.read_text().replace("PARAMETER temperature cold", "PARAMETR x 1"))
    assert "does not parse" in check_modelfile(path, gguf, fmt, None, [], "run").problems[0]


def test_an_installed_ollama_builds_the_modelfile(tiny_tokenizer, tmp_path):
    path, fmt = written_modelfile(tmp_path, tiny_tokenizer)
    calls = tmp_path / "calls"
    fake = tmp_path / "ollama"  # answers `show` with what the Modelfile holds
    template_file, system_file = tmp_path / "t.txt", tmp_path / "s.txt"
    template_file.write_text(fmt.go_template())
    system_file.write_text(INSTRUCTION)
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        f'[ "$3" = --template ] && cat {template_file}\n'
        f'[ "$3" = --system ] && cat {system_file}\n'
        "exit 0\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    gguf = tmp_path / "model-f16.gguf"
    check = check_modelfile(path, gguf, fmt, INSTRUCTION, ["<|im_end|>"], "Run 1", str(fake))
    assert check.ok, check.problems
    assert any("`ollama create` built it" in c for c in check.checked)
    lines = calls.read_text().splitlines()
    assert lines[0] == f"create tuneloop-check-run-1 -f {path}"
    assert lines[-1] == "rm tuneloop-check-run-1"
    system_file.write_text("something else")
    check = check_modelfile(path, gguf, fmt, INSTRUCTION, ["<|im_end|>"], "Run 1", str(fake))
    assert any("--system` differs" in p for p in check.problems)
