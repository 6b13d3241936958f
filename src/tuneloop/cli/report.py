"""`tuneloop report RUN`: one self-contained HTML report of a run."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, user_errors
from tuneloop.cli.refine import BELOW

app = typer.Typer()


@app.command()
@user_errors
def report(
    run: str = typer.Argument(..., help="Run id or folder."),
    below: float = BELOW,
    workspace: Path = WORKSPACE,
) -> None:
    """Write <run>/report.html: data audit, loss, rungs vs tuned, slices, probes, gate,
    preferences, failures."""
    from tuneloop.report.html import build_report
    from tuneloop.workspace import find_run

    path = build_report(find_run(run, workspace), below)
    typer.echo(f"report: {path}")
