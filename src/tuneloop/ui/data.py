"""The data page of a run: its train and held-out data linted as `tuneloop data lint` lints
them (every finding with its file:line), label balance, and length histograms.

The examples are those the run trained and was evaluated on (`data.prepare.run_examples`): the
split saved in the run folder, else the files its resolved recipe names. Those files may lie
outside the workspace; no path is taken from the request, only the run's id.
"""

from __future__ import annotations

from collections import Counter

from tuneloop.errors import UserError
from tuneloop.report import figures
from tuneloop.ui.layout import chart, esc, page
from tuneloop.ui.store import PageError, Workspace

FINDINGS_SHOWN = 500


def _tokenizer(run):
    """The tokenizer the run saved with its adapter, or None (lengths are then in words)."""
    for folder in (run.adapter_dir, run.path / "model"):
        if (folder / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            try:
                return AutoTokenizer.from_pretrained(folder)
            except Exception:  # a tokenizer that will not load: fall back to words
                return None
    return None


def data_page(ws: Workspace, run_id: str) -> str:
    run = ws.run(run_id)
    from tuneloop.config import load_recipe
    from tuneloop.data.lint import LintOptions, lint_examples
    from tuneloop.data.prepare import run_examples

    try:
        recipe = load_recipe(ws.inside(run.recipe_path))
        train, heldout = (run_examples(recipe, run.path / "data", s) for s in ("train", "heldout"))
    except UserError as err:
        problem = err.problems[0]
        raise PageError(
            422,
            "the run's data cannot be read",
            problem.render(),
            "the data files the run names were moved or changed",
        ) from None
    except FileNotFoundError as err:
        raise PageError(
            404,
            "the run's data is gone",
            str(err),
            "the data files the run names were moved or deleted",
        ) from None
    findings = []
    if recipe.train.objective != "dpo":
        options = LintOptions(
            near_threshold=recipe.data.split.near_threshold or None,
            instruction=recipe.task.instruction,
        )
        findings = lint_examples(train, heldout, options)
    parts = [
        f'<p>Run <a href="/runs/{esc(run.id)}">{esc(run.id)}</a>: {len(train)} train and '
        f"{len(heldout)} held-out examples (train: {esc(recipe.data.train)}).</p>"
    ]
    severities = Counter(f.severity for f in findings)
    rows = "".join(
        f'<tr data-severity="{esc(f.severity)}"><td>{esc(f.severity)}</td><td>{esc(f.code)}</td>'
        f"<td><code>{esc(f.where)}</code></td><td>{esc(f.message)}</td>"
        f"<td>{esc(f.fix or '')}</td></tr>"
        for f in findings[:FINDINGS_SHOWN]
    )
    parts.append(
        f"<h2>Lint ({severities['error']} errors, {severities['warning']} warnings)</h2>"
        + (
            f'<table id="findings"><tr><th>severity</th><th>code</th><th>where</th>'
            f"<th>message</th><th>fix</th></tr>{rows}</table>"
            if findings
            else "<p>No findings.</p>"
        )
    )
    labels = {
        "train": Counter(ex.label for ex in train if ex.label),
        "held-out": Counter(ex.label for ex in heldout if ex.label),
    }
    if any(labels.values()):
        parts.append("<h2>Label balance</h2>" + chart(figures.labels(labels), "label balance"))
    else:
        parts.append("<h2>Label balance</h2><p>None: the examples carry no label.</p>")
    tokenizer = _tokenizer(run)
    unit = "tokens (the run's tokenizer)" if tokenizer else "words"

    def length(text: str) -> int:
        return len(tokenizer(text)["input_ids"]) if tokenizer else len(text.split())

    for side, examples in (("train", train), ("held-out", heldout)):
        if not examples:
            continue
        prompts = [
            length("\n".join(str(m.get("content") or "") for m in ex.prompt_messages))
            for ex in examples
        ]
        answers = [length(ex.reference) for ex in examples]
        parts.append(
            f"<h2>Lengths: {side}</h2>"
            + chart(figures.histogram(prompts, f"prompt length, {unit}"), f"{side} prompts")
            + chart(figures.histogram(answers, f"answer length, {unit}"), f"{side} answers")
        )
    return page(f"Data of {run.id}", "".join(parts), str(ws.root))
