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


def enable_checkpointing(model) -> None:
    """Recompute activations in the backward pass (non-reentrant, which works with frozen
    inputs). transformers 5 calls it activation checkpointing; 4.x gradient checkpointing."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


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
    """Make exactly the method's weights trainable; adapter methods return a PEFT model (for a
    reward model, PEFT's sequence-classification task, which trains and saves the score head
    beside the adapter)."""
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


# Methods whose frozen weights are used only in matrix products, where bf16 autocast rounds them
# to bf16 at every use anyway. DoRA is left out: it takes the norm of each frozen weight.
_BF16_FROZEN = ("lora", "ia3", "prefix", "prompt")


def store_frozen_in_bf16(model, method: str) -> int:
    """Keep the frozen weights of the linear layers in bf16 for training under bf16 autocast.

    Autocast casts a float32 weight to bf16 at every matrix product and keeps that copy for the
    backward pass; a weight stored in bf16 gives the same bf16 operand, so the loss and the
    gradients are unchanged, with half the weight memory, no copies and no cast per step. The
    embeddings (and the LM head tied to them) and the norms stay float32, so the residual
    stream keeps its float32 precision. Those are copied into memory too: transformers maps the
    weight file, and the mapping (all of it that was read) stays resident until no tensor
    points into it. Returns how many parameters were converted to bf16.
    """
    import torch

    if method not in _BF16_FROZEN:
        return 0
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    keep = {id(m.weight) for m in (base.get_input_embeddings(), base.get_output_embeddings())
            if m is not None}  # fmt: skip
    converted = 0
    for module in base.modules():
        if type(module) is not torch.nn.Linear:  # PEFT's wrappers hold the nn.Linear inside
            continue
        for p in module.parameters(recurse=False):
            if not p.requires_grad and id(p) not in keep and p.dtype == torch.float32:
                p.data = p.data.to(torch.bfloat16)
                converted += p.numel()
    for p in base.parameters():  # the rest leaves the mapped file
        if not p.requires_grad and p.dtype == torch.float32:
            p.data = p.data.clone()
    return converted


def peft_config(cfg: TrainConfig, tokenizer_path: str | Path | None = None):
    """The PEFT config of an adapter method."""
    import peft

    task = "SEQ_CLS" if cfg.objective == "reward" else "CAUSAL_LM"

    if cfg.method in ("lora", "qlora", "dora"):
        return peft.LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            use_dora=cfg.method == "dora",
            task_type=task,
        )
    if cfg.method == "ia3":
        return peft.IA3Config(
            target_modules=list(cfg.ia3.target_modules),
            feedforward_modules=list(cfg.ia3.feedforward_modules),
            task_type=task,
        )
    if cfg.method == "prefix":
        return peft.PrefixTuningConfig(
            num_virtual_tokens=cfg.prefix.num_virtual_tokens, task_type=task
        )
    if cfg.method == "prompt":
        text = cfg.prompt.init_text
        return peft.PromptTuningConfig(
            num_virtual_tokens=cfg.prompt.num_virtual_tokens,
            prompt_tuning_init="TEXT" if text else "RANDOM",
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=str(tokenizer_path) if text else None,
            task_type=task,
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


def load_as_trained(folder: str | Path, cfg: TrainConfig, source, base, precision: str,
                    trust_remote_code: bool = False):  # fmt: skip
    """The model a run trained, as it trained and as it is evaluated: its adapter on `base`;
    on a freshly loaded 4-bit base for QLoRA (the adapter learned to correct the quantized
    weights, `source` is the model's `ModelSource`); the saved model for full fine-tuning
    (`base` unused). `tuneloop eval` and `tuneloop serve` both load runs through here."""
    if cfg.method == "qlora":
        base = load_base(source, cfg, precision, trust_remote_code)
    return load_trained(base, folder)


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


# PEFT types that learn inputs (virtual tokens or per-layer key/value prefixes), not weights:
# nothing to fold into the base, and no server (tuneloop serve, vLLM) takes them.
PROMPT_LEARNING = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING")


def prompt_learning_refusal(peft_type: str, folder: Path, field: str) -> UserError:
    """The one honest answer for a prompt-learning adapter asked to be exported, or served
    where it cannot be: what does not work, why, and what does."""
    served = "tuneloop serve (its own engine) serves prompt tuning, P-tuning and prefix tuning"
    if peft_type not in ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING"):
        served = f"no server runs {peft_type} (it needs a task id per request)"
    return UserError(
        f"{folder} is a {peft_type} adapter: it learned inputs put in front of every prompt, not "
        "weights, so there is nothing to merge into the base model or convert to GGUF, and vLLM "
        "does not serve prompt-learning adapters",
        field,
        f"{served}: `tuneloop serve NAME={folder}`; to export the task (merged weights, GGUF, "
        "vLLM), train it with train.method lora",
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
