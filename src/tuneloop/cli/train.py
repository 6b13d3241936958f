"""`tuneloop train`: run a recipe."""

from __future__ import annotations

import os
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
    """Train the recipe: any method (full, lora, qlora, dora, ia3, prefix, prompt) and objective
    (sft, dpo, distill). Prints a memory estimate first; checkpoints every N steps; --resume
    continues exactly. Under `accelerate launch` it runs on every process (DDP, or FSDP for
    full fine-tuning)."""
    quiet_libraries()
    from tuneloop.config import load_recipe
    from tuneloop.evaluate.license import check_license, license_line
    from tuneloop.train.session import train as run_training
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
    # Before any weights load: refuse a restrictive license the recipe does not acknowledge.
    model = loaded.model
    lic = check_license(model.name, model.license_ack, model.trust_remote_code)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(license_line(lic, model.license_ack))
    result = run_training(loaded, resume=resume_run, progress=not quiet, say=typer.echo)
    if int(os.environ.get("RANK", "0")) != 0:  # a multi-process run reports once
        return
    info = result.info()
    from tuneloop.data.templates import TruncationReport

    typer.echo(f"truncation: {TruncationReport.from_dict(info['truncation']).summary()}")
    typer.echo(
        f"run {result.id}: {info['method']} {info['objective']}, {info['steps']} steps, final "
        f"loss {info['final_loss']:.4f}, {info['tokens_per_s']:.0f} tokens/s"
    )
    if info.get("best_eval_loss") is not None:
        stopped = " (stopped early)" if info.get("stopped_early") else ""
        typer.echo(
            f"held-out loss: best {info['best_eval_loss']:.4f} at step {info['best_step']}{stopped}"
        )
    label = "weights" if info["method"] == "full" else "adapter"
    typer.echo(f"{label}: {info['output']}")


def _workspace_of(recipe: Path | None) -> Path:
    from tuneloop.config import Recipe, load_recipe

    path = recipe or Path("tuneloop.yaml")
    if path.exists():
        return load_recipe(path).workspace
    return Recipe.model_fields["workspace"].default
