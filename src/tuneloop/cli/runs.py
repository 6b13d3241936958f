"""`tuneloop runs list | show | diff`: the lineage kept in the workspace's registry."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneloop.cli.common import WORKSPACE, user_errors
from tuneloop.errors import UserError

app = typer.Typer(help="Runs and their lineage: list, show, diff.", no_args_is_help=True)


def _registry(workspace: Path):
    from tuneloop.registry import Registry

    if not (workspace / "registry.db").exists():
        raise UserError(
            f"no registry in {workspace}",
            "--workspace",
            "train a run first, or pass --workspace pointing at the folder with registry.db",
        )
    return Registry(workspace)


def _find(reg, ref: str) -> dict:
    runs = reg.runs()
    exact = [r for r in runs if r["id"] == ref]
    matches = exact or [r for r in runs if ref in r["id"]]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(
            f"no run `{ref}` in the registry", fix="list runs with `tuneloop runs list`"
        )
    raise UserError(
        f"run `{ref}` is ambiguous: {', '.join(r['id'] for r in matches)}",
        fix="give more of the run id",
    )


def _headline(metrics: dict) -> str:
    keys = ("exact_match", "accuracy", "macro_f1", "json_valid", "refusal_rate", "score")
    shown = [f"{k}={metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), int | float)]
    return " ".join(shown) or "-"


def _hardware(hw: dict | None) -> str:
    """`cuda:0 (NVIDIA H200 139.8 GB)  CPU Xeon, 16 of 16 cores, 128 GB  torch 2.5.1`"""
    if not hw:
        return "-"
    gpu = f" ({hw['gpu']} {hw.get('gpu_memory_gb', '?')} GB)" if hw.get("gpu") else ""
    cores = hw.get("cpus_usable") or hw.get("cpus")
    cpu = f"CPU {hw.get('cpu', '?')}, {cores} of {hw.get('cpus', '?')} cores"
    memory = f", {hw['memory_gb']} GB" if hw.get("memory_gb") else ""
    return f"{hw.get('device', '?')}{gpu}  {cpu}{memory}  torch {hw.get('torch', '?')}"


def _lint(lint: dict) -> str:
    """`0 error(s), 2 warning(s): duplicate 1, too-few-examples 1`"""
    codes = ", ".join(f"{code} {n}" for code, n in (lint.get("codes") or {}).items())
    head = f"{lint.get('error', 0)} error(s), {lint.get('warning', 0)} warning(s)"
    return f"{head}: {codes}" if codes else head


def _provenance(p: dict) -> str:
    """Where a teacher-written dataset came from, and whether the file is still what it wrote."""
    teacher = p.get("teacher") or {}
    who = teacher.get("model") or "?"
    if teacher.get("kind") == "endpoint":
        who += f" at {teacher.get('url')}"
    prompts = p.get("prompts") or {}
    state = {True: "unchanged since", False: "EDITED since", None: "unknown whether edited since"}
    return (
        f"{p['path']}  teacher {who}, {p.get('written', '?')} answers to "
        f"{prompts.get('count', '?')} prompts of {prompts.get('file', '?')}; data "
        f"{state[p.get('matches')]} the teacher wrote it"
    )


@app.command("list")
@user_errors
def list_(workspace: Path = WORKSPACE) -> None:
    """Every run with its status, parent, model and latest held-out score."""
    from tuneloop.registry.queries import latest_metrics

    with _registry(workspace) as reg:
        rows = [("run", "status", "parent", "model", "tuned held-out")]
        for r in reg.runs():
            tuned = latest_metrics(reg, r["id"]).get("heldout/tuned", {})
            rows.append((r["id"], r["status"], r["parent_id"] or "-", r["model_name"] or "-",
                         _headline(tuned)))  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    for row in rows:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@app.command()
@user_errors
def show(run: str = typer.Argument(..., help="Run id (or a unique part of it)."),
         workspace: Path = WORKSPACE) -> None:  # fmt: skip
    """A run's lineage: hardware, datasets (with lint counts and a teacher's provenance),
    training summary, evaluations, gates, exports."""
    with _registry(workspace) as reg:
        r = _find(reg, run)
        typer.echo(f"run       {r['id']}  ({r['status']})")
        typer.echo(f"folder    {r['path']}")
        typer.echo(f"parent    {r['parent_id'] or '-'}")
        typer.echo(f"model     {r['model_name']}  weights {r['weights_sha256']}")
        typer.echo(f"hardware  {_hardware(r['hardware'])}")
        for side in ("train", "heldout"):
            ds = reg.dataset(r[f"{side}_dataset_id"]) if r[f"{side}_dataset_id"] else None
            text = (
                f"{ds['path']}  {ds['n_examples']} examples  sha256 {ds['sha256'][:16]}"
                if ds
                else "-"
            )
            typer.echo(f"{side:<9} {text}")
            if ds and ds["lint"] is not None:
                typer.echo(f"          lint {_lint(ds['lint'])}")
            if ds and ds["provenance"]:
                typer.echo(f"          provenance {_provenance(ds['provenance'])}")
        summary = r["summary"] or {}
        if summary:
            keys = ("steps", "final_loss", "tokens_per_s", "train_seconds", "precision")
            typer.echo("training  " + "  ".join(f"{k}={summary[k]}" for k in keys if k in summary))
        for ev in reg.evals(r["id"]):
            typer.echo(f"eval      {ev['suite']}/{ev['rung']}: {_headline(ev['metrics'])}")
        for g in reg.gates(r["id"]):
            verdict = "PASS" if g["passed"] else "FAIL"
            typer.echo(f"gate      {verdict} ({g['created']})")
            reasons = g["reasons"] if isinstance(g["reasons"], list) else [g["reasons"]]
            for reason in reasons:
                typer.echo(f"          - {reason}")
        for ex in reg.exports(r["id"]):
            typer.echo(f"export    {ex['kind']}: {ex['path']}")


@app.command()
@user_errors
def diff(a: str = typer.Argument(..., help="Earlier run."),
         b: str = typer.Argument(..., help="Later run."),
         workspace: Path = WORKSPACE) -> None:  # fmt: skip
    """Recipe, metric and dataset differences between two runs."""
    from tuneloop.registry.queries import run_diff

    with _registry(workspace) as reg:
        ra, rb = _find(reg, a), _find(reg, b)
        d = run_diff(reg, ra["id"], rb["id"])
    typer.echo(f"{ra['id']} -> {rb['id']}")
    typer.echo("recipe:" if d["recipe"] else "recipe: identical")
    for field, va, vb in d["recipe"]:
        typer.echo(f"  {field}: {va!r} -> {vb!r}")
    if d["data"] is None:
        typer.echo("data: not recorded for both runs")
    else:
        typer.echo("data: " + ", ".join(f"{v} {k}" for k, v in d["data"].items()))
    typer.echo("metrics:" if d["metrics"] else "metrics: none in common")
    for name, va, vb in d["metrics"]:
        typer.echo(f"  {name}: {va:.4f} -> {vb:.4f} ({vb - va:+.4f})")
