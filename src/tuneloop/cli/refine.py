"""`tuneloop failures` and `tuneloop review`: feed what failed back into the next dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, user_errors

app = typer.Typer()
review_app = typer.Typer(help="Blind human review: export pairs, import ratings.",
                         no_args_is_help=True)  # fmt: skip
BELOW = typer.Option(
    0.5,
    min=0.0,
    max=1.0,
    help="For partial-credit metrics (rouge_l, chrf, json_fields, judge): an item scoring below "
    "this failed. 0/1 metrics fail an item at 0 whatever it is.",
)


@app.command()
@user_errors
def failures(
    run: str = typer.Argument(..., help="Run id or folder."),
    out: Path = typer.Option(..., help="JSONL file to write."),
    k: int = typer.Option(3, help="Nearest training examples per failure."),
    below: float = BELOW,
    workspace: Path = WORKSPACE,
) -> None:
    """Export failed held-out items with their nearest training examples, for curation.

    Failed is judged by the metric the evaluation recorded (task.metric,
    else the task kind's default): a 0 on a 0/1 metric, a score below
    --below on a partial-credit one.
    """
    from tuneloop.refine import export_failures, tuned_failure_rule
    from tuneloop.workspace import find_run

    found = find_run(run, workspace)
    rule = tuned_failure_rule(found, below)
    n = export_failures(found, out, k, rule)
    typer.echo(f"wrote {n} failed items to {out}; {rule.explain()}")


@review_app.command("export")
@user_errors
def review_export(
    run: str = typer.Argument(..., help="Run id or folder."),
    out: Path = typer.Option(..., help="JSONL of blind pairs for raters."),
    against: str = typer.Option("zero-shot", help="The rung the tuned model is compared with."),
    seed: int = typer.Option(0),
    workspace: Path = WORKSPACE,
) -> None:
    """Blind side-by-side pairs (order shuffled, identities hidden) for people to rate."""
    from tuneloop.refine import export_review
    from tuneloop.workspace import find_run

    n = export_review(find_run(run, workspace), out, against, seed)
    typer.echo(f'wrote {n} pairs to {out}; raters write lines {{"id": ..., "winner": a|b|tie}}')


@review_app.command("import")
@user_errors
def review_import(
    run: str = typer.Argument(..., help="Run id or folder."),
    ratings: Path = typer.Argument(..., help="JSONL of ratings."),
    workspace: Path = WORKSPACE,
) -> None:
    """Unblind and count ratings; saved with the run for compare and the report."""
    from tuneloop.refine import import_ratings
    from tuneloop.workspace import find_run

    s = import_ratings(find_run(run, workspace), ratings)
    rate = f"{s['win_rate']:.1%}" if s["win_rate"] is not None else "-"
    p = f"{s['sign_test_p']:.3g}" if s["sign_test_p"] is not None else "-"
    typer.echo(
        f"tuned vs {s['against']}: {s['tuned_wins']} wins, {s['tuned_losses']} losses, "
        f"{s['ties']} ties; win rate {rate} (sign test p={p})"
    )


app.add_typer(review_app, name="review")
