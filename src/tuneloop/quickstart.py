"""`tuneloop quickstart`: the whole loop on the embedded default model, in a few minutes on a CPU.

generate the example dataset -> lint -> split (held-out first) -> LoRA training ->
evaluation of the zero-shot baseline and the tuned model on the same held-out items -> verdict
-> the ship gate (the other ladder rungs, regression and safety probes) -> HTML report.
Every step is recorded in the workspace registry: `tuneloop runs show RUN` prints the lineage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tuneloop.config import DEFAULT_MODEL, Recipe, SplitConfig, load_recipe
from tuneloop.data.examples import SUPPORT_INSTRUCTION, write_support_intents
from tuneloop.data.formats import read_examples
from tuneloop.data.lint import format_findings, lint_examples
from tuneloop.data.split import split_examples, write_split
from tuneloop.data.templates import TruncationReport
from tuneloop.errors import UserError
from tuneloop.evaluate.license import check_license, license_line
from tuneloop.files import write_text
from tuneloop.workspace import Run

# Tuned on this machine (2 CPU cores): see docs/quickstart.md for the measurements.
QUICKSTART_TRAIN = {
    "epochs": 2,
    "batch_size": 8,
    "lr": 1e-3,
    "warmup_ratio": 0.05,
    "schedule": "cosine",
    "max_length": 256,
    "checkpoint_every": 20,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
}


@dataclass
class QuickstartResult:
    run: Run
    results: dict[str, dict]
    recipe_path: Path
    gate_passed: bool | None = None  # None: the gate was skipped

    @property
    def gain(self) -> float:
        return self.results["tuned"]["exact_match"] - self.results["zero-shot"]["exact_match"]


def quickstart_recipe(folder: Path, model: str = DEFAULT_MODEL, **train_overrides) -> dict:
    return {
        "name": "quickstart",
        "workspace": str(Recipe.model_fields["workspace"].default),
        "model": {"name": model},
        "data": {"train": "data/train.jsonl", "heldout": "data/heldout.jsonl"},
        "task": {"kind": "label", "instruction": SUPPORT_INSTRUCTION},
        "train": {**QUICKSTART_TRAIN, **train_overrides},
        "eval": {"max_new_tokens": 12, "batch_size": 32},
    }


def run_quickstart(
    folder: Path,
    say: Callable[[str], None] = print,
    model: str = DEFAULT_MODEL,
    n_per_label: int = 40,
    progress: bool = True,
    gate: bool = True,
    **train_overrides,
) -> QuickstartResult:
    from tuneloop.evaluate.run import evaluate_run
    from tuneloop.train.session import train

    folder = Path(folder)
    data_dir = folder / "data"
    say(f"1/8 dataset: writing the Acme support-intent examples to {data_dir}/support.jsonl")
    source = write_support_intents(data_dir / "support.jsonl", n_per_label=n_per_label, seed=0)
    examples = read_examples(source, format="messages")

    say(f"2/8 lint: {len(examples)} examples")
    findings = lint_examples(examples)
    say(format_findings(findings))
    if any(f.severity == "error" for f in findings):
        raise UserError("the generated dataset failed lint", str(source), "report this as a bug")

    # Near-duplicates stay on one side, as `tuneloop data split` keeps them.
    train_ex, heldout_ex = split_examples(
        examples, heldout_fraction=0.2, seed=0, near_threshold=SplitConfig().near_threshold
    )
    manifest = write_split(
        data_dir, train_ex, heldout_ex, seed=0, heldout_fraction=0.2, sources=[str(source)]
    )
    say(f"3/8 split: {len(train_ex)} train / {len(heldout_ex)} held-out (manifest {manifest})")

    recipe_path = folder / "tuneloop.yaml"
    recipe_dict = quickstart_recipe(folder, model, **train_overrides)
    write_text(recipe_path, yaml.safe_dump(recipe_dict, sort_keys=False))
    recipe = load_recipe(recipe_path)

    say(f"4/8 train: LoRA r={recipe.train.lora.r} on {recipe.model.name}")
    lic = check_license(recipe.model.name, recipe.model.license_ack)  # before weights load
    say(f"    {license_line(lic, recipe.model.license_ack)}")
    run = train(recipe, progress=progress)
    info = run.info()
    say(f"    truncation: {TruncationReport.from_dict(info['truncation']).summary()}")
    say(
        f"    {info['steps']} steps, {info['tokens']} tokens in {info['train_seconds']:.0f} s "
        f"({info['tokens_per_s']:.0f} tokens/s), final loss {info['final_loss']:.4f}"
    )

    say("5/8 evaluate: zero-shot baseline and tuned model on the same held-out items")
    results = evaluate_run(run, progress=progress)

    say("6/8 verdict")
    say(verdict_table(results))

    gate_passed = None
    if gate:
        from tuneloop.evaluate.gate import format_gate, run_gate

        say("7/8 gate: the other ladder rungs and the regression and safety probes")
        report = run_gate(run, progress=progress)
        say(format_gate(report))
        gate_passed = report.passed
    else:
        say(f"7/8 gate: skipped (run it with: tuneloop gate {run.id})")

    from tuneloop.report.html import build_report

    say(f"8/8 report: {build_report(run)}")
    say(f"run folder: {run.path}   lineage: tuneloop runs show {run.id}")
    return QuickstartResult(run, results, recipe_path, gate_passed)


def verdict_table(results: dict[str, dict]) -> str:
    base, tuned = results["zero-shot"], results["tuned"]
    decides = tuned.get("metric")  # the task's metric first, then the kind's usual ones
    names = (decides, "exact_match", "accuracy", "macro_f1", "json_valid", "json_exact")
    keys = [k for k in dict.fromkeys(names) if k and k in base and k in tuned]
    rows = [("metric", "zero-shot", "tuned", "gain")]
    for k in keys:
        rows.append((k, f"{base[k]:.1%}", f"{tuned[k]:.1%}", f"{tuned[k] - base[k]:+.1%}"))
    rows.append(("items", str(base["n"]), str(tuned["n"]), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
