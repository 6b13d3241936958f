"""The `tuneloop` command line. It parses, calls the library and prints; no logic lives here.

Each area of the loop has its own module of verbs, merged here into one `tuneloop` command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from tuneloop.cli import (
    advise,
    data,
    distill,
    evaluate,
    export,
    gate,
    monitor,
    refine,
    report,
    runs,
    serve,
    train,
)
from tuneloop.cli.common import quiet_libraries, user_errors
from tuneloop.errors import UserError

app = typer.Typer(
    help="The fine-tuning loop: curate data, train, evaluate against the baseline, decide.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@user_errors
def init(
    folder: Path = typer.Argument(Path("."), help="Where to write tuneloop.yaml."),
    force: bool = typer.Option(False, help="Overwrite an existing tuneloop.yaml."),
) -> None:
    """Write a starter recipe (tuneloop.yaml) with every section and its defaults."""
    from tuneloop.files import write_text
    from tuneloop.recipe_template import STARTER_RECIPE

    target = folder / "tuneloop.yaml"
    if target.exists() and not force:
        raise UserError(f"{target} already exists", str(target), "pass --force to overwrite it")
    write_text(target, STARTER_RECIPE)
    typer.echo(f"wrote {target}; point data.train at your data, then run `tuneloop train`")


@app.command()
@user_errors
def quickstart(
    folder: Path = typer.Option(Path("quickstart"), "--dir", help="Folder for data and runs."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    gate: bool = typer.Option(True, help="Run the ship gate (ladder rungs and probes)."),
) -> None:
    """The whole loop on the embedded model: data, lint, split, train, evaluate, verdict, gate,
    report."""
    quiet_libraries()
    from tuneloop.quickstart import run_quickstart

    progress = not quiet and sys.stderr.isatty()
    result = run_quickstart(folder, say=typer.echo, progress=progress, gate=gate)
    verdict = {None: "not run", True: "PASS", False: "FAIL"}[result.gate_passed]
    typer.echo(f"gain in exact match over the zero-shot baseline: {result.gain:+.1%}; "
               f"ship gate: {verdict}")  # fmt: skip


app.add_typer(data.app, name="data")
app.add_typer(train.app)
app.add_typer(distill.app, name="distill")
app.add_typer(evaluate.app)
app.add_typer(advise.app)
app.add_typer(gate.app)
app.add_typer(runs.app, name="runs")
app.add_typer(report.app)
app.add_typer(refine.app)
app.add_typer(serve.app)
app.add_typer(export.app)
app.add_typer(monitor.app)


if __name__ == "__main__":  # pragma: no cover
    app()
