"""Will vLLM serve this adapter? The checks vLLM makes when it loads a LoRA adapter, made here
first, so an export that vLLM would reject is refused with the reasons instead:

- a LoRA adapter (not IA3, prefix or prompt tuning), without DoRA (vLLM: "does not yet support
  DoRA");
- no fully trained modules (`modules_to_save`: a trained embedding or LM head; vLLM: "only
  supports modules_to_save being None"), and no PEFT trainable-token deltas;
- a rank within vLLM's `--max-lora-rank` choices (8, 16, 32, 64, 128, 256); the smallest one that
  fits is what the served command uses;
- no trained biases (vLLM needs bias-free LoRA unless started with LoRA bias enabled);
- target modules among those vLLM puts LoRA on for the architecture.

    check = check_vllm(Path(".tuneloop/runs/x/adapter"), model_type="llama")
    check.ok, check.max_lora_rank, [p.what for p in check.problems]
    (True, 16, [])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.errors import Problem
from tuneloop.models.adapters import PROMPT_LEARNING, prompt_learning_refusal

MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256)
_LLAMA_LIKE = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj", "embed_tokens", "lm_head"})  # fmt: skip
LORA_MODULES = {  # vLLM: packed q/k/v and gate/up are split back into these names on load
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
}


@dataclass
class VllmCheck:
    adapter: Path
    rank: int | None = None
    max_lora_rank: int | None = None
    target_modules: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_vllm(adapter: Path, model_type: str | None = None) -> VllmCheck:
    """Every reason vLLM would refuse the adapter in `adapter` (an empty list: it loads)."""
    adapter = Path(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    check = VllmCheck(adapter)
    where = str(adapter / "adapter_config.json")

    def refuse(what: str, fix: str) -> None:
        check.problems.append(Problem(what, where, fix))

    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type in PROMPT_LEARNING:
        problem = prompt_learning_refusal(peft_type, adapter, "--vllm").problems[0]
        refuse(problem.what, problem.fix)
        return check
    if peft_type != "LORA":
        refuse(
            f"vLLM serves LoRA adapters only; this is {peft_type}",
            "train with train.method lora, or export --merge and serve the merged model "
            "with `vllm serve MERGED`",
        )
        return check
    if config.get("use_dora"):
        refuse(
            "vLLM does not support DoRA (use_dora: true)",
            "export --merge and serve the merged model, or train plain LoRA",
        )
    if config.get("modules_to_save"):
        refuse(
            f"fully trained modules {config['modules_to_save']} (modules_to_save): vLLM "
            "loads LoRA deltas only, not trained embeddings or LM heads",
            "train without modules_to_save, or export --merge and serve the merged model",
        )
    if config.get("trainable_token_indices"):
        refuse(
            "trained token embeddings (trainable_token_indices) are not loaded by vLLM",
            "train without trainable tokens, or export --merge",
        )
    if config.get("bias", "none") != "none":
        refuse(
            f"trained LoRA biases (bias: {config['bias']}) are refused by vLLM by default",
            "train with bias none",
        )

    ranks = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    check.rank = max(ranks)
    fitting = [r for r in MAX_LORA_RANKS if r >= check.rank]
    if fitting:
        check.max_lora_rank = fitting[0]
    else:
        refuse(
            f"rank {check.rank} exceeds vLLM's largest --max-lora-rank ({MAX_LORA_RANKS[-1]})",
            f"train with train.lora.r at most {MAX_LORA_RANKS[-1]}",
        )

    targets = config.get("target_modules") or []
    if isinstance(targets, str):  # a regex: read the module names from the weights instead
        targets = sorted(_weight_modules(adapter))
    check.target_modules = sorted({t.rsplit(".", 1)[-1] for t in targets})
    allowed = LORA_MODULES.get(model_type or "")
    if allowed is not None:
        unknown = [t for t in check.target_modules if t not in allowed]
        if unknown:
            refuse(
                f"vLLM puts no LoRA on {unknown} in a {model_type} model",
                f"target only {', '.join(sorted(allowed))}",
            )
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        refuse("no adapter_model.safetensors", "save the adapter with safetensors (tuneloop does)")
    elif any(("modules_to_save" in k or "trainable_tokens" in k) for k in _weight_keys(weights)):
        refuse(
            "the weights hold fully trained modules vLLM cannot load",
            "train without modules_to_save or trainable tokens",
        )
    return check


def _weight_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def _weight_modules(adapter: Path) -> set[str]:
    path = adapter / "adapter_model.safetensors"
    if not path.is_file():
        return set()
    return {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in _weight_keys(path) if ".lora_" in k}


def serve_command(
    base: str, adapters: dict[str, str | Path], max_lora_rank: int, chat_template: str | None = None
) -> str:
    """The `vllm serve` command line for `adapters` ({name: folder}) on `base`; each
    `name=folder` is double-quoted so a shell variable in it (serve.sh's `$HERE`) expands."""
    modules = " ".join(f'"{name}={path}"' for name, path in adapters.items())
    template = f" --chat-template {chat_template}" if chat_template else ""
    return (
        f"vllm serve {base} --enable-lora --lora-modules {modules} "
        f"--max-lora-rank {max_lora_rank} --max-loras {max(1, len(adapters))}{template}"
    )
