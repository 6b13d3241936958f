"""`tuneloop advise`: measure the prompting rungs and the cost of training, then recommend."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import parse_sets, quiet_libraries, user_errors

app = typer.Typer()


@app.command()
@user_errors
def advise(
    recipe: Path = typer.Argument(Path("tuneloop.yaml"), help="Recipe file."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe field: key=value."),
    steps: int = typer.Option(3, min=0, help="Training steps to time (0: skip the estimate)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Should this task be fine-tuned? Prompting rungs, data lint, cost, license, verdict.

    Scores zero-shot, few-shot and retrieval few-shot on the held-out split (with 95% CIs),
    lists the data lint's red flags, times a few training steps, reads the model's license.
    """
    quiet_libraries()
    from tuneloop.config import load_recipe
    from tuneloop.evaluate.advise import advise as run_advise
    from tuneloop.evaluate.advise import format_advice

    result = run_advise(
        load_recipe(recipe, parse_sets(set_)), progress=not quiet, measure_steps=steps
    )
    typer.echo(format_advice(result))
