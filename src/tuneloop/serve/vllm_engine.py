"""`tuneloop serve --engine vllm`: what `tuneloop serve` would serve, served by vLLM's
OpenAI-compatible server instead, for scale-out on GPUs.

The same arguments (`[NAME=]RUN`, a run id or folder, an adapter folder; `--model`) resolve to
local folders vLLM reads: the base model as a Hugging Face folder (the embedded default and
`.gguf` bases as the safetensors folder `models.load.resolve` converts them into), each adapter
as its PEFT folder. The client contract is ours: the base model answers as `__base__`, each
adapter by its name. What vLLM cannot serve as a LoRA adapter is refused here with the reason,
before vLLM would refuse it at load time.

    plan = plan_vllm(["support=.tuneloop/runs/20261122-081309-quickstart"], None, workspace)
    argv, env = vllm_command(plan.base, plan.adapters, VllmOptions(port=8001, api_key="k3y"))
    argv == ["vllm", "serve", "/home/me/.tuneloop/serve/vllm/SmolLM2-...-1f0c2a9e",
             "--served-model-name", "__base__", "--host", "127.0.0.1", "--port", "8001",
             "--dtype", "auto", "--max-model-len", "5120",
             "--chat-template", "/home/me/.tuneloop/serve/vllm/chat_template-5d1e....jinja",
             "--enable-lora",
             "--lora-modules", "support=/home/me/.tuneloop/serve/vllm/adapters/support-3c9f2e10",
             "--max-lora-rank", "16", "--max-loras", "1", "--max-cpu-loras", "1"]
    env == {"VLLM_API_KEY": "k3y"}  # not on the command line, where `ps` would show it

What vLLM's documentation says and this relies on:

- `vllm serve MODEL --enable-lora --lora-modules name=path ...` serves LoRA adapters that requests
  name as `model`; `max_loras`, `max_lora_rank` and `max_cpu_loras` apply server-wide
  (https://docs.vllm.ai/en/latest/features/lora/). `vllm serve` takes the model as its first
  argument (vLLM warns that `--model` is deprecated there).
- `--lora-modules` takes `name=path`, or JSON (`{"name": ..., "path": ...}`) for the rest: vLLM
  splits an entry on `=` unless it holds a `,` (vllm/entrypoints/openai/cli_args.py).
- `--max-lora-rank` is one of a fixed set: 8, 16, 32, 64, 128, 256 (v0.14's `MaxLoRARanks` adds
  1, 320 and 512), so the smallest of the six that fits is passed, as `export --vllm` writes
  (https://docs.vllm.ai/en/v0.14.0/api/vllm/config/lora/).
- `max_cpu_loras` must be at least `max_loras`, and `max_lora_rank` defaults to 16
  (https://docs.vllm.ai/en/latest/api/vllm/config/lora/).
- vLLM loads no DoRA adapter and no trained `modules_to_save` ("vLLM does not yet support DoRA",
  vllm/lora/peft_helper.py); `export/vllm.py` makes every load-time check and is reused here.
- `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` opens `POST /v1/load_lora_adapter` and
  `/v1/unload_lora_adapter`; the documentation calls it risky in production, so it is opt-in
  (`--allow-runtime-adapters`).
- The API key is read from `VLLM_API_KEY` when `--api-key` is not given (the server's
  `args.api_key or envs.VLLM_API_KEY`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from tuneloop.errors import UserError
from tuneloop.export.vllm import MAX_LORA_RANKS, check_vllm
from tuneloop.serve.adapters import (
    BASE,
    NAME,
    AdapterSpec,
    base_model_of,
    parse_adapter_arg,
)
from tuneloop.serve.options import ServeOptions

DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp32": "float32"}  # our --precision -> --dtype
# config.json keys that bound a model's context (vLLM takes the smallest it finds)
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                "max_sequence_length")  # fmt: skip
KEY_SHOWN = "***"
VLLM_MAX_LORA_RANK = 16  # vLLM's --max-lora-rank when none is given


@dataclass(frozen=True)
class ServedBase:
    path: Path  # the Hugging Face folder vLLM loads
    names: tuple[str, ...] = (BASE,)  # --served-model-name: responses carry the first
    context: int | None = None  # the model's context length, from its config.json
    chat_template: Path | None = None


@dataclass(frozen=True)
class ServedAdapter:
    name: str
    path: Path  # the PEFT folder vLLM loads
    rank: int  # the largest rank in it (`r` and any `rank_pattern`)


@dataclass(frozen=True)
class VllmOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    runtime_adapters: bool = False  # VLLM_ALLOW_RUNTIME_LORA_UPDATING
    serve: ServeOptions = field(default_factory=ServeOptions)


@dataclass
class VllmPlan:
    base: ServedBase
    adapters: list[ServedAdapter]
    source: str  # the base model as the user knows it: a name, a run's model folder
    notes: list[str] = field(default_factory=list)  # what differs from tuneloop's engine


# ---- the command ----------------------------------------------------------------------------


def vllm_command(
    base: ServedBase, adapters: list[ServedAdapter], options: VllmOptions
) -> tuple[list[str], dict[str, str]]:
    """vLLM's server command for `adapters` on `base`, and the environment it adds."""
    serve = options.serve
    argv = ["vllm", "serve", str(base.path), "--served-model-name", *base.names,
            "--host", options.host, "--port", str(options.port),
            "--dtype", DTYPES[serve.precision]]  # fmt: skip
    # Our two limits as vLLM's one: a prompt and its answer together, within the model.
    length = serve.max_prompt_tokens + serve.max_tokens
    argv += ["--max-model-len", str(min(length, base.context or length))]
    if base.chat_template:
        argv += ["--chat-template", str(base.chat_template)]
    if adapters or options.runtime_adapters:
        argv.append("--enable-lora")
    if adapters:
        loaded = min(len(adapters), serve.cache_size)  # adapters in one batch, on the GPU
        argv += ["--lora-modules", *[lora_module(a) for a in adapters],
                 "--max-lora-rank", str(max_lora_rank([a.rank for a in adapters])),
                 "--max-loras", str(loaded),
                 "--max-cpu-loras", str(len(adapters))]  # fmt: skip
    env = {}
    if options.api_key:
        env["VLLM_API_KEY"] = options.api_key
    if options.runtime_adapters:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return argv, env


def lora_module(adapter: ServedAdapter) -> str:
    """`name=path`, or the JSON form when vLLM could not split that at its one `=`."""
    pair = f"{adapter.name}={adapter.path}"
    if pair.count("=") == 1 and "," not in pair:
        return pair
    return json.dumps({"name": adapter.name, "path": str(adapter.path)})


def max_lora_rank(ranks: list[int]) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds every rank: 4 and 8 -> 8, 12 -> 16."""
    largest = max(ranks)
    fitting = [r for r in MAX_LORA_RANKS if r >= largest]
    if not fitting:
        raise UserError(
            f"rank {largest} exceeds vLLM's largest --max-lora-rank ({MAX_LORA_RANKS[-1]})",
            "--engine vllm",
            f"train with train.lora.r at most {MAX_LORA_RANKS[-1]}, or serve with tuneloop's "
            "engine",
        )
    return fitting[0]


def shell_form(argv: list[str], env: dict[str, str]) -> str:
    """The command as a shell would take it, one option a line, the API key hidden."""
    shown = {k: KEY_SHOWN if k == "VLLM_API_KEY" else v for k, v in env.items()}
    words = [f"{k}={shlex.quote(v)}" for k, v in shown.items()] + [shlex.quote(a) for a in argv]
    lines, start = [], 0
    for i, word in enumerate(words[1:], 1):
        if word.startswith("--"):
            lines.append(" ".join(words[start:i]))
            start = i
    lines.append(" ".join(words[start:]))
    return " \\\n    ".join(lines)


# ---- resolving what to serve ----------------------------------------------------------------


def plan_vllm(args: list[str], model: str | None, workspace: Path) -> VllmPlan:
    """Resolve `tuneloop serve` arguments into the folders vLLM reads, refusing what it cannot
    serve. Folders transformers 4.x would misread are copied, fixed, under WORKSPACE/serve/vllm."""
    staging = Path(workspace).resolve() / "serve" / "vllm"
    adapters, fulls = [], []
    for arg in args:
        full = _full_model(arg, workspace)
        if full:
            fulls.append(full)
        else:
            adapters.append(parse_adapter_arg(arg, workspace))
    _check_names([a.name for a in adapters] + [name for name, _ in fulls])
    if fulls:
        name, folder = _one_full_model(fulls, adapters, model)
        base = ServedBase(_portable(folder, staging), (name, BASE), _context(folder))
        templates = [_template_and_instruction(folder, _meta_instruction(folder))]
        plan = VllmPlan(base, [], f"{name} ({folder})")
        return _with_template(_staged_note(plan, staging), templates, staging)

    base_name = base_model_of(model, adapters)
    from tuneloop.models.load import resolve

    source = resolve(base_name)
    model_type = _read_json(source.path / "config.json").get("model_type")
    served = [_served_adapter(spec, model_type, staging) for spec in adapters]
    base = ServedBase(_portable(source.path, staging), (BASE,), _context(source.path))
    templates = [_template_and_instruction(a.path, a.instruction) for a in adapters]
    plan = VllmPlan(base, served, base_name)
    return _with_template(_staged_note(plan, staging), templates, staging)


def _staged_note(plan: VllmPlan, staging: Path) -> VllmPlan:
    folders = [plan.base.path, *(a.path for a in plan.adapters)]
    if any(f.is_relative_to(staging) for f in folders):
        plan.notes.append(
            f"folders under {staging} are copies (hard links) with configs that transformers "
            "4.x and 5.x read alike: vLLM brings its own transformers"
        )
    return plan


def _full_model(arg: str, workspace: Path) -> tuple[str, Path] | None:
    """(name, folder) when `arg` names a model folder (a full fine-tuned run's `model/`, or any
    folder with config.json) rather than an adapter; None otherwise."""
    from tuneloop.workspace import find_run

    name, sep, ref = arg.partition("=")
    if not sep:
        name, ref = "", arg
    path = Path(ref)
    folder = None
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file() and not (
            candidate / "adapter_config.json"
        ).is_file():
            folder = candidate
            break
    if folder is None and not (path / "adapter_config.json").is_file():
        try:
            run = find_run(ref, workspace)
        except UserError:
            return None  # parse_adapter_arg says what is wrong with it
        if (run.path / "model" / "config.json").is_file():
            folder = run.path / "model"
    if folder is None:
        return None
    folder = folder.resolve()
    return name or (folder.parent.name if folder.name == "model" else folder.name), folder


def _check_names(names: list[str]) -> None:
    for name in names:
        if name == BASE or not NAME.match(name):
            raise UserError(
                f"adapter name {name!r} is not allowed",
                "--adapter",
                f"use letters, digits and ._:/- (not `{BASE}`, which names the base model)",
            )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(
            f"adapter name(s) {twice} given twice", "--adapter", "name each adapter once: NAME=RUN"
        )


def _one_full_model(
    fulls: list[tuple[str, Path]], adapters: list[AdapterSpec], model: str | None
) -> tuple[str, Path]:
    """A fully fine-tuned model is served as the base model itself: alone."""
    names = ", ".join(f"`{name}`" for name, _ in fulls)
    if len(fulls) > 1:
        raise UserError(
            f"{names} are fully fine-tuned models: each is a base model of its own, and one "
            "vLLM server serves one base model",
            "--engine vllm",
            "start one server per model (another --port for each)",
        )
    if adapters or model:
        others = ", ".join(f"`{a.name}`" for a in adapters) or f"--model {model}"
        raise UserError(
            f"{names} is a fully fine-tuned model, served as the base model itself; {others} "
            "cannot be served on it (adapters belong to the base they were trained on)",
            "--engine vllm",
            f"serve {names} alone, and the rest from another server (another --port)",
        )
    return fulls[0]


def _served_adapter(spec: AdapterSpec, model_type: str | None, staging: Path) -> ServedAdapter:
    """The adapter as vLLM will load it, or every reason vLLM would refuse it."""
    if spec.method == "qlora":
        raise UserError(
            f"adapter `{spec.name}` was trained with QLoRA, on a 4-bit NF4 base; vLLM would run "
            "it on the full-precision base, so its answers could differ from those tuneloop "
            "eval scored",
            str(spec.path),
            "to serve it as evaluated, train it with train.method lora; to serve it on the "
            "full-precision base anyway, merge it (`tuneloop export RUN --merge`, then "
            "`--model RUN/export/merged`) or use tuneloop's engine (`--engine tuneloop`, "
            "which says so at start-up)",
        )
    check = check_vllm(spec.path, model_type)
    if not check.ok:
        raise UserError.many(
            check.problems,
            title=f"vLLM cannot serve adapter `{spec.name}` ({spec.path}) as a LoRA adapter"
            + (" (tuneloop's engine serves DoRA: --engine tuneloop):" if spec.use_dora else ":"),
        )
    return ServedAdapter(
        spec.name, _portable(spec.path, staging / "adapters", spec.name), check.rank
    )


def _context(folder: Path) -> int | None:
    config = _read_json(folder / "config.json")
    found = [config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int)]
    return min(found) if found else None


# ---- folders vLLM reads as we do --------------------------------------------------------------


def _portable(folder: Path, staging: Path, label: str | None = None) -> Path:
    """`folder` when transformers 4.x and 5.x read it alike; else a copy under `staging` (hard
    links where the file system allows), fixed as exports are (export/portable.py). vLLM brings
    its own transformers, and 4.x silently reads 5.x's RoPE settings as the default base."""
    from tuneloop.export.portable import (
        make_portable,
        portable_config,
        portable_tokenizer_config,
    )

    fixes = {"config.json": portable_config, "tokenizer_config.json": portable_tokenizer_config}
    configs = {name: _read_json(folder / name) for name in fixes}
    if all(fix(configs[name]) == configs[name] for name, fix in fixes.items()):
        return folder
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    label = (label or folder.name).replace("/", "_")
    target = staging / f"{label}-{digest}"
    stamp = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in folder.iterdir()
             if f.is_file()}  # fmt: skip
    marker = target.with_name(target.name + ".source.json")
    if target.is_dir() and marker.is_file() and _read_json(marker) == stamp:
        return target  # made from these very files before; a running server may be reading it
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns("tuneloop-converted.json"))  # fmt: skip
    make_portable(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    marker.write_text(json.dumps(stamp))
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _with_template(
    plan: VllmPlan, served: list[tuple[str | None, str | None]], staging: Path
) -> VllmPlan:
    """vLLM renders every chat with one template: the training template, with the task
    instruction as the default system message, when every served model shares one; else the
    base model's own, and the instructions are the client's to send."""
    from tuneloop.export.portable import with_instruction_template

    instructions = {i for _, i in served if i}
    rendered = {with_instruction_template(t, i) if t else None for t, i in served}
    if len(rendered) == 1 and None not in rendered:
        text = rendered.pop()
        path = staging / f"chat_template-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jinja"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        plan.base = replace(plan.base, chat_template=path)
        if instructions and plan.adapters:
            plan.notes.append(
                "chat template: the training one, giving a chat without a system message the "
                f"task instruction; vLLM uses one template for all models, so {BASE} gets it too"
            )
    elif instructions:
        plan.notes.append(
            "chat template: the base model's own (vLLM uses one for all models, and these were "
            "trained with different templates or instructions): send each adapter's task "
            "instruction as the system message yourself"
        )
    return plan


def _template_and_instruction(
    folder: Path, instruction: str | None
) -> tuple[str | None, str | None]:
    """The chat template saved with a trained folder (as `chat_template.jinja`, or in
    tokenizer_config.json), and the task instruction it was trained with."""
    path = folder / "chat_template.jinja"
    if path.is_file():
        return path.read_text(), instruction
    template = _read_json(folder / "tokenizer_config.json").get("chat_template")
    return (template if isinstance(template, str) else None), instruction


def _meta_instruction(folder: Path) -> str | None:
    recipe = _read_json(folder / "tuneloop.json").get("recipe") or {}
    return (recipe.get("task") or {}).get("instruction")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ---- running it -------------------------------------------------------------------------------


def not_on_vllm(options: ServeOptions, log: Path | None, log_sample: float) -> str | None:
    """One line naming what tuneloop's engine does that vLLM will not, of what was asked."""
    default = ServeOptions()
    missing = []
    if log is not None or log_sample > 0:
        missing.append(
            "the request log (--log, --log-sample: vLLM logs its own way, and tuneloop "
            "monitor reads only ours)"
        )
    if options.max_batch != default.max_batch:
        missing.append("--max-batch (vLLM batches by its own --max-num-seqs)")
    if options.max_tokens != default.max_tokens:
        missing.append("--max-tokens as a cap (vLLM bounds prompt plus answer: --max-model-len)")
    if options.max_body_bytes != default.max_body_bytes:
        missing.append("--max-body-bytes")
    if options.max_prefill_tokens != default.max_prefill_tokens:
        missing.append("--max-prefill-tokens (vLLM: --max-num-batched-tokens)")
    if options.max_pending != default.max_pending:
        missing.append("--max-pending (vLLM queues without a bound of ours)")
    if options.request_timeout_s != default.request_timeout_s:
        missing.append("--request-timeout")
    return "not on vLLM: " + "; ".join(missing) if missing else None


REQUEST_DEFAULTS = (
    "requests: vLLM's defaults are not ours; send temperature 0 (greedy, as tuneloop eval "
    "answered) and max_tokens (ours default to the run's eval.max_new_tokens)"
)


def vllm_executable() -> list[str] | None:
    """How to start vLLM here: its `vllm` script beside this Python or on PATH, else this
    Python with vLLM's command-line module; None when vLLM is not installed."""
    import importlib.util

    beside = Path(sys.executable).with_name("vllm")
    if beside.is_file():
        return [str(beside)]
    on_path = shutil.which("vllm")
    if on_path:
        return [on_path]
    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    return None


def serve_with_vllm(
    args: list[str],
    model: str | None,
    options: VllmOptions,
    workspace: Path,
    dry_run: bool,
    say,
    also_missing: str | None = None,
) -> None:
    """Print what vLLM will serve and its command; then, unless `dry_run`, become vLLM (exec:
    the signals a terminal or supervisor sends reach vLLM itself)."""
    start = None if dry_run else vllm_executable()
    if not dry_run and start is None:
        raise UserError(
            "vLLM is not installed here (neither `import vllm` nor a `vllm` command)",
            "--engine vllm",
            "on a machine with a CUDA GPU, `pip install vllm` (in a virtualenv of its own: it "
            "brings its own CUDA build of torch); `--dry-run` prints the command it would run",
        )
    plan = plan_vllm(args, model, workspace)
    argv, env = vllm_command(plan.base, plan.adapters, options)
    say(f"base model {plan.source}: {plan.base.path}, served as {' and '.join(plan.base.names)}")
    for a in plan.adapters:
        say(f"adapter {a.name}: {a.path} (LoRA rank {a.rank})")
    for line in [*plan.notes, also_missing, REQUEST_DEFAULTS]:
        if line:
            say(line)
    if options.runtime_adapters:
        ranks = [a.rank for a in plan.adapters]
        rank = max_lora_rank(ranks) if ranks else VLLM_MAX_LORA_RANK
        say(
            "runtime adapters: POST /v1/load_lora_adapter {lora_name, lora_path} loads one of "
            f"rank at most {rank}"
            + ("" if options.api_key else " (no API key: anyone who reaches the port can)")
        )
    if dry_run:
        say("vLLM command (dry run: not started):")
        say(shell_form(argv, env))
        return
    argv = [*start, *argv[1:]]
    say("starting vLLM:")
    say(shell_form(argv, env))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], argv, {**os.environ, **env})
    except OSError as exc:
        raise UserError(
            f"could not start vLLM ({argv[0]}): {exc}",
            "--engine vllm",
            "check that the vLLM install works (`vllm --help`), or run the command above yourself",
        ) from None
