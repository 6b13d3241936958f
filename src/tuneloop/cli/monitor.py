"""`tuneloop monitor`: live requests against the training data; drift flagged with numbers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, user_errors

app = typer.Typer()


@app.command()
@user_errors
def monitor(
    log: Path = typer.Argument(..., help="The request log tuneloop serve wrote (JSONL)."),
    run: str = typer.Option(..., help="The run whose training data the requests are compared to."),
    model: str | None = typer.Option(None, help="The served adapter name to look at."),
    min_samples: int = typer.Option(20, min=1, help="Fewer live requests are never flagged."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    strict: bool = typer.Option(False, help="Exit 1 when drift is flagged."),
    workspace: Path = WORKSPACE,
) -> None:
    """Compare sampled live requests with the run's training data (length, words, answers)."""
    from tuneloop.errors import UserError
    from tuneloop.serve.monitor import format_report, monitor_run
    from tuneloop.workspace import find_run

    if not log.is_file():
        raise UserError(
            f"request log not found: {log}", str(log), "pass the --log file of tuneloop serve"
        )
    report = monitor_run(log, find_run(run, workspace), model, min_samples)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
    if strict and report.drifted:
        raise typer.Exit(1)
