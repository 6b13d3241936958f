"""`tuneloop serve`: an OpenAI-compatible server of one base model and many adapters."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, quiet_libraries, user_errors
from tuneloop.serve.options import ServeOptions

app = typer.Typer()


D = ServeOptions()


@app.command()
@user_errors
def serve(
    adapters: list[str] = typer.Argument(
        None, help="Adapters to serve: [NAME=]RUN, a run id or folder, or an adapter folder."
    ),
    model: str | None = typer.Option(
        None, help="Base model (default: the one the adapters were trained on)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000),
    api_key: str | None = typer.Option(
        None, envvar="TUNELOOP_API_KEY", help="Require `Authorization: Bearer KEY` on /v1."
    ),
    cache_size: int = typer.Option(D.cache_size, min=1, help="Adapters kept loaded at once."),
    max_batch: int = typer.Option(D.max_batch, min=1, help="Requests generated together."),
    max_tokens: int = typer.Option(
        D.max_tokens, min=1, help="Largest max_tokens a request may ask."
    ),
    max_prompt_tokens: int = typer.Option(D.max_prompt_tokens, min=1),
    max_prefill_tokens: int = typer.Option(
        D.max_prefill_tokens, min=1, help="Prompt tokens admitted into a running batch per step."
    ),
    max_pending: int = typer.Option(
        D.max_pending, min=1, help="Requests waiting before new ones get 429 with Retry-After."
    ),
    request_timeout: float = typer.Option(
        D.request_timeout_s, min=0.001, help="Seconds before an unanswered request gets a 504."
    ),
    max_body_bytes: int = typer.Option(D.max_body_bytes, min=1),
    precision: str = typer.Option(D.precision, help="auto, bf16 or fp32 (as in training)."),
    log: Path | None = typer.Option(
        None, help="Sampled log of requests and answers (default: WORKSPACE/serve/requests.jsonl)."
    ),
    log_sample: float = typer.Option(0.1, min=0.0, max=1.0, help="Share of requests logged."),
    engine_name: str = typer.Option(
        "tuneloop",
        "--engine",
        help="tuneloop (this package's engine) or vllm (runs `vllm serve`, on GPUs).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="With --engine vllm: print vLLM's command and exit."
    ),
    allow_runtime_adapters: bool = typer.Option(
        False,
        "--allow-runtime-adapters",
        help="Let clients load and unload adapters (POST /v1/load_lora_adapter, "
        "/v1/unload_lora_adapter).",
    ),
    adapter_root: list[Path] = typer.Option(
        None,
        "--adapter-root",
        help="With --allow-runtime-adapters: a folder adapters may be loaded from (repeatable; "
        "default: the workspace). Our engine only: vLLM cannot restrict where.",
    ),
    workspace: Path = WORKSPACE,
) -> None:
    """Serve adapters over one base model: /v1/chat/completions, /v1/completions, /metrics."""
    quiet_libraries()
    from tuneloop.errors import UserError

    if precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"unknown precision {precision!r}", "--precision", "auto, bf16 or fp32")
    if engine_name not in ("tuneloop", "vllm"):
        raise UserError(f"unknown engine {engine_name!r}", "--engine", "tuneloop or vllm")
    options = ServeOptions(
        cache_size=cache_size,
        max_batch=max_batch,
        max_tokens=max_tokens,
        max_prompt_tokens=max_prompt_tokens,
        max_prefill_tokens=max_prefill_tokens,
        max_pending=max_pending,
        request_timeout_s=request_timeout,
        max_body_bytes=max_body_bytes,
        precision=precision,
    )
    if engine_name == "vllm":
        if adapter_root:
            raise UserError(
                "vLLM loads adapters from any path it is sent; it cannot be held to roots",
                "--adapter-root",
                "drop --adapter-root with --engine vllm (or serve with our engine)",
            )
        from tuneloop.serve.vllm_engine import VllmOptions, not_on_vllm, serve_with_vllm

        vllm = VllmOptions(host, port, api_key, allow_runtime_adapters, options)
        missing = not_on_vllm(options, log, log_sample)
        serve_with_vllm(adapters or [], model, vllm, workspace, dry_run, typer.echo, missing)
        return
    if dry_run:
        raise UserError("--dry-run is for vLLM", "--dry-run", "add --engine vllm, or drop it")
    if adapter_root and not allow_runtime_adapters:
        raise UserError(
            "--adapter-root without --allow-runtime-adapters does nothing",
            "--adapter-root",
            "add --allow-runtime-adapters, or drop --adapter-root",
        )
    roots = (adapter_root or [workspace]) if allow_runtime_adapters else None

    from tuneloop.serve.adapters import parse_adapter_arg
    from tuneloop.serve.app import create_app
    from tuneloop.serve.engine import Engine
    from tuneloop.serve.requestlog import RequestLog
    from tuneloop.serve.server import serve_forever

    specs = [parse_adapter_arg(a, workspace) for a in adapters or []]
    engine = Engine.load(model, specs, options)
    log = log or workspace / "serve" / "requests.jsonl"
    request_log = RequestLog(log, rate=log_sample) if log_sample > 0 else None
    typer.echo(f"base model: {engine.base_name} ({engine.precision})")
    for spec in specs:
        typer.echo(f"adapter {spec.name}: {spec.path}, on {spec.served_on}")
    typer.echo(
        f"OpenAI-compatible API on http://{host}:{port}/v1"
        + ("  (API key required)" if api_key else "")
    )
    if roots:
        typer.echo("adapters may be loaded at run time from: " + ", ".join(map(str, roots)))
    app_ = create_app(engine, api_key=api_key, log=request_log, adapter_roots=roots)
    serve_forever(app_, host, port)
