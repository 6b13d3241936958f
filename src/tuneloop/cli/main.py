"""The `tuneloop` command line. It parses, calls the library and prints; no logic lives here."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import typer

from tuneloop.errors import UserError

app = typer.Typer(
    help="The fine-tuning loop: curate data, train, evaluate against the baseline, decide.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Curate data: lint, split, convert.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, advisory warnings) out of the user's way."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", module="transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def user_errors(fn):
    """Print a `UserError` as `error: ...` on stderr and exit 2: never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err.render()}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; a run can continue with `tuneloop train --resume`", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _parse_sets(values: list[str]) -> dict:
    """`--set train.lr=0.001` pairs, values parsed as YAML scalars."""
    import yaml

    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(
                f"--set expects key=value, got {item!r}", "--set", "e.g. --set train.lr=0.001"
            )
        out[key.strip()] = yaml.safe_load(raw)
    return out


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


@data_app.command("lint")
@user_errors
def data_lint(
    train: Path = typer.Argument(..., help="Training data file."),
    heldout: Path | None = typer.Option(None, help="Held-out file, checked for leakage."),
    format: str = typer.Option("auto", help="auto|messages|alpaca|sharegpt|prompt_completion|csv"),
    text_column: str = typer.Option("text", help="CSV: column with the user message."),
    label_column: str = typer.Option("label", help="CSV: column with the label."),
    as_json: bool = typer.Option(False, "--json", help="Print findings as JSON."),
) -> None:
    """Read a dataset and report problems with file and line. Exit 1 when there are errors."""
    from tuneloop.data.formats import CsvColumns, read_examples
    from tuneloop.data.lint import format_findings, lint_examples

    csv = CsvColumns(text=text_column, label=label_column)
    examples = read_examples(train, format=format, csv=csv)
    held = read_examples(heldout, format=format, csv=csv) if heldout else None
    findings = lint_examples(examples, held)
    if as_json:
        typer.echo(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        typer.echo(
            f"{train}: {len(examples)} examples" + (f", {heldout}: {len(held)}" if held else "")
        )
        typer.echo(format_findings(findings))
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)


@data_app.command("split")
@user_errors
def data_split(
    source: Path = typer.Argument(..., help="Data file to split."),
    out: Path = typer.Option(..., help="Folder for train.jsonl, heldout.jsonl, manifest.json."),
    heldout_fraction: float = typer.Option(0.2, min=0.01, max=0.99),
    seed: int = typer.Option(0),
    format: str = typer.Option("auto"),
    text_column: str = typer.Option("text"),
    label_column: str = typer.Option("label"),
) -> None:
    """Carve a seeded, label-stratified held-out split, before anything trains."""
    from tuneloop.data.formats import CsvColumns, read_examples
    from tuneloop.data.split import split_examples, write_split

    examples = read_examples(
        source, format=format, csv=CsvColumns(text=text_column, label=label_column)
    )
    train, heldout = split_examples(examples, heldout_fraction, seed)
    manifest = write_split(
        out, train, heldout, seed=seed, heldout_fraction=heldout_fraction, sources=[str(source)]
    )
    typer.echo(f"{len(train)} train, {len(heldout)} held-out; manifest {manifest}")


@data_app.command("convert")
@user_errors
def data_convert(
    source: Path = typer.Argument(..., help="Input data file."),
    target: Path = typer.Argument(..., help="Output JSONL file."),
    to: str = typer.Option("messages", help="messages|alpaca|sharegpt|prompt_completion"),
    format: str = typer.Option("auto", help="Input format."),
    text_column: str = typer.Option("text"),
    label_column: str = typer.Option("label"),
) -> None:
    """Convert between data formats through the canonical chat record."""
    from tuneloop.data.formats import CsvColumns, read_examples, write_examples

    examples = read_examples(
        source, format=format, csv=CsvColumns(text=text_column, label=label_column)
    )
    write_examples(target, examples, format=to)
    typer.echo(f"wrote {len(examples)} examples to {target} ({to})")


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
    _quiet_libraries()
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
        loaded = load_recipe(recipe or Path("tuneloop.yaml"), _parse_sets(set_))
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


@app.command("eval")
@user_errors
def eval_(
    run: str = typer.Argument(..., help="Run id or folder."),
    rung: list[str] = typer.Option(["zero-shot", "tuned"], help="Rungs to evaluate."),
    workspace: Path = typer.Option(Path(".tuneloop")),
    quiet: bool = typer.Option(False),
) -> None:
    """Evaluate the zero-shot baseline and the tuned model on the run's held-out items."""
    _quiet_libraries()
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


@app.command()
@user_errors
def quickstart(
    folder: Path = typer.Option(Path("quickstart"), "--dir", help="Folder for data and runs."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """The whole loop on the embedded model: data, lint, split, train, evaluate, verdict."""
    _quiet_libraries()
    from tuneloop.quickstart import run_quickstart

    result = run_quickstart(folder, say=typer.echo, progress=not quiet and sys.stderr.isatty())
    typer.echo(f"gain in exact match over the zero-shot baseline: {result.gain:+.1%}")


if __name__ == "__main__":  # pragma: no cover
    app()
