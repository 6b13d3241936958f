"""`tuneloop data ...`: curate data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tuneloop.cli.common import user_errors

app = typer.Typer(help="Curate data: lint, split, convert.", no_args_is_help=True)


@app.command("lint")
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


@app.command("split")
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


@app.command("convert")
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
