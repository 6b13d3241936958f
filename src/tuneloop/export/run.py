"""`tuneloop export RUN`: merged weights, GGUF, an Ollama Modelfile and a vLLM adapter folder,
each verified against the adapter model it came from, and recorded in `export.json`:

    <run>/export/
      merged/             safetensors + config + training tokenizer and chat template
      model-f16.gguf      model-q8_0.gguf
      Modelfile           for `ollama create NAME -f Modelfile`
      vllm/<name>/        the adapter folder vLLM loads; vllm/serve.sh the command
      export.json         files, checks with their numbers, and the commands to use them

The probes are the run's held-out prompts (the first `n_probes`), rendered with the training chat
template and the task instruction; the reference is the adapter model in float32. Checks:

- merge: the largest logit difference between merged and adapter model, in memory and re-read
  from disk, must be at most `tolerance` (1e-4);
- gguf f16: transformers reads the file back (`gguf_file=`), tokenizes the probes to the same ids,
  and its greedy answers must equal the adapter model's;
- gguf q8_0: read back the same way; its agreement with the adapter model is reported (8-bit
  weights are not expected to reproduce every answer);
- vllm: the adapter passes every check vLLM makes on load (see vllm.py), or nothing is exported.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneloop.errors import UserError
from tuneloop.files import write_json, write_text

DEFAULT_PROBES = [
    [{"role": "user", "content": "Hello! What can you do?"}],
    [{"role": "user", "content": "Summarize: the order arrived late and the box was damaged."}],
    [{"role": "user", "content": "List three colours."}],
]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    numbers: dict = field(default_factory=dict)


@dataclass
class ExportResult:
    out: Path
    files: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)


def export(
    ref: str | Path,
    out: Path | None = None,
    merge: bool = False,
    quants: tuple[str, ...] = (),
    ollama: bool = False,
    vllm: bool = False,
    n_probes: int = 16,
    tolerance: float = 1e-4,
    workspace: Path | None = None,
    say=lambda _msg: None,
) -> ExportResult:
    """Export the adapter of run `ref` (a run id or folder, or an adapter folder)."""
    from tuneloop.serve.adapters import adapter_folder

    if not (merge or quants or ollama or vllm):
        raise UserError(
            "nothing to export",
            "tuneloop export",
            "pass one or more of --merge, --gguf, --ollama, --vllm",
        )
    if ollama and not quants:
        quants = ("f16",)
    adapter = adapter_folder(ref, workspace)
    meta = _read_json(adapter / "tuneloop.json")
    base = meta.get("base_model")
    if base is None:
        raise UserError(
            f"{adapter} has no tuneloop.json naming its base model",
            str(adapter),
            "export the adapter folder of a tuneloop run",
        )
    run_dir = adapter.parent if adapter.name == "adapter" else None
    out = Path(out) if out else (run_dir or adapter.parent) / "export"
    name = run_dir.name if run_dir else adapter.name
    result = ExportResult(out)

    from tuneloop.models.load import resolve

    source = resolve(base)
    if vllm:  # cheap, and refuses before anything heavy runs
        _export_vllm(adapter, name, source, result)
    if merge or quants:
        say(f"loading {base} and the adapter; probing with up to {n_probes} held-out prompts")
        _export_weights(
            adapter, name, source, meta, merge, quants, ollama, n_probes, tolerance, result, say
        )
    manifest = {
        "adapter": str(adapter),
        "base_model": base,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": result.files,
        "checks": [asdict(c) for c in result.checks],
        "commands": result.commands,
        "ok": result.ok,
    }
    write_json(out / "export.json", manifest)
    if run_dir is not None and (run_dir / "run.json").exists():
        from tuneloop.registry import record

        kinds = [k for k, on in (("merge", merge), ("gguf", quants), ("ollama", ollama),
                                 ("vllm", vllm)) if on]  # fmt: skip
        record.export(run_dir, run_dir.name, "+".join(kinds), out, {"ok": result.ok})
    return result


def _export_vllm(adapter: Path, name: str, source, result: ExportResult) -> None:
    from tuneloop.export.vllm import check_vllm, serve_command

    model_type = _read_json(source.path / "config.json").get("model_type")
    check = check_vllm(adapter, model_type)
    if not check.ok:
        raise UserError.many(check.problems, title=f"vLLM would refuse adapter {adapter}:")
    target = result.out / "vllm" / name
    tmp = target.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(adapter, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    command = serve_command(str(source.path), {name: target}, check.max_lora_rank)
    write_text(result.out / "vllm" / "serve.sh", f'#!/bin/sh\nexec {command} "$@"\n')
    result.files["vllm"] = str(target)
    result.commands["vllm"] = command
    result.checks.append(
        Check(
            "vllm",
            True,
            f"LoRA rank {check.rank} on {', '.join(check.target_modules)}: loads in "
            f"vLLM with --max-lora-rank {check.max_lora_rank}",
            {"rank": check.rank, "max_lora_rank": check.max_lora_rank},
        )
    )


def _export_weights(
    adapter,
    name,
    source,
    meta,
    merge,
    quants,
    ollama,
    n_probes,
    tolerance,
    result: ExportResult,
    say,
) -> None:
    import torch
    from transformers import AutoTokenizer

    from tuneloop.data.templates import render_prompt
    from tuneloop.evaluate.generate import generate, stop_token_ids
    from tuneloop.export import merge as merging
    from tuneloop.export.gguf import load_gguf, source_pre_tokenizer, write_gguf
    from tuneloop.models.adapters import load_adapter
    from tuneloop.models.load import load_model

    recipe = meta.get("recipe") or {}
    max_new = (recipe.get("eval") or {}).get("max_new_tokens") or 32
    tokenizer = AutoTokenizer.from_pretrained(adapter)  # the training tokenizer and template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    probes = _probes(adapter, recipe, n_probes)
    batches = [
        torch.tensor(
            [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]]
        )
        for p in probes
    ]
    model = load_adapter(load_model(source), adapter).eval()
    reference_logits = merging.probe_logits(model, batches)
    reference = generate(model, tokenizer, probes, max_new, precision="fp32")

    merged = merging.merge_adapter(model)
    in_memory = merging.max_difference(merging.probe_logits(merged, batches), reference_logits)
    numbers = {"max_logit_diff": in_memory, "tolerance": tolerance, "probes": len(probes)}
    if merge:
        folder = merging.save_merged(merged, tokenizer, result.out / "merged")
        on_disk = merging.max_difference(
            merging.probe_logits(merging.reload(folder), batches), reference_logits
        )
        numbers["max_logit_diff_on_disk"] = on_disk
        result.files["merged"] = str(folder)
        result.commands["transformers"] = f"AutoModelForCausalLM.from_pretrained('{folder}')"
        result.commands["vllm-merged"] = f"vllm serve {folder}"
    worst = max(v for k, v in numbers.items() if k.startswith("max_logit"))
    result.checks.append(
        Check(
            "merge",
            worst <= tolerance,
            f"merged logits within {worst:.2e} of the adapter model's (tolerance {tolerance:g})",
            numbers,
        )
    )
    say(result.checks[-1].detail)

    pre = source_pre_tokenizer(source.path)
    for quant in quants:
        path = result.out / f"model-{quant}.gguf"
        info = write_gguf(merged, tokenizer, path, quant, name=name, source_pre=pre)
        back_model, back_tok = load_gguf(path)
        same_ids = all(
            back_tok(render_prompt(back_tok, p), add_special_tokens=False)["input_ids"]
            == b[0].tolist()
            for p, b in zip(probes, batches, strict=True)
        )
        answers = generate(back_model, back_tok, probes, max_new, precision="fp32")
        agree = sum(a == r for a, r in zip(answers, reference, strict=True))
        differ = [
            {"prompt": p[-1]["content"], "adapter": r, "gguf": a}
            for p, r, a in zip(probes, reference, answers, strict=True)
            if a != r
        ][:5]
        passed = same_ids and (agree == len(probes) or quant != "f16")
        result.checks.append(
            Check(
                f"gguf-{quant}",
                passed,
                f"read back by transformers: same token ids {same_ids}; greedy answers equal "
                f"to the adapter model's on {agree}/{len(probes)} probes",
                {
                    "agree": agree,
                    "probes": len(probes),
                    "bytes": info["bytes"],
                    "tensors": info["tensors"],
                    "pre_tokenizer": info["pre_tokenizer"],
                    "differences": differ,
                },
            )
        )
        say(result.checks[-1].detail)
        result.files[f"gguf-{quant}"] = str(path)
        result.commands[f"llama.cpp-{quant}"] = f"llama-cli -m {path} -cnv"
        del back_model
    if ollama:
        from tuneloop.export.ollama import chat_format, modelfile

        fmt = chat_format(tokenizer, probes)
        stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(tokenizer)]
        instruction = (recipe.get("task") or {}).get("instruction")
        gguf_name = f"model-{quants[0]}.gguf"
        write_text(result.out / "Modelfile", modelfile(gguf_name, fmt, stops, instruction))
        result.files["ollama"] = str(result.out / "Modelfile")
        result.commands["ollama"] = f"ollama create {name} -f {result.out / 'Modelfile'}"
        result.checks.append(
            Check(
                "ollama",
                True,
                f"Modelfile TEMPLATE renders all {len(probes)} probes exactly as the "
                f"training chat template; stops {stops}",
                {"stops": stops},
            )
        )


def _probes(adapter: Path, recipe: dict, n: int) -> list[list[dict[str, str]]]:
    """The run's held-out prompts with the task instruction, else a few generic chats."""
    from tuneloop.data.formats import read_examples
    from tuneloop.data.templates import with_instruction

    candidates = [adapter.parent / "data" / "heldout.jsonl"]
    heldout = (recipe.get("data") or {}).get("heldout")
    if heldout:
        candidates.append(Path(heldout))
    instruction = (recipe.get("task") or {}).get("instruction")
    for path in candidates:
        try:
            examples = read_examples(path, format="auto")[:n] if path.is_file() else []
        except UserError:  # a CSV that needs the recipe's column mapping, ...
            continue
        if examples:
            return [with_instruction(ex, instruction).prompt_messages for ex in examples]
    return [with_instruction_messages(p, instruction) for p in DEFAULT_PROBES[:n]]


def with_instruction_messages(messages: list[dict], instruction: str | None) -> list[dict]:
    if instruction and messages[0]["role"] != "system":
        return [{"role": "system", "content": instruction}, *messages]
    return messages


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
