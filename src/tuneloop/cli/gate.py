"""`tuneloop gate RUN`: exit 0 only if the tuned model clearly wins and nothing else broke."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, quiet_libraries, user_errors

app = typer.Typer()


@app.command()
@user_errors
def gate(
    run: str = typer.Argument(..., help="Run id or folder."),
    workspace: Path = WORKSPACE,
    fresh: bool = typer.Option(False, help="Re-evaluate everything instead of reusing results."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Ship or not: exit 0 only if the tuned model clearly wins and nothing else broke.

    Tuned must beat the best ladder rung by gate.margin with the CI above zero; general-skill
    probes, safety refusals and over-refusal must stay within tolerance. Exit 1 otherwise,
    with each failed condition and its numbers.
    """
    quiet_libraries()
    from tuneloop.evaluate.gate import format_gate, run_gate
    from tuneloop.workspace import find_run

    report = run_gate(find_run(run, workspace), progress=not quiet, fresh=fresh)
    typer.echo(format_gate(report))
    raise typer.Exit(0 if report.passed else 1)
