"""`tuneloop export RUN`: merged weights, GGUF, an Ollama Modelfile and a vLLM adapter folder,
each verified against the adapter model it came from, and recorded in `export.json`:

    <run>/export/
      merged/             safetensors + config + training tokenizer and chat template, read
                          alike by transformers 4.5x and 5.x (portable.py)
      model-f16.gguf      model-q8_0.gguf
      Modelfile           for `ollama create NAME -f Modelfile`
      vllm/<name>/        the adapter folder vLLM loads; vllm/serve.sh the command, which names
                          its base relative to itself (vllm/base/ for a converted GGUF base)
      export.json         files, checks with their numbers, and the commands to use them

The chat template written into merged/, the GGUF files and vllm/ gives a chat without a system
message the run's task instruction, as tuneloop eval and serve do (portable.py).

The probes are the run's held-out prompts (all of them, or the first `n_probes`), rendered with
the training chat template and the task instruction; without held-out prompts three generic
chats are used and the output says so. The reference is the adapter model in float32. Checks:

- merge: the largest logit difference between merged and adapter model, in memory and re-read
  from disk, must be at most `tolerance` (1e-5) times the largest logit (float32 rounding of
  W + BA grows with it); the merged folder's template must render the
  probes without their instruction to the same token ids;
- gguf f16: transformers reads the file back (`gguf_file=`), renders the probes *without* the
  instruction with the file's own template to the same ids, and its greedy answers must equal
  the adapter model's;
- gguf q8_0: read back the same way; its agreement with the adapter model is reported (8-bit
  weights are not expected to reproduce every answer);
- ollama: the Modelfile read back (ollama.check_modelfile), and run by Ollama where installed;
- vllm: the adapter passes every check vLLM makes on load (see vllm.py), or nothing is exported.

Prompt-learning adapters (prompt, prefix tuning) are refused up front with what does work, and
an `out` that cannot be written is refused before any weight loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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
    n_probes: int | None = None,
    tolerance: float = 1e-5,
    workspace: Path | None = None,
    say=lambda _msg: None,
) -> ExportResult:
    """Export the adapter of run `ref` (a run id or folder, or an adapter folder), checked on
    the first `n_probes` held-out prompts (None: all of them)."""
    from tuneloop.models.adapters import PROMPT_LEARNING, prompt_learning_refusal
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
    peft_type = str(_read_json(adapter / "adapter_config.json").get("peft_type", "")).upper()
    if peft_type in PROMPT_LEARNING:
        raise prompt_learning_refusal(peft_type, adapter, "tuneloop export")
    run_dir = adapter.parent if adapter.name == "adapter" else None
    out = Path(out) if out else (run_dir or adapter.parent) / "export"
    check_writable(out)  # before minutes of loading, not after
    name = run_dir.name if run_dir else adapter.name
    result = ExportResult(out)

    from tuneloop.models.load import resolve

    source = resolve(base)
    if vllm:  # cheap, and refuses before anything heavy runs
        _export_vllm(adapter, name, source, meta, result, say)
    if merge or quants:
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


def check_writable(out: Path) -> None:
    """Refuse an `out` that cannot be written, without creating it: the folder itself when it
    exists, else the nearest folder above it that does."""
    out = Path(out)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(
            f"cannot write the export to {out}: {exc}",
            "--out",
            f"pass --out a folder you can write to (or make {existing} writable)",
        ) from None


def _export_vllm(adapter: Path, name: str, source, meta: dict, result: ExportResult, say) -> None:
    from tuneloop.export.portable import make_portable, with_instruction_template
    from tuneloop.export.vllm import check_vllm, serve_command

    model_type = _read_json(source.path / "config.json").get("model_type")
    check = check_vllm(adapter, model_type)
    if not check.ok:
        raise UserError.many(check.problems, title=f"vLLM would refuse adapter {adapter}:")
    folder = result.out / "vllm"
    target = folder / name
    tmp = target.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(adapter, tmp)
    make_portable(tmp)  # vLLM takes an adapter's own tokenizer when the folder holds one
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)

    base, base_note = _vllm_base(source, folder, say)
    template = _chat_template(adapter)
    instruction = ((meta.get("recipe") or {}).get("task") or {}).get("instruction")
    lines = ["#!/bin/sh", f"# vLLM serving adapter `{name}` on its base model: {base_note}."]
    if template:
        write_text(folder / "chat_template.jinja", with_instruction_template(template, instruction))
        lines.append(
            "# chat_template.jinja is the training chat template"
            + (", giving a chat without a system message the task instruction:" if instruction
               else ".")
        )  # fmt: skip
        if instruction:
            lines += [f"#   {line}" for line in instruction.splitlines()]
    command = serve_command(
        '"$BASE"',
        {name: f"$HERE/{name}"},
        check.max_lora_rank,
        chat_template='"$HERE/chat_template.jinja"' if template else None,
    )
    lines += [
        'HERE="$(cd "$(dirname "$0")" && pwd)"',
        f'BASE="${{VLLM_BASE:-{base}}}"',
        f'exec {command} "$@"',
    ]
    write_text(folder / "serve.sh", "\n".join(lines) + "\n")
    (folder / "serve.sh").chmod(0o755)
    result.files["vllm"] = str(target)
    result.commands["vllm"] = f"sh {folder / 'serve.sh'}   # runs: {command}"
    result.checks.append(
        Check(
            "vllm",
            True,
            f"LoRA rank {check.rank} on {', '.join(check.target_modules)}: loads in "
            f"vLLM with --max-lora-rank {check.max_lora_rank}; base: {base_note}"
            + (
                "; the task instruction is in the chat template" if template and instruction else ""
            ),
            {"rank": check.rank, "max_lora_rank": check.max_lora_rank, "base": base},
        )  # fmt: skip
    )


def _vllm_base(source, folder: Path, say) -> tuple[str, str]:
    """How serve.sh names the base model, portably, and a note saying what it is.

    A hub model is named by its hub id; a model folder by its path relative to serve.sh; the
    folder a GGUF (the embedded model) was converted into lives in a machine's cache, so it is
    written beside the adapter as `vllm/base/` (hard links where the file system allows)."""
    if source.origin == "hub-cache":
        return source.name, (
            f"the hub id {source.name} (vLLM reads it from the Hugging Face cache or downloads it)"
        )
    if source.origin == "folder":
        rel = os.path.relpath(source.path, folder)
        return f"$HERE/{rel}", (
            f"the folder {rel} relative to serve.sh (set VLLM_BASE when it is elsewhere)"
        )
    base = folder / "base"
    say(f"writing the base model {source.name} to {base} for vLLM")
    tmp = base.with_name(".base.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(  # the conversion marker names a file on this machine: not needed there
        source.path,
        tmp,
        copy_function=_link_or_copy,
        ignore=shutil.ignore_patterns("tuneloop-converted.json"),
    )
    from tuneloop.export.portable import make_portable

    make_portable(tmp)
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    return "$HERE/base", f"{source.name}, written to vllm/base/ beside serve.sh"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _chat_template(adapter: Path) -> str | None:
    """The training chat template saved with the adapter."""
    path = adapter / "chat_template.jinja"
    if path.is_file():
        return path.read_text()
    template = _read_json(adapter / "tokenizer_config.json").get("chat_template")
    return template if isinstance(template, str) else None


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
    from tuneloop.export import merge as merging
    from tuneloop.export.gguf import load_gguf, source_pre_tokenizer, write_gguf
    from tuneloop.export.portable import with_instruction_template
    from tuneloop.models.adapters import load_adapter
    from tuneloop.models.generate import generate, stop_token_ids
    from tuneloop.models.load import load_model

    recipe = meta.get("recipe") or {}
    max_new = (recipe.get("eval") or {}).get("max_new_tokens") or 32
    instruction = (recipe.get("task") or {}).get("instruction")
    tokenizer = AutoTokenizer.from_pretrained(adapter)  # the training tokenizer and template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    probes, probes_from = _probes(adapter, recipe, n_probes)
    say(f"probes: {len(probes)} {probes_from}")
    # What a user sends: the chat without the instruction, which the exported template adds.
    asked = [_without_instruction(p, instruction) for p in probes]
    template = with_instruction_template(tokenizer.chat_template, instruction)
    batches = [
        torch.tensor(
            [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]]
        )
        for p in probes
    ]

    def same_ids(tok) -> int:
        """How many probes `tok` renders, without their instruction, to the reference ids."""
        return sum(
            tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"] == b[0].tolist()
            for p, b in zip(asked, batches, strict=True)
        )

    say(f"loading {source.name} and the adapter")
    model = load_adapter(load_model(source), adapter).eval()
    reference_logits = merging.probe_logits(model, batches)
    reference = generate(model, tokenizer, probes, max_new, precision="fp32")

    merged = merging.merge_adapter(model)
    in_memory = merging.max_difference(merging.probe_logits(merged, batches), reference_logits)
    numbers = {"max_logit_diff": in_memory, "tolerance": tolerance, "probes": len(probes)}
    numbers["probes_from"] = probes_from
    detail = ""
    passed = True
    if merge:
        folder = merging.save_merged(merged, tokenizer, result.out / "merged", template)
        on_disk = merging.max_difference(
            merging.probe_logits(merging.reload(folder), batches), reference_logits
        )
        numbers["max_logit_diff_on_disk"] = on_disk
        numbers["same_ids"] = same_ids(AutoTokenizer.from_pretrained(folder))
        passed = numbers["same_ids"] == len(probes)
        detail = (
            f"; its template renders {numbers['same_ids']}/{len(probes)} probes without their "
            "instruction to the same tokens"
        )
        result.files["merged"] = str(folder)
        result.commands["transformers"] = f"AutoModelForCausalLM.from_pretrained('{folder}')"
        result.commands["vllm-merged"] = f"vllm serve {folder}"
    worst = max(v for k, v in numbers.items() if k.startswith("max_logit"))
    # float32 rounding of W + BA grows with the logits' size, so the bound is relative to it
    scale = max(float(x.abs().max()) for x in reference_logits)
    numbers["max_abs_logit"] = scale
    result.checks.append(
        Check(
            "merge",
            passed and worst <= tolerance * scale,
            f"merged logits within {worst:.2e} of the adapter model's, whose logits reach "
            f"{scale:.1f} (tolerance {tolerance:g} of that: {tolerance * scale:.2e})" + detail,
            numbers,
        )
    )
    say(result.checks[-1].detail)

    pre = source_pre_tokenizer(source.path)
    for quant in quants:
        path = result.out / f"model-{quant}.gguf"
        info = write_gguf(
            merged, tokenizer, path, quant, name=name, source_pre=pre, chat_template=template
        )
        back_model, back_tok = load_gguf(path)
        ids = same_ids(back_tok)
        # Asked as a user asks: the instruction comes from the file's own chat template.
        answers = generate(back_model, back_tok, asked, max_new, precision="fp32")
        agree = sum(a == r for a, r in zip(answers, reference, strict=True))
        differ = [
            {"prompt": p[-1]["content"], "adapter": r, "gguf": a}
            for p, r, a in zip(probes, reference, answers, strict=True)
            if a != r
        ][:5]
        passed = ids == len(probes) and (agree == len(probes) or quant != "f16")
        result.checks.append(
            Check(
                f"gguf-{quant}",
                passed,
                f"read back by transformers: its template renders {ids}/{len(probes)} probes "
                f"(without the instruction) to the same tokens; greedy answers equal to the "
                f"adapter model's on {agree}/{len(probes)} probes ({probes_from})",
                {
                    "agree": agree,
                    "same_ids": ids,
                    "probes": len(probes),
                    "probes_from": probes_from,
                    "bytes": info["bytes"],
                    "tensors": info["tensors"],
                    "pre_tokenizer": info["pre_tokenizer"],
                    "differences": differ,
                },
            )
        )
        say(result.checks[-1].detail)
        result.files[f"gguf-{quant}"] = str(path)
        result.commands[f"llama.cpp-{quant}"] = f"llama-server -m {path} --jinja"
        del back_model
    if ollama:
        from tuneloop.export.ollama import chat_format, check_modelfile, modelfile

        fmt = chat_format(tokenizer, probes)
        stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(tokenizer)]
        gguf_name = f"model-{quants[0]}.gguf"
        path = result.out / "Modelfile"
        write_text(path, modelfile(gguf_name, fmt, stops, instruction))
        check = check_modelfile(path, result.out / gguf_name, fmt, instruction, stops, name)
        result.files["ollama"] = str(path)
        result.commands["ollama"] = f"ollama create {name} -f {path}"
        result.checks.append(
            Check(
                "ollama",
                check.ok,
                "; ".join(
                    [
                        f"TEMPLATE renders all {len(probes)} probes as the chat template",
                        *check.checked,
                        *(f"PROBLEM: {p}" for p in check.problems),
                        *(f"not checked: {n}" for n in check.not_checked),
                    ]
                ),
                {
                    "stops": stops,
                    "checked": check.checked,
                    "not_checked": check.not_checked,
                    "problems": check.problems,
                },
            )
        )
        say(result.checks[-1].detail)


def _probes(adapter: Path, recipe: dict, n: int | None) -> tuple[list[list[dict]], str]:
    """The run's held-out prompts with the task instruction (the first `n`; None: all), and
    where they came from; three generic chats when the run has none, and the reason."""
    from tuneloop.data.formats import read_examples
    from tuneloop.data.templates import example_with_instruction, with_instruction

    candidates = [adapter.parent / "data" / "heldout.jsonl"]
    heldout = (recipe.get("data") or {}).get("heldout")
    if heldout:
        candidates.append(Path(heldout))
    instruction = (recipe.get("task") or {}).get("instruction")
    unread = []
    for path in candidates:
        try:
            examples = read_examples(path, format="auto") if path.is_file() else []
        except UserError as exc:  # a CSV that needs the recipe's column mapping, ...
            unread.append(f"{path} ({exc.problems[0].what})")
            continue
        if examples:
            total = len(examples)
            examples = examples[:n] if n else examples
            return [example_with_instruction(ex, instruction).prompt_messages for ex in examples], (
                f"held-out prompts from {path}"
                + (f" (the first {len(examples)} of {total})" if len(examples) < total else "")
            )
    why = "; ".join(unread) or "none of " + ", ".join(str(p) for p in candidates) + " exists"
    generic = [with_instruction(p, instruction) for p in DEFAULT_PROBES[: n or None]]
    return generic, (
        f"GENERIC prompts: this run has no held-out prompts to check with ({why}); the checks "
        "below say only that the export behaves like the adapter on these generic chats"
    )


def _without_instruction(messages: list[dict], instruction: str | None) -> list[dict]:
    """A probe as a user sends it: without the system message `with_instruction` added."""
    first = messages[0] if messages else {}
    if instruction and first.get("role") == "system" and first.get("content") == instruction:
        return messages[1:]
    return messages


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
