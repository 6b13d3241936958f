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
    ui,
)
from tuneloop.cli.common import quiet_libraries, user_errors
from tuneloop.errors import UserError

app = typer.Typer(
    help="The fine-tuning loop: curate data, train, evaluate against the baseline, decide.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def setup(
    ctx: typer.Context,
    no_cache: bool = typer.Option(
        False,
        "--no-cache",
        help="Generate every answer afresh: neither read nor write the cache of answers "
        "($TUNELOOP_CACHE/generations, else ~/.cache/tuneloop/generations). "
        "TUNELOOP_NO_CACHE=1 does the same.",
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Say how many torch threads were chosen, and why."
    ),
) -> None:
    """Before any verb: torch threads for this machine (`generate.choose_threads`) unless
    OMP_NUM_THREADS is set, and the cache of generated answers for this command."""
    import os

    from tuneloop.models import generate as gen

    env_before = os.environ.get("OMP_NUM_THREADS")
    restore_threads = None
    if not env_before:
        threads, why = gen.choose_threads(gen.usable_cores(), gen.load_average())
        if "torch" in sys.modules:  # already imported (a test calling the CLI): set it directly
            torch = sys.modules["torch"]
            restore_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        else:  # read by torch's OpenMP runtime when it loads, and by child processes
            os.environ["OMP_NUM_THREADS"] = str(threads)
        if verbose:
            typer.echo(f"torch threads: {threads} ({why}; set OMP_NUM_THREADS to choose)", err=True)
    elif verbose:
        typer.echo(f"torch threads: OMP_NUM_THREADS={env_before}, as set", err=True)
    off = no_cache or gen.cache_off_by_env()
    cache_before = gen.use_cache(None if off else gen.GenerationCache(gen.default_cache_folder()))
    if verbose:
        where = "off" if off else str(gen.default_cache_folder())
        typer.echo(f"generation cache: {where}", err=True)

    def restore() -> None:
        # The command is over; a test that calls the CLI in-process gets its state back.
        gen.use_cache(cache_before)
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        elif not env_before:
            os.environ["OMP_NUM_THREADS"] = env_before
        if restore_threads is not None:
            sys.modules["torch"].set_num_threads(restore_threads)

    ctx.call_on_close(restore)


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
app.add_typer(ui.app)


if __name__ == "__main__":  # pragma: no cover
    app()
