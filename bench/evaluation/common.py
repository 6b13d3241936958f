"""Helpers the evaluation demonstrations share: folders, recipes, training, the gate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BANKING77 = REPO.parent / "shared" / "data" / "banking77"
RESULTS = Path(__file__).resolve().parent / "results"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_recipe(folder: Path, recipe: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def train_recipe(path: Path):
    """Train a recipe file through the library; return the run and the seconds it took."""
    from tuneloop.config import load_recipe
    from tuneloop.train.session import train

    started = time.perf_counter()
    run = train(load_recipe(path), progress=False)
    return run, round(time.perf_counter() - started, 1)


def gate(run):
    from tuneloop.evaluate.gate import format_gate, run_gate

    started = time.perf_counter()
    report = run_gate(run, progress=False)
    seconds = round(time.perf_counter() - started, 1)
    print(format_gate(report), flush=True)
    return report, seconds


def train_and_gate(path: Path, recipe: dict, script: str, argv: list[str]) -> tuple:
    """Train the recipe file, gate the run against zero-shot; (run, gate report, the results
    every such demonstration saves: command, recipe, seconds, hardware, held-out scores, gate)."""
    run, train_s = train_recipe(path)
    report, gate_s = gate(run)
    tuned = json.loads((run.eval_dir / "tuned.json").read_text())
    base = json.loads((run.eval_dir / "zero-shot.json").read_text())
    metric = tuned["metric"]
    results = {
        "command": f"python {script} " + " ".join(argv),
        "recipe": recipe,
        "run": run.id,
        "train_seconds": train_s,
        "gate_seconds": gate_s,
        "hardware": json.loads((run.path / "run.json").read_text()).get("hardware"),
        "heldout": {
            "n": tuned["n"],
            "metric": metric,
            "base": base[metric],
            "tuned": tuned[metric],
            "base_ci": base["ci"][metric],
            "tuned_ci": tuned["ci"][metric],
        },
        "gate": json.loads((run.path / "gate.json").read_text()),
    }
    print(f"train {train_s}s, gate {gate_s}s", flush=True)
    return run, report, results


def save_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {path}", flush=True)
    return path
