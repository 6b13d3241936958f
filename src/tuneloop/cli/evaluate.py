"""`tuneloop eval`: score rungs on the held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tuneloop.cli.common import quiet_libraries, user_errors
from tuneloop.errors import UserError

app = typer.Typer()


@app.command("eval")
@user_errors
def eval_(
    run: str = typer.Argument(..., help="Run id or folder."),
    rung: list[str] = typer.Option(["zero-shot", "tuned"], help="Rungs to evaluate."),
    workspace: Path = typer.Option(Path(".tuneloop")),
    quiet: bool = typer.Option(False),
) -> None:
    """Evaluate the zero-shot baseline and the tuned model on the run's held-out items."""
    quiet_libraries()
    from tuneloop.evaluate.run import RUNGS, evaluate_run
    from tuneloop.quickstart import verdict_table
    from tuneloop.workspace import find_run

    unknown = [r for r in rung if r not in RUNGS]
    if unknown:
        raise UserError(f"unknown rung(s) {unknown}", "--rung", f"choose from {', '.join(RUNGS)}")
    target = find_run(run, workspace)
    results = evaluate_run(target, tuple(rung), progress=not quiet)
    if {"zero-shot", "tuned"} <= results.keys():
        typer.echo(verdict_table(results))
    else:
        typer.echo(json.dumps(results, indent=2))
    typer.echo(f"per-item results: {target.eval_dir}")
