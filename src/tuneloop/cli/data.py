"""`tuneloop data ...`: curate data (lint, split, convert, stats)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import typer

from tuneloop.cli.common import default_workspace, quiet_libraries, recipe_default, user_errors
from tuneloop.errors import UserError

app = typer.Typer(help="Curate data: lint, split, convert, stats.", no_args_is_help=True)

FORMAT_HELP = "auto|messages|alpaca|sharegpt|prompt_completion|csv"


def _train_arg():
    return typer.Argument(None, help="Data file (default: the recipe's data.train).")


def _csv_options():
    """The CSV column mapping options every verb shares (None: the recipe's, then defaults)."""
    return dict(
        text_column=typer.Option(None, help="CSV: column with the user message (default: text)."),
        label_column=typer.Option(
            None, help="CSV: column with the label (default: label); 'none' for no label."
        ),
        target_column=typer.Option(None, help="CSV: column with a free-text answer."),
        system_column=typer.Option(None, help="CSV: column with a per-row system prompt."),
    )


_CSV = _csv_options()


@dataclass
class _Settings:
    """Where each setting comes from: the command line, else the recipe, else the default."""

    train: Path
    heldout: Path | None
    format: str
    csv: object
    instruction: str | None
    model: str | None
    max_length: int
    truncation: str
    train_config: object
    split: object = None  # the recipe's data.split, when a recipe is given
    chat_template: str | None = None  # --chat-template, else the recipe's model.chat_template
    workspace: Path = field(default_factory=default_workspace)  # the recipe's, else the default

    def read(self, path: Path) -> list:
        """Examples of `path` by these settings' format and CSV mapping: the one reading of a
        data file that stats, split and convert share, so a CSV row becomes the same record in
        each (lint hands the same two to its own reader)."""
        from tuneloop.data.formats import read_examples

        return read_examples(path, self.format, self.csv)


def _settings(
    train: Path | None,
    heldout: Path | None,
    recipe: Path | None,
    format: str | None,
    text_column: str | None,
    label_column: str | None,
    target_column: str | None,
    system_column: str | None,
    instruction: str | None,
    model: str | None = None,
    max_length: int | None = None,
    truncation: str | None = None,
    chat_template: str | None = None,
) -> _Settings:
    from tuneloop.config import CsvConfig, TrainConfig, load_recipe
    from tuneloop.data.csvfile import CsvColumns

    _check_options(max_length, truncation)  # a bad option is reported before a recipe loads
    loaded = load_recipe(recipe) if recipe is not None else None
    data = loaded.data if loaded else None
    if train is None:
        if data is None:
            raise UserError(
                "no data file given", "TRAIN", "name the file, or pass --recipe tuneloop.yaml"
            )
        train = data.train
        heldout = heldout or data.heldout
    base = (data.csv if data and data.csv else None) or CsvConfig()
    label = label_column if label_column is not None else base.label
    csv = CsvColumns(
        text=text_column or base.text,
        label=None if label in ("none", "") else label,
        target=target_column or base.target,
        instruction=instruction or (loaded.task.instruction if loaded else None),
        system_column=system_column,
    )
    train_config = loaded.train if loaded else TrainConfig()
    if max_length is not None or truncation is not None:
        train_config = train_config.model_copy(
            update={
                "max_length": max_length or train_config.max_length,
                "truncation": truncation or train_config.truncation,
            }
        )
    return _Settings(
        train=train,
        heldout=heldout,
        format=format or (data.format if data else "auto"),
        csv=csv,
        instruction=csv.instruction,
        model=model or (loaded.model.name if loaded else None),
        max_length=train_config.max_length,
        truncation=train_config.truncation,
        train_config=train_config,
        split=data.split if data else None,
        workspace=loaded.workspace if loaded else default_workspace(),
        chat_template=chat_template or (loaded.model.chat_template if loaded else None),
    )


def _source(
    source: Path,
    format: str,
    text_column: str | None,
    label_column: str | None,
    target_column: str | None,
    system_column: str | None,
) -> list:
    """The examples of one file, read by the command line's format and CSV mapping alone: the
    verbs that take no recipe (split, convert) read their input here."""
    s = _settings(
        source, None, None, format, text_column, label_column, target_column,
        system_column, None,
    )  # fmt: skip
    return s.read(s.train)


def _tokenizer(model: str | None, chat_template: str | None = None):
    if model is None:
        return None
    quiet_libraries()
    from tuneloop.models.load import load_tokenizer, resolve

    return load_tokenizer(resolve(model), chat_template=chat_template)


def _measured_throughput(workspace: Path, model: str, method: str) -> dict | None:
    """The workspace registry's latest measured tokens/s for the model and method, if any (a
    registry that is missing or cannot be read gives none)."""
    import sqlite3

    from tuneloop.registry import Registry
    from tuneloop.registry.queries import measured_throughput

    if not (Path(workspace) / "registry.db").is_file():
        return None
    try:
        with Registry(workspace) as reg:
            return measured_throughput(reg, model, method)
    except sqlite3.Error as err:
        typer.echo(
            f"could not read {workspace}/registry.db for a measured tokens/s: {err}", err=True
        )
        return None


def _check_options(max_length: int | None, truncation: str | None) -> None:
    if max_length is not None and max_length <= 8:
        raise UserError(f"--max-length must be greater than 8, got {max_length}", "--max-length")
    allowed = ("drop", "truncate_left", "truncate_right")
    if truncation is not None and truncation not in allowed:
        raise UserError(
            f"unknown truncation policy {truncation!r}",
            "--truncation",
            f"use one of: {', '.join(allowed)}",
        )


@app.command("lint")
@user_errors
def data_lint(
    train: Path | None = _train_arg(),
    heldout: Path | None = typer.Option(None, help="Held-out file, checked for leakage."),
    recipe: Path | None = typer.Option(None, help="Take data, CSV mapping, model from a recipe."),
    format: str | None = typer.Option(None, help=FORMAT_HELP),
    text_column: str | None = _CSV["text_column"],
    label_column: str | None = _CSV["label_column"],
    target_column: str | None = _CSV["target_column"],
    system_column: str | None = _CSV["system_column"],
    instruction: str | None = typer.Option(None, help="System prompt for examples with none."),
    model: str | None = typer.Option(None, help="Model whose tokenizer checks token lengths."),
    chat_template: str | None = typer.Option(
        None, help="Chat template (file or built-in name, e.g. chatml-tools) for --model."
    ),
    max_length: int | None = typer.Option(None, help="Token limit (default: recipe's, or 512)."),
    truncation: str | None = typer.Option(None, help="drop|truncate_left|truncate_right."),
    near_threshold: float = typer.Option(
        default_factory=recipe_default("SplitConfig", "near_threshold"),
        show_default="the recipe default",
        help="Jaccard similarity for near-duplicates; 0 turns the search off.",
    ),
    fix: Path | None = typer.Option(None, "--fix", help="Write a cleaned copy here (and a log)."),
    show_all: bool = typer.Option(False, "--all", help="List every finding in the table."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Report every problem with code, file and line. Exit 1 on errors, 0 on warnings only.

    --json prints the findings as a list of objects (code, severity, where, line, message...).

    --fix OUT writes a cleaned copy and a log beside it; the exit code still reports the input.

    Exit 2 is a usage mistake: no such file, a bad option.
    """
    from tuneloop.data.fix import write_fixed
    from tuneloop.data.lint import LintOptions, format_findings
    from tuneloop.data.lintfile import lint_files

    s = _settings(
        train, heldout, recipe, format, text_column, label_column, target_column,
        system_column, instruction, model, max_length, truncation, chat_template,
    )  # fmt: skip
    options = LintOptions(
        near_threshold=near_threshold or None,
        tokenizer=_tokenizer(s.model, s.chat_template),
        max_length=s.max_length,
        truncation=s.truncation,
        instruction=s.instruction,
    )
    report = lint_files(s.train, s.heldout, s.format, s.csv, options)
    fixed = write_fixed(report, fix) if fix is not None else None
    if as_json:
        typer.echo(json.dumps([f.to_json() for f in report.findings], indent=2, ensure_ascii=False))
        if fixed is not None:
            typer.echo(_fixed_line(fixed), err=True)
    else:
        sides = f"{s.train}: {report.n_train} {_unit(report)}"
        if s.heldout:
            sides += f", {s.heldout}: {report.n_heldout}"
        typer.echo(sides)
        typer.echo(format_findings(report.findings, None if show_all else 20))
        if fixed is not None:
            typer.echo(_fixed_line(fixed))
    if report.errors:
        raise typer.Exit(1)


def _unit(report) -> str:
    return "preference pairs" if report.kind == "preferences" else "examples"


def _fixed_line(fixed) -> str:
    return (
        f"wrote {fixed.path}: kept {fixed.kept}, dropped {fixed.dropped}, changed "
        f"{fixed.changed}; log {fixed.log_path}"
    )


@app.command("stats")
@user_errors
def data_stats(
    train: Path | None = _train_arg(),
    heldout: Path | None = typer.Option(None, help="Held-out file, counted beside train."),
    recipe: Path | None = typer.Option(None, help="Estimate training for this recipe."),
    format: str | None = typer.Option(None, help=FORMAT_HELP),
    text_column: str | None = _CSV["text_column"],
    label_column: str | None = _CSV["label_column"],
    target_column: str | None = _CSV["target_column"],
    system_column: str | None = _CSV["system_column"],
    instruction: str | None = typer.Option(None, help="System prompt for examples with none."),
    model: str | None = typer.Option(None, help="Model whose tokenizer counts tokens."),
    chat_template: str | None = typer.Option(
        None, help="Chat template (file or built-in name, e.g. chatml-tools) for --model."
    ),
    max_length: int | None = typer.Option(None, help="Token limit (default: recipe's, or 512)."),
    truncation: str | None = typer.Option(None, help="drop|truncate_left|truncate_right."),
    png: Path | None = typer.Option(None, help="Write the token-length histogram as a PNG."),
    tokens_per_second: float | None = typer.Option(
        None, help="Training throughput for the time estimate (a run prints its tokens/s)."
    ),
    workspace: Path | None = typer.Option(
        None, help="Registry whose last run of the model gives tokens/s (default: the recipe's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
) -> None:
    """Examples and labels per side, token lengths, truncation, and training tokens and time.

    The time uses --tokens-per-second, else the tokens/s the workspace's latest finished run of
    the same model and method measured, else (the embedded model only) a rough constant."""
    from tuneloop.data.stats import compute_stats, format_stats, length_summary, save_histogram

    s = _settings(
        train, heldout, recipe, format, text_column, label_column, target_column,
        system_column, instruction, model, max_length, truncation, chat_template,
    )  # fmt: skip
    examples = s.read(s.train)
    held = s.read(s.heldout) if s.heldout else []
    if s.split is not None and s.heldout is None:
        # As training will: the recipe names no held-out file, so a split of train is held out.
        from tuneloop.data.split import split_examples

        examples, held = split_examples(examples, s.split.heldout_fraction, s.split.seed)
    if png is not None and s.model is None:
        raise UserError("--png needs token lengths", "--png", "pass --model (or --recipe)")
    basis = "given"
    if tokens_per_second is None and s.model is not None:
        measured = _measured_throughput(workspace or s.workspace, s.model, s.train_config.method)
        if measured is not None:
            tokens_per_second = measured["tokens_per_s"]
            basis = (
                f"measured by run {measured['run']}: {measured['method'] or '?'} on "
                f"{measured['device'] or '?'}, {measured['updated']}"
            )
    stats = compute_stats(
        examples,
        held,
        _tokenizer(s.model, s.chat_template),
        s.train_config,
        instruction=s.instruction,
        model_name=s.model,
        tokens_per_second=tokens_per_second,
        throughput_basis=basis,
    )
    if png is not None and stats.lengths:
        save_histogram(stats.lengths, png, s.max_length, f"token lengths of {s.train.name}")
    if as_json:
        out = {
            "train": str(s.train),
            "examples": {"train": stats.n_train, "heldout": stats.n_heldout},
            "labels": {"train": stats.labels, "heldout": stats.heldout_labels},
        }
        if stats.lengths:
            out["tokens"] = length_summary(stats.lengths)
            out["truncation"] = stats.truncation.__dict__
        if stats.estimate is not None:
            e = stats.estimate
            out["estimate"] = {**e.__dict__, "seconds": e.seconds}
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        typer.echo(format_stats(stats))
        if png is not None:
            typer.echo(f"histogram: {png}")


@app.command("split")
@user_errors
def data_split(
    source: Path = typer.Argument(..., help="Data file to split."),
    out: Path = typer.Option(..., help="Folder for train.jsonl, heldout.jsonl, manifest.json."),
    heldout_fraction: float = typer.Option(0.2, min=0.01, max=0.99),
    seed: int = typer.Option(0),
    near_threshold: float = typer.Option(
        default_factory=recipe_default("SplitConfig", "near_threshold"),
        show_default="the recipe default",
        help="Keep near-duplicate prompts (Jaccard >= this) on one side; 0: exact only.",
    ),
    format: str = typer.Option("auto", help=FORMAT_HELP),
    text_column: str | None = _CSV["text_column"],
    label_column: str | None = _CSV["label_column"],
    target_column: str | None = _CSV["target_column"],
    system_column: str | None = _CSV["system_column"],
) -> None:
    """Carve a seeded, label-stratified held-out split, before anything trains."""
    from tuneloop.data.split import split_examples, write_split

    examples = _source(source, format, text_column, label_column, target_column, system_column)
    threshold = near_threshold or None
    train, heldout = split_examples(examples, heldout_fraction, seed, near_threshold=threshold)
    manifest = write_split(
        out,
        train,
        heldout,
        seed=seed,
        heldout_fraction=heldout_fraction,
        sources=[str(source)],
        near_threshold=threshold,
    )
    typer.echo(f"{len(train)} train, {len(heldout)} held-out; manifest {manifest}")


@app.command("convert")
@user_errors
def data_convert(
    source: Path = typer.Argument(..., help="Input data file."),
    target: Path = typer.Argument(..., help="Output JSONL file."),
    to: str = typer.Option("messages", help="messages|alpaca|sharegpt|prompt_completion"),
    format: str = typer.Option("auto", help="Input format."),
    text_column: str | None = _CSV["text_column"],
    label_column: str | None = _CSV["label_column"],
    target_column: str | None = _CSV["target_column"],
    system_column: str | None = _CSV["system_column"],
) -> None:
    """Convert between data formats through the canonical chat record."""
    from tuneloop.data.formats import write_examples

    examples = _source(source, format, text_column, label_column, target_column, system_column)
    write_examples(target, examples, format=to)
    typer.echo(f"wrote {len(examples)} examples to {target} ({to})")
