"""Every training method as one step: which weights train, how the base loads, how the result is
saved and loaded back. Adapter methods go through PEFT, so what we save loads in PEFT, vLLM and
LoRAX unchanged.

    method   trains                                       base weights      saved as
    full     every weight                                 float32           model/ (safetensors)
    lora     low-rank A, B beside the target layers       float32, frozen   adapter/ (PEFT)
    qlora    the same, over a 4-bit NF4 base               4-bit, frozen     adapter/ (PEFT)
             (bitsandbytes, double quantization; its 4-bit layers also run on a CPU)
    dora     LoRA plus a per-column magnitude              float32, frozen   adapter/ (PEFT)
    ia3      one scaling vector per target layer           float32, frozen   adapter/ (PEFT)
    prefix   key/value vectors prepended in every layer    float32, frozen   adapter/ (PEFT)
    prompt   virtual token embeddings before the input     float32, frozen   adapter/ (PEFT)

A recipe that asks what a method cannot do is refused by `check_method` on the model's
*skeleton* (its modules built on the meta device from config.json), before any weight loads.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import LoraConfig, QloraConfig, TrainConfig
from tuneloop.errors import UserError

ADAPTER_METHODS = ("lora", "qlora", "dora", "ia3", "prefix", "prompt")
# Module classes (by name) each method can wrap; from PEFT's dispatchers.
_LORA_TYPES = {"Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D",
               "Linear4bit", "Linear8bitLt", "MultiheadAttention"}  # fmt: skip
_SUPPORTED = {
    "lora": _LORA_TYPES,
    "qlora": _LORA_TYPES,
    "dora": _LORA_TYPES - {"MultiheadAttention"},
    "ia3": {"Linear", "Conv1D", "Conv2d", "Conv3d", "Linear4bit", "Linear8bitLt"},
}


def output_folder(method: str) -> str:
    """Where a run keeps what it trained: `model` (full weights) or `adapter` (PEFT)."""
    return "model" if method == "full" else "adapter"


def skeleton(source, trust_remote_code: bool = False):
    """The model's modules on the meta device: shapes and types, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def check_method(model, cfg: TrainConfig) -> None:
    """Refuse target modules the model lacks, or whose type the method cannot wrap."""
    targets = _targets(cfg)
    if targets is None:
        return
    field, names = targets
    by_name: dict[str, set[str]] = {}
    for name, module in model.named_modules():
        by_name.setdefault(name.rsplit(".", 1)[-1], set()).add(type(module).__name__)
    linear = sorted(n for n, types in by_name.items() if types & {"Linear", "Conv1D"})
    missing = [m for m in names if m not in by_name]
    if missing:
        raise UserError(
            f"target modules {missing} are not in this model",
            field,
            f"choose among the model's linear layers: {', '.join(linear)}",
        )
    supported = _SUPPORTED[cfg.method]
    wrong = {m: sorted(by_name[m] - supported) for m in names if by_name[m] - supported}
    if wrong:
        listed = ", ".join(f"`{m}` ({'/'.join(types)})" for m, types in wrong.items())
        raise UserError(
            f"method `{cfg.method}` cannot wrap {listed}: it supports "
            f"{', '.join(sorted(supported))} modules",
            field,
            f"target only layers of a supported type, e.g. {', '.join(linear[:7])}",
        )


def _targets(cfg: TrainConfig) -> tuple[str, list[str]] | None:
    if cfg.method in ("lora", "qlora", "dora"):
        return "train.lora.target_modules", list(cfg.lora.target_modules)
    if cfg.method == "ia3":
        extra = [m for m in cfg.ia3.feedforward_modules if m not in cfg.ia3.target_modules]
        if extra:
            raise UserError(
                f"feedforward modules {extra} are not among the IA3 target modules",
                "train.ia3.feedforward_modules",
                "list only modules that are also in train.ia3.target_modules",
            )
        return "train.ia3.target_modules", list(cfg.ia3.target_modules)
    return None


def load_base(source, cfg: TrainConfig, precision: str, trust_remote_code: bool = False):
    """The frozen (or, for `full`, trainable) base: float32, or 4-bit NF4 for qlora."""
    if cfg.method != "qlora":
        from tuneloop.models.load import load_model

        return load_model(source, trust_remote_code)
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = cfg.qlora or QloraConfig()
    compute = q.compute_dtype if q.compute_dtype != "auto" else precision
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16 if compute == "bf16" else torch.float32,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(
        source.path,
        quantization_config=quant,
        dtype=torch.float32,
        device_map={"": device},
        trust_remote_code=trust_remote_code,
    )


def apply_method(model, cfg: TrainConfig, tokenizer_path: str | Path | None = None):
    """Make exactly the method's weights trainable; adapter methods return a PEFT model."""
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import get_peft_model

    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        # Casts the few float leftovers (norms) to float32 and freezes the 4-bit weights.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, peft_config(cfg, tokenizer_path))


def peft_config(cfg: TrainConfig, tokenizer_path: str | Path | None = None):
    """The PEFT config of an adapter method."""
    import peft

    if cfg.method in ("lora", "qlora", "dora"):
        return peft.LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            use_dora=cfg.method == "dora",
            task_type="CAUSAL_LM",
        )
    if cfg.method == "ia3":
        return peft.IA3Config(
            target_modules=list(cfg.ia3.target_modules),
            feedforward_modules=list(cfg.ia3.feedforward_modules),
            task_type="CAUSAL_LM",
        )
    if cfg.method == "prefix":
        return peft.PrefixTuningConfig(
            num_virtual_tokens=cfg.prefix.num_virtual_tokens, task_type="CAUSAL_LM"
        )
    if cfg.method == "prompt":
        text = cfg.prompt.init_text
        return peft.PromptTuningConfig(
            num_virtual_tokens=cfg.prompt.num_virtual_tokens,
            prompt_tuning_init="TEXT" if text else "RANDOM",
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=str(tokenizer_path) if text else None,
            task_type="CAUSAL_LM",
        )
    raise ValueError(f"no PEFT config for method {cfg.method!r}")


def attach_lora(model, cfg: LoraConfig):
    """Wrap `model` in a PEFT LoRA model; only the adapter weights stay trainable."""
    train = TrainConfig(method="lora", lora=cfg)
    check_method(model, train)
    return apply_method(model, train)


def save_trained(model, tokenizer, folder: str | Path, state_dict: dict | None = None) -> None:
    """The adapter (PEFT) or the full weights (safetensors), with the tokenizer and its chat
    template; `folder` must not exist yet (callers write to a temporary folder and rename).
    `state_dict` replaces the model's own tensors (full weights gathered from FSDP shards)."""
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    tokenizer.save_pretrained(folder)


def load_trained(base, folder: str | Path, trainable: bool = False):
    """What `save_trained` wrote, ready to use: an adapter put on `base` (the model it was
    trained on), or, for full fine-tuning, the saved model itself (`base` is then unused and
    may be None)."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        return load_adapter(base, folder, trainable)
    if (folder / "config.json").is_file():
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    raise UserError(
        f"{folder} holds neither an adapter (adapter_config.json) nor a model (config.json)",
        str(folder),
        "pass the `adapter` or `model` folder of a finished run (tuneloop train writes it)",
    )


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False):
    """Put a saved PEFT adapter on `model` (the base it was trained on)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(
            f"{adapter_dir} holds no adapter_config.json",
            str(adapter_dir),
            "pass the `adapter` folder of a finished run (tuneloop train writes it)",
        )
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)


def trainable_state(model) -> dict:
    """The trainable tensors by name (the adapter), detached copies."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
