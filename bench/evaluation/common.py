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


def save_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {path}", flush=True)
    return path
