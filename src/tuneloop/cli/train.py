"""`tuneloop train`: run a recipe."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import parse_sets, quiet_libraries, user_errors
from tuneloop.errors import UserError

app = typer.Typer()


@app.command()
@user_errors
def train(
    recipe: Path | None = typer.Argument(None, help="Recipe file (default: ./tuneloop.yaml)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its checkpoint."),
    run: str | None = typer.Option(None, help="With --resume: the run (id or folder)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe field: key=value."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Train the recipe (LoRA SFT). Checkpoints every N steps; --resume continues exactly."""
    quiet_libraries()
    from tuneloop.config import load_recipe
    from tuneloop.train.sft import train as train_sft
    from tuneloop.workspace import Run, find_run, latest_run

    resume_run: Run | None = None
    if resume:
        if run is not None:
            resume_run = find_run(run, _workspace_of(recipe))
        else:
            resume_run = latest_run(_workspace_of(recipe), unfinished=True)
            if resume_run is None:
                raise UserError(
                    "--resume found no unfinished run in the workspace",
                    fix="pass --run RUN, or start a new run without --resume",
                )
        loaded = load_recipe(resume_run.recipe_path)
    else:
        loaded = load_recipe(recipe or Path("tuneloop.yaml"), parse_sets(set_))
    result = train_sft(loaded, resume=resume_run, progress=not quiet)
    from tuneloop.data.templates import TruncationReport

    info = result.info()
    typer.echo(f"truncation: {TruncationReport.from_dict(info['truncation']).summary()}")
    typer.echo(
        f"run {result.id}: {info['steps']} steps, final loss {info['final_loss']:.4f}, "
        f"{info['tokens_per_s']:.0f} tokens/s\nadapter: {result.adapter_dir}"
    )


def _workspace_of(recipe: Path | None) -> Path:
    from tuneloop.config import load_recipe

    path = recipe or Path("tuneloop.yaml")
    return load_recipe(path).workspace if path.exists() else Path(".tuneloop")
