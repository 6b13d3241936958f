"""`tuneloop distill generate`: a teacher answers a prompt file; the answers become SFT data."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import quiet_libraries, user_errors

app = typer.Typer(help="Distillation: let a teacher model write training data.")


@app.command()
@user_errors
def generate(
    teacher: str = typer.Option(
        ..., help="A local model (name, folder, .gguf) or an OpenAI-compatible URL (http://.../v1)."
    ),
    prompts: Path = typer.Option(..., help="Prompts: .txt (a line each) or .jsonl."),
    out: Path = typer.Option(..., help="Where to write the SFT dataset (messages JSONL)."),
    adapter: Path | None = typer.Option(
        None, help="A local teacher's adapter (or a run's model folder)."
    ),
    model: str | None = typer.Option(None, help="The model name to ask an endpoint for."),
    max_new_tokens: int = typer.Option(256, min=1),
    temperature: float = typer.Option(0.0, min=0.0, help="Endpoint sampling temperature."),
    instruction: str | None = typer.Option(None, help="System prompt for prompts without one."),
    batch_size: int = typer.Option(8, min=1, help="Prompts per batch for a local teacher."),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", help="Environment variable holding the endpoint's API key, if any."
    ),
) -> None:
    """Answer every prompt with the teacher; write the dataset and its provenance beside it."""
    quiet_libraries()
    from tuneloop.files import provenance_path
    from tuneloop.train.teacher import generate_dataset, make_teacher

    chosen = make_teacher(teacher, adapter, model, api_key_env, batch_size)
    result = generate_dataset(chosen, prompts, out, max_new_tokens, temperature, instruction)
    typer.echo(
        f"wrote {result['written']} examples to {out} ({result['skipped_empty']} empty answers "
        f"skipped) in {result['seconds']:.1f}s\nprovenance: {provenance_path(out)}\n"
        f"next: tuneloop data lint {out}"
    )
