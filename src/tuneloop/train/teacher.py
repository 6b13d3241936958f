"""Distillation through text: a teacher answers a prompt file, and its answers become an SFT
dataset with provenance.

A teacher is any local model (the embedded default, a Hugging Face folder or a .gguf file, with
or without a trained adapter or fine-tuned weights from a run) or any OpenAI-compatible endpoint
(`http://host:port/v1`), reached with plain HTTP. Prompts come from

    prompts.txt     one prompt per non-empty line
    prompts.jsonl   {"prompt": "..."} or {"prompt": [messages]} or {"messages": [...]} per line
                    (a trailing assistant turn is dropped: the teacher writes the answer);
                    other keys are kept as `meta`

and the output is `messages` JSONL that `tuneloop data lint` and `tuneloop train` read, with
`<out>.provenance.json` beside it (a run trained on `<out>` links it in the registry):

    {"teacher": {"kind": "endpoint", "url": "http://127.0.0.1:8000/v1", "model": "big"},
     "parameters": {"max_new_tokens": 256, "temperature": 0.0, ...},
     "prompts": {"file": "prompts.jsonl", "sha256": "...", "count": 200},
     "output": {"file": "distilled.jsonl", "format": "messages", "sha256": "..."},
     "written": 198, "skipped_empty": 2, "started": "...", "finished": "...", "seconds": 41.2}
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.data.templates import with_instruction
from tuneloop.errors import DataError, UserError
from tuneloop.files import provenance_path, sha256_file, write_json, write_text


@dataclass
class Prompt:
    messages: list[dict[str, str]]  # ends with the user's turn
    meta: dict = field(default_factory=dict)
    source: str = ""


def read_prompts(path: str | Path, instruction: str | None = None) -> list[Prompt]:
    """Prompts from .txt (a line each) or .jsonl; `instruction` becomes the system message of
    prompts that have none."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "prompt file not found", fix="give an existing .txt or .jsonl")
    text = path.read_text(encoding="utf-8-sig")
    prompts = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if path.suffix.lower() == ".txt":
            prompts.append(Prompt([{"role": "user", "content": line.strip()}], {}, f"{path}:{n}"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, n, f"invalid JSON at column {e.colno}: {e.msg}") from None
        prompts.append(_prompt(obj, path, n))
    if not prompts:
        raise DataError(path, 1, "no prompts: the file is empty", fix="add one prompt per line")
    for p in prompts:
        p.messages = with_instruction(p.messages, instruction)
    return prompts


def _prompt(obj: object, path: Path, line: int) -> Prompt:
    fix = 'write {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}'
    if not isinstance(obj, dict) or not ({"prompt", "messages"} & set(obj)):
        raise DataError(path, line, "expected an object with 'prompt' or 'messages'", fix=fix)
    value = obj.get("prompt", obj.get("messages"))
    if isinstance(value, str) and value.strip():
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list) and value and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
        and isinstance(m.get("content"), str) for m in value
    ):  # fmt: skip
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
    else:
        raise DataError(path, line, "the prompt must be a non-empty string or chat messages", fix)
    if not messages or messages[-1]["role"] != "user":
        raise DataError(path, line, "the prompt must end with a user turn", fix=fix)
    meta = {k: v for k, v in obj.items() if k not in ("prompt", "messages", "meta")}
    meta.update(obj.get("meta") or {})
    return Prompt(messages, meta, f"{path}:{line}")


class LocalTeacher:
    """A model on this machine, greedy decoding, batched (`models/generate.py`)."""

    def __init__(self, name: str, adapter: str | Path | None = None,
                 trust_remote_code: bool = False, batch_size: int = 8):  # fmt: skip
        self.name, self.adapter, self.batch_size = name, adapter, batch_size
        self.trust_remote_code = trust_remote_code

    def describe(self) -> dict:
        from tuneloop.models.load import resolve, weights_hash

        source = resolve(self.name, self.trust_remote_code)
        return {
            "kind": "local",
            "model": self.name,
            "weights_sha256_16": weights_hash(source),
            "adapter": str(self.adapter) if self.adapter else None,
            "decoding": "greedy",
        }

    def answer(self, prompts: list[Prompt], max_new_tokens: int, temperature: float) -> list[str]:
        import torch

        from tuneloop.models.adapters import load_trained
        from tuneloop.models.generate import generate
        from tuneloop.models.load import load
        from tuneloop.models.precision import resolve_precision

        if temperature > 0:
            raise UserError(
                "a local teacher decodes greedily; sampling is not supported",
                "--temperature",
                "drop --temperature (or set it to 0), or serve the teacher behind an endpoint",
            )
        model, tokenizer, _ = load(self.name, self.trust_remote_code)
        if self.adapter is not None:
            model = load_trained(model, self.adapter)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        return generate(
            model, tokenizer, [p.messages for p in prompts], max_new_tokens=max_new_tokens,
            batch_size=self.batch_size, precision=resolve_precision("auto", device),
        )  # fmt: skip


class EndpointTeacher:
    """An OpenAI-compatible `/chat/completions` endpoint (`models.remote`: a few requests at a
    time, retried; greedy answers are cached, sampled ones are not)."""

    def __init__(self, url: str, model: str | None = None, api_key_env: str | None = None,
                 concurrency: int = 4, timeout: float = 120.0, retries: int = 2):  # fmt: skip
        from tuneloop.models.remote import ChatEndpoint

        self.endpoint = ChatEndpoint(url, model or "default", api_key_env,
                                     concurrency=concurrency, timeout_s=timeout, retries=retries,
                                     where="--teacher")  # fmt: skip

    def describe(self) -> dict:
        return {"kind": "endpoint", "url": self.endpoint.url, "model": self.endpoint.model}

    def answer(self, prompts: list[Prompt], max_new_tokens: int, temperature: float) -> list[str]:
        from tuneloop.models.remote import active_reply_cache

        self.endpoint.cache = active_reply_cache() if temperature == 0 else None
        replies = self.endpoint.chat([p.messages for p in prompts], max_new_tokens, temperature)
        return [r.text for r in replies]


def make_teacher(teacher: str, adapter: str | Path | None = None, model: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", batch_size: int = 8):  # fmt: skip
    """An endpoint for http(s):// URLs, else a local model."""
    if teacher.startswith(("http://", "https://")):
        if adapter is not None:
            raise UserError(
                "an adapter can only be put on a local teacher",
                "--adapter",
                "drop --adapter, or pass a local model as --teacher",
            )
        key_set = bool(os.environ.get(api_key_env))
        return EndpointTeacher(teacher, model, api_key_env if key_set else None)
    return LocalTeacher(teacher, adapter, batch_size=batch_size)


def generate_dataset(teacher, prompts_path: str | Path, out: str | Path, max_new_tokens: int = 256,
                     temperature: float = 0.0, instruction: str | None = None) -> dict:  # fmt: skip
    """Answer every prompt with `teacher`, write `out` (messages JSONL) and its provenance.

    Empty answers are skipped (an empty target cannot be trained on) and counted.
    """
    prompts_path, out = Path(prompts_path), Path(out)
    prompts = read_prompts(prompts_path, instruction)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    answers = teacher.answer(prompts, max_new_tokens, temperature)
    name = teacher.describe()
    records, skipped = [], 0
    for prompt, answer in zip(prompts, answers, strict=True):
        if not answer.strip():
            skipped += 1
            continue
        meta = {**prompt.meta, "teacher": name.get("model") or name.get("url"),
                "prompt_source": prompt.source}  # fmt: skip
        messages = [*prompt.messages, {"role": "assistant", "content": answer.strip()}]
        records.append(json.dumps({"messages": messages, "meta": meta}, ensure_ascii=False))
    if not records:
        raise UserError(
            f"the teacher gave an empty answer to all {len(prompts)} prompts",
            "--teacher",
            "check the teacher with one prompt by hand; raise --max-new-tokens",
        )
    provenance = {
        "teacher": name,
        "parameters": {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "instruction": instruction,
        },  # fmt: skip
        "prompts": {
            "file": str(prompts_path),
            "sha256": sha256_file(prompts_path),
            "count": len(prompts),
        },  # fmt: skip
        "output": {"file": str(out), "format": "messages"},
        "written": len(records),
        "skipped_empty": skipped,
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_text(out, "".join(r + "\n" for r in records))
    # The data's hash ties the provenance to this very file: training links the two in the
    # registry, and says when the file was edited after the teacher wrote it.
    provenance["output"]["sha256"] = sha256_file(out)
    write_json(provenance_path(out), provenance)
    return provenance
