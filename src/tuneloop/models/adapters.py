"""Adapters through PEFT: attach to a base model, save in PEFT format, load back."""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import LoraConfig
from tuneloop.errors import UserError


def attach_lora(model, cfg: LoraConfig):
    """Wrap `model` in a PEFT LoRA model; only the adapter weights stay trainable."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in present]
    if missing:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}
        )
        raise UserError(
            f"target modules {missing} are not in this model",
            "train.lora.target_modules",
            f"choose among the model's linear layers: {', '.join(linear)}",
        )
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


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
