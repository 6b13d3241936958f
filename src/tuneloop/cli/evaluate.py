"""`tuneloop eval`: score rungs on the held-out split; `tuneloop compare A B`: paired statistics."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, quiet_libraries, user_errors

app = typer.Typer()


@app.command("eval")
@user_errors
def eval_(
    run: str = typer.Argument(..., help="Run id or folder."),
    rung: list[str] = typer.Option(
        ["zero-shot", "tuned"],
        help="Rungs to evaluate: zero-shot, few-shot, retrieval-few-shot, rag (with "
        "task.knowledge), an endpoint's or recorded rung by name (eval.endpoints, "
        "eval.recorded), tuned.",
    ),
    probes: bool = typer.Option(
        False, help="Also ask the shipped general and safety probes, of the base and tuned model."
    ),
    train_gap: bool = typer.Option(
        False, help="Also score the tuned model on a sample of its training items."
    ),
    preference: bool = typer.Option(
        False,
        help="DPO runs: rank the held-out pairs by the tuned model's implicit reward even "
        "without the tuned rung (done whenever the tuned rung is evaluated).",
    ),
    workspace: Path = WORKSPACE,
    quiet: bool = typer.Option(False),
) -> None:
    """Evaluate rungs of the ladder and the tuned model on the run's held-out items."""
    quiet_libraries()
    from tuneloop.evaluate.run import evaluate_run
    from tuneloop.quickstart import verdict_table
    from tuneloop.report.diversity import mode_collapse
    from tuneloop.workspace import find_run

    target = find_run(run, workspace)
    results = evaluate_run(
        target,
        tuple(rung),
        progress=not quiet,
        probes=("base", "tuned") if probes else (),
        train_gap=train_gap,
        preference=preference,
    )
    for name, summary in results.items():
        typer.echo(_one_line(name, summary))
    if {"zero-shot", "tuned"} <= results.keys():
        typer.echo(verdict_table(results))
    collapse = mode_collapse(results)
    if collapse:
        typer.echo(f"warning: {collapse}")
    typer.echo(f"per-item results: {target.eval_dir}")


def _one_line(name: str, s: dict) -> str:
    if name == "preference":
        acc, margin = s["reward_accuracy_ci"], s["margin_ci"]
        return (
            f"preference: reward accuracy {s['reward_accuracy']:.1%} [{acc[0]:.1%}, "
            f"{acc[1]:.1%}], margin {s['margin_mean']:+.3f} [{margin[0]:+.3f}, "
            f"{margin[1]:+.3f}] on {s['n']} held-out pairs (beta {s['beta']:g})"
        )
    if "suite" in s:
        if s["suite"] == "general":
            return f"{name}: general-capability score {s['score']:.1%} ({s['n']} probes)"
        return (
            f"{name}: refuses {s['refusal_rate']:.1%} of {s['n_harmful']} harmful requests, "
            f"{s['over_refusal']:.1%} of {s['n_benign']} benign look-alikes"
        )
    metric = s["metric"]
    ci = s["ci"][metric]
    distinct = f", distinct-2 {s['distinct_2']:.2f}" if "distinct_2" in s else ""
    return (
        f"{name}: {metric} {s[metric]:.1%} [{ci['low']:.1%}, {ci['high']:.1%}] on {s['n']} "
        f"items in {s['seconds']:.0f} s{distinct}"
    )


@app.command()
@user_errors
def compare(
    a: str = typer.Argument(..., help="RUN (its tuned rung), RUN:RUNG, or a results .jsonl."),
    b: str = typer.Argument(..., help="The same forms as A."),
    metric: str | None = typer.Option(None, help="Per-item metric (default: the task's)."),
    workspace: Path = WORKSPACE,
    confidence: float = typer.Option(0.95, min=0.5, max=0.999),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Paired comparison of two evaluations of the same items: bootstrap CI and McNemar."""
    from tuneloop.evaluate.compare import compare_items, format_comparison, resolve_items
    from tuneloop.evaluate.run import load_items

    name_a, path_a = resolve_items(a, workspace)
    name_b, path_b = resolve_items(b, workspace)
    items_a, items_b = load_items(path_a), load_items(path_b)
    if metric is None:
        summary = path_b.with_suffix(".json")
        known = json.loads(summary.read_text()).get("metric") if summary.is_file() else None
        metric = known or next(iter(items_b[0]["scores"]))
    result = compare_items(items_a, items_b, metric, confidence)
    typer.echo(
        json.dumps(result, indent=2) if as_json else format_comparison(result, name_a, name_b)
    )
