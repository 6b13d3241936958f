"""What every verb shares: user errors printed without a traceback, quiet libraries."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import typer

from tuneloop.errors import UserError


def recipe_default(model: str, field: str) -> Callable[[], Any]:
    """A command-line option's default that is a recipe default: `field` of the class `model`
    in config.py (`recipe_default("SplitConfig", "near_threshold")()` is 0.8), read when a verb
    runs, since importing the recipe's model for every `--help` would slow it down."""

    def default() -> Any:
        from tuneloop import config

        return getattr(config, model).model_fields[field].default

    return default


default_workspace = recipe_default("Recipe", "workspace")
WORKSPACE = typer.Option(
    default_factory=default_workspace,
    show_default="the recipe default",
    help="Workspace folder holding registry.db and runs/.",
)


def quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, advisory warnings) out of the user's way."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes (imported by PEFT) warns at import that an optional hub kernel is missing;
    # its own CPU path is used instead, so the warning tells the user nothing actionable.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", module="transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def user_errors(fn):
    """Print a `UserError` as `error: ...` on stderr and exit 2: never a traceback. What the
    library says with a `UserWarning` (say, shots drawn from all of train) is printed as one
    `warning: ...` line, not as a Python warning with a file name and a source line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err.render()}", err=True)
            raise typer.Exit(2) from None
        except RecursionError:
            # The readers name the line of a too-deeply nested record; this is the net for a
            # reader that does not (a first look at a file, before it is read line by line).
            typer.echo(
                "error: the input holds a value nested too deeply for Python to follow (more "
                "levels of lists and objects than its recursion limit)\n"
                "  fix: `tuneloop data lint FILE` names the line; if the data is fine, this is a "
                "bug in tuneloop: please report it",
                err=True,
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; a run can continue with `tuneloop train --resume`", err=True)
            raise typer.Exit(130) from None

    return wrapper


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, UserWarning) and not issubclass(category, DeprecationWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def parse_sets(values: list[str]) -> dict:
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
