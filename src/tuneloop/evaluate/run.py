"""Evaluate rungs of a run on its held-out split with the same prompts and the same metrics.

A rung is a way of answering the held-out prompts: `zero-shot` is the base model with the task's
instruction, `tuned` is the base model with the run's adapter. Each evaluation writes

    eval/<rung>.jsonl   one line per held-out item: prompt, reference, prediction, scores
    eval/<rung>.json    the summary: metrics, task kind, item count, timings

Per-item scores are kept because comparing two rungs honestly needs the paired items.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tuneloop.config import Recipe, load_recipe
from tuneloop.data.formats import read_examples
from tuneloop.data.prepare import read_data_file
from tuneloop.data.records import Example
from tuneloop.data.templates import with_instruction
from tuneloop.evaluate import metrics
from tuneloop.evaluate.generate import generate
from tuneloop.files import write_json, write_text
from tuneloop.workspace import Run

RUNGS = ("zero-shot", "tuned")


@dataclass
class RungResult:
    rung: str
    summary: dict
    items: list[dict]


def heldout_examples(run: Run, recipe: Recipe) -> list[Example]:
    """The run's held-out items: the split it saved, else the recipe's held-out file."""
    saved = run.path / "data" / "heldout.jsonl"
    examples = (
        read_examples(saved, format="messages")
        if saved.exists()
        else read_data_file(recipe, recipe.data.heldout)
    )
    examples = [with_instruction(ex, recipe.task.instruction) for ex in examples]
    return examples[: recipe.eval.max_items] if recipe.eval.max_items else examples


def task_kind(recipe: Recipe, examples: list[Example]) -> str:
    """`label` (exact match + per-label scores), `json` (validity + exact) or `text`."""
    if recipe.task.kind != "auto":
        return recipe.task.kind
    refs = [ex.reference for ex in examples]
    if all(metrics.looks_like_json(r) for r in refs):
        return "json"
    if all(ex.label is not None for ex in examples) or len(set(refs)) <= len(refs) / 2:
        return "label"
    return "text"


def score(kind: str, preds: list[str], refs: list[str]) -> tuple[dict, list[dict]]:
    """Summary metrics and per-item scores for one rung."""
    per_item: list[dict] = [{} for _ in preds]
    columns = {"exact_match": metrics.exact_match(preds, refs)}
    if kind == "json":
        columns["json_valid"] = metrics.json_validity(preds)
        columns["json_exact"] = metrics.json_exact(preds, refs)
    for name, values in columns.items():
        for item, v in zip(per_item, values, strict=True):
            item[name] = v
    summary = {name: metrics.mean(values) for name, values in columns.items()}
    if kind == "label":
        labels = metrics.label_scores(preds, refs)
        summary.update(
            accuracy=labels["accuracy"],
            macro_f1=labels["macro_f1"],
            out_of_set=labels["out_of_set"],
            per_label=labels["per_label"],
        )
    return summary, per_item


def evaluate_rung(model, tokenizer, rung: str, examples: list[Example], recipe: Recipe,
                  precision: str, progress: bool = True) -> RungResult:  # fmt: skip
    kind = task_kind(recipe, examples)
    started = time.perf_counter()
    preds = generate(
        model,
        tokenizer,
        [ex.prompt_messages for ex in examples],
        max_new_tokens=recipe.eval.max_new_tokens,
        batch_size=recipe.eval.batch_size,
        precision=precision,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    refs = [ex.reference for ex in examples]
    summary, scores = score(kind, preds, refs)
    items = [
        {
            "source": ex.source,
            "prompt": ex.prompt_messages[-1]["content"],
            "reference": ref,
            "prediction": pred,
            "scores": s,
            "meta": ex.meta,
        }
        for ex, ref, pred, s in zip(examples, refs, preds, scores, strict=True)
    ]
    summary = {"rung": rung, "task": kind, "n": len(examples), **summary,
               "seconds": round(seconds, 2)}  # fmt: skip
    return RungResult(rung, summary, items)


def save_result(run: Run, result: RungResult) -> None:
    lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in result.items)
    write_text(run.eval_dir / f"{result.rung}.jsonl", lines)
    write_json(run.eval_dir / f"{result.rung}.json", result.summary)


def evaluate_run(run: Run, rungs: tuple[str, ...] = RUNGS, progress: bool = True) -> dict:
    """Evaluate the requested rungs of a finished run; the base model is loaded once."""
    import torch

    from tuneloop.errors import UserError
    from tuneloop.models.adapters import load_adapter
    from tuneloop.models.load import load
    from tuneloop.train.loop import resolve_precision

    recipe = load_recipe(run.recipe_path)
    if "tuned" in rungs and not (run.adapter_dir / "adapter_config.json").is_file():
        raise UserError(
            f"run {run.id} has no finished adapter (status: {run.info().get('status')})",
            str(run.path),
            f"finish training first: tuneloop train --resume --run {run.path}",
        )
    examples = heldout_examples(run, recipe)
    model, tokenizer, _ = load(recipe.model.name, recipe.model.trust_remote_code)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    precision = resolve_precision(recipe.train.precision, device)
    results = {}
    for rung in rungs:
        if rung == "tuned":
            model = load_adapter(model, run.adapter_dir)
        result = evaluate_rung(model, tokenizer, rung, examples, recipe, precision, progress)
        save_result(run, result)
        results[rung] = result.summary
    return results


def load_results(run: Run) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(run.eval_dir).glob("*.json"))}
