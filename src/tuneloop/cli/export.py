"""`tuneloop export`: merged weights, GGUF, an Ollama Modelfile, a vLLM adapter folder."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, quiet_libraries, user_errors

app = typer.Typer()


@app.command("export")
@user_errors
def export_(
    run: str = typer.Argument(..., help="Run id or folder, or an adapter folder."),
    merge: bool = typer.Option(False, "--merge", help="Merged safetensors (logits checked)."),
    gguf: bool = typer.Option(False, "--gguf", help="GGUF for llama.cpp (read back, checked)."),
    quant: list[str] = typer.Option(["f16"], help="GGUF types: f16, q8_0 (repeatable)."),
    ollama: bool = typer.Option(False, "--ollama", help="GGUF plus an Ollama Modelfile."),
    vllm: bool = typer.Option(False, "--vllm", help="The adapter for vLLM, if vLLM accepts it."),
    out: Path | None = typer.Option(None, help="Output folder (default: RUN/export)."),
    probes: int | None = typer.Option(
        None, min=1, help="Check on the first N held-out prompts (default: all of them)."
    ),
    workspace: Path = WORKSPACE,
) -> None:
    """Export a run's adapter; every export is verified against the adapter model."""
    quiet_libraries()
    from tuneloop.errors import UserError
    from tuneloop.export.gguf import QUANTS
    from tuneloop.export.run import export

    unknown = [q for q in quant if q not in QUANTS]
    if unknown:
        raise UserError(f"unknown GGUF type(s) {unknown}", "--quant", f"choose from {QUANTS}")
    result = export(
        run,
        out,
        merge=merge,
        quants=tuple(dict.fromkeys(quant)) if gguf or ollama else (),
        ollama=ollama,
        vllm=vllm,
        n_probes=probes,
        workspace=workspace,
        say=typer.echo,
    )
    for check in result.checks:
        typer.echo(f"{'ok  ' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    for name, path in result.files.items():
        typer.echo(f"{name}: {path}")
    for name, command in result.commands.items():
        typer.echo(f"use ({name}): {command}")
    typer.echo(f"record: {result.out / 'export.json'}")
    if not result.ok:
        raise typer.Exit(1)
