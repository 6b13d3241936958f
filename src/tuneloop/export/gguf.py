"""Our own GGUF converter for Llama-family models, written with the `gguf` package's writer.

What llama.cpp (and Ollama, LM Studio, ...) needs from a GGUF file, and what this writes:

- the hyper-parameters under `llama.*` (layers, widths, heads, RoPE base, RMS-norm epsilon);
- the tokenizer: every token string by id, its type (normal, control, user-defined), the BPE
  merges, the special token ids, and the chat template the model was trained with;
- the tensors under GGUF names (`blk.N.attn_q.weight`, ...). llama.cpp applies rotary embeddings
  to interleaved pairs while Hugging Face Llama rotates the two halves of each head, so the rows
  of q_proj and k_proj are permuted per head (as llama.cpp's own converter does, and as
  transformers undoes when it reads a GGUF);
- `f16`: matrices in float16, norms in float32; `q8_0`: matrices in blocks of 32 int8 values
  with a float16 scale (a matrix whose rows do not split into blocks of 32 stays float16).

Only byte-level BPE tokenizers (GPT-2 style: SmolLM, Llama 3, Qwen) are written; anything else is
refused with a reason rather than written wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tuneloop.errors import UserError

QUANTS = ("f16", "q8_0")
ARCHITECTURES = ("llama", "mistral")


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's rotate-half row order to llama.cpp's interleaved order, per head.

    Rows of one head are [x0..x(d/2-1), y0..y(d/2-1)]; llama.cpp wants [x0, y0, x1, y1, ...].
    weight: (n_head * d, in_features)
    """
    d = weight.shape[0] // n_head
    return weight.reshape(n_head, 2, d // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def check_convertible(config) -> None:
    """Refuse, with the reason, what this converter would write wrong."""
    problems = []
    if config.model_type not in ARCHITECTURES:
        problems.append(
            f"model_type `{config.model_type}` (this converter writes {', '.join(ARCHITECTURES)})"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            problems.append(f"{flag}=true")
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None) or {}
    rope_type = (
        rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else None
    )
    if rope_type not in ("default", None):
        problems.append(f"RoPE scaling `{rope_type}`")
    if getattr(config, "sliding_window", None):
        problems.append("sliding-window attention")
    if problems:
        raise UserError(
            f"the GGUF converter cannot write this model: {'; '.join(problems)}",
            "--gguf",
            "export --merge and convert the merged folder with llama.cpp's convert_hf_to_gguf.py",
        )


def tokenizer_metadata(tokenizer, vocab_size: int, source_pre: str | None = None) -> dict:
    """Tokens, types, merges and special ids of a byte-level BPE tokenizer, GGUF-style."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    pre = json.dumps(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise UserError(
            f"the GGUF converter writes byte-level BPE tokenizers; this one is "
            f"{model.get('type')} with pre-tokenizer {spec.get('pre_tokenizer', {}).get('type')}",
            "--gguf",
            "export --merge and convert the merged folder with llama.cpp's convert_hf_to_gguf.py",
        )
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:  # embedding rows past the tokenizer: padding
            tokens.append(f"[PAD{i}]")
            types.append(5)  # UNUSED
        elif token in added:
            tokens.append(token)
            types.append(3 if added[token].special else 4)  # CONTROL / USER_DEFINED
        else:
            tokens.append(token)
            types.append(1)  # NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "pre": source_pre or _pre_name(spec.get("pre_tokenizer")),
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
        "chat_template": tokenizer.chat_template,
    }


def _pre_name(pre: dict | None) -> str:
    """llama.cpp's name for how text is split before BPE (it picks the split regex by name)."""
    kinds = [p.get("type") for p in (pre or {}).get("pretokenizers", [pre or {}])]
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"]:
        return "smollm"  # digits one by one, then GPT-2's split
    if "Split" in kinds and "ByteLevel" in kinds:
        return "llama-bpe"
    return "default"


def source_pre_tokenizer(model_dir: Path) -> str | None:
    """When the model was converted from a GGUF file, that file's `tokenizer.ggml.pre`."""
    marker = Path(model_dir) / "tuneloop-converted.json"
    if not marker.is_file():
        return None
    original = Path(json.loads(marker.read_text())["from"])
    if not original.is_file():
        return None
    from gguf import GGUFReader

    field = GGUFReader(original).fields.get("tokenizer.ggml.pre")
    return None if field is None else field.contents()


def write_gguf(
    model,
    tokenizer,
    path: str | Path,
    quant: str = "f16",
    name: str = "model",
    source_pre: str | None = None,
    chat_template: str | None = None,
) -> dict:
    """Write `model` (a plain transformers Llama, e.g. merged) to `path`; return a summary.
    `chat_template` replaces the tokenizer's (e.g. one that carries the task instruction)."""
    import gguf
    import torch

    if quant not in QUANTS:
        raise UserError(f"unknown GGUF type `{quant}`", "--quant", f"choose from {QUANTS}")
    cfg = model.config
    check_convertible(cfg)
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    theta = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get(
        "rope_theta", 10000.0
    )
    tok = tokenizer_metadata(tokenizer, cfg.vocab_size, source_pre)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    if head_dim != cfg.hidden_size // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(theta))
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(file_type)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    for key, add in (
        ("bos", w.add_bos_token_id),
        ("eos", w.add_eos_token_id),
        ("unk", w.add_unk_token_id),
        ("pad", w.add_pad_token_id),
    ):
        if tok[key] is not None:
            add(tok[key])
    w.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    template = chat_template or tok["chat_template"]
    if template:
        w.add_chat_template(template)
    if quant == "q8_0":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    counts = {"f32": 0, "f16": 0, "q8_0": 0}
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when `output` is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            if "rotary_emb" in hf_name:
                continue  # computed, not stored
            raise UserError(
                f"no GGUF name for tensor `{hf_name}`",
                "--gguf",
                "this model has layers a Llama GGUF cannot hold",
            )
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if gguf_name.endswith("attn_q.weight"):
            data = permute_qk(data, n_head)
        elif gguf_name.endswith("attn_k.weight"):
            data = permute_qk(data, n_kv)
        if data.ndim == 1:
            w.add_tensor(gguf_name, data.astype(np.float32))
            counts["f32"] += 1
        elif quant == "q8_0" and data.shape[-1] % 32 == 0:
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(gguf_name, gguf.quants.quantize(data, q8), raw_dtype=q8)
            counts["q8_0"] += 1
        else:
            w.add_tensor(gguf_name, data.astype(np.float16))
            counts["f16"] += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return {
        "path": str(path),
        "quant": quant,
        "bytes": path.stat().st_size,
        "tensors": counts,
        "pre_tokenizer": tok["pre"],
    }


def load_gguf(path: str | Path):
    """(model, tokenizer) read back from a GGUF file by transformers, de-quantized to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    from tuneloop.models.load import _clear_quantization_marker

    _clear_quantization_marker(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer
