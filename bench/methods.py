"""Every training method on the embedded default model with banking77 text: a few steps each,
then what was saved is loaded back on a fresh base and must give the held-out loss the run
logged at its last step.

    python bench/methods.py                       # all methods, 4 steps each
    python bench/methods.py --methods lora dora --steps 8

Prints one row per method (and merges it into bench/results/methods.json): trainable parameters,
first and last training loss, the held-out loss logged in training, the same loss recomputed
from the saved adapter (or weights) after reloading, and the seconds taken.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BANKING77 = REPO.parent / "shared" / "data" / "banking77"
METHODS = ["full", "lora", "qlora", "dora", "ia3", "prefix", "prompt"]
LR = {"full": 2e-5, "lora": 1e-3, "qlora": 1e-3, "dora": 1e-3, "ia3": 3e-3,
      "prefix": 1e-2, "prompt": 3e-2}  # fmt: skip
INSTRUCTION = "Classify the banking customer message into one intent. Answer with the label only."


def write_data(folder: Path, n_train: int, n_heldout: int) -> tuple[Path, Path]:
    rows = list(csv.DictReader((BANKING77 / "train.csv").open(encoding="utf-8")))
    train, heldout = folder / "train.csv", folder / "heldout.csv"
    for path, part in ((train, rows[:n_train]), (heldout, rows[-n_heldout:])):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "category": r["category"]} for r in part)
    return train, heldout


def recipe_for(method: str, folder: Path, train: Path, heldout: Path, steps: int):
    from tuneloop.config import validate_recipe

    return validate_recipe({
        "name": f"bench-{method}",
        "workspace": str(folder / "ws"),
        "data": {"train": str(train), "heldout": str(heldout),
                 "csv": {"text": "text", "label": "category"}},
        "task": {"instruction": INSTRUCTION},
        "train": {"method": method, "max_steps": steps, "batch_size": 4, "lr": LR[method],
                  "max_length": 128, "eval_every": steps, "checkpoint_every": 1000,
                  "warmup_ratio": 0.0, "schedule": "constant"},
    })  # fmt: skip


def reloaded_eval_loss(recipe, run) -> float:
    """Held-out loss of base + saved output, computed exactly as the loop computed it."""
    from tuneloop.models.adapters import load_base, load_trained
    from tuneloop.models.precision import resolve_precision
    from tuneloop.train import session
    from tuneloop.train.loop import evaluate_loss
    from tuneloop.train.sft import sft_loss

    source, _, data = session.prepare(recipe)
    device = torch.device("cpu")
    precision = resolve_precision(recipe.train.precision, device)
    base = None if recipe.train.method == "full" else load_base(source, recipe.train, precision)
    model = load_trained(base, run.info()["output"])
    held = [data.collate(data.heldout[i : i + 4]) for i in range(0, len(data.heldout), 4)]
    return evaluate_loss(model, sft_loss, held, device, precision)["eval_loss"]


def save(rows: list[dict]) -> None:
    """Merge into bench/results/methods.json by method, after every method (a long run that is
    cut short keeps what it measured)."""
    out = REPO / "bench" / "results" / "methods.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(out.read_text()) if out.exists() else []
    done = {r["method"] for r in rows}
    merged = [r for r in kept if r["method"] not in done] + rows
    merged.sort(key=lambda r: METHODS.index(r["method"]))
    out.write_text(json.dumps(merged, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--train", type=int, default=64, help="banking77 rows to train on")
    parser.add_argument("--heldout", type=int, default=16)
    args = parser.parse_args()
    if not (BANKING77 / "train.csv").is_file():
        print(f"banking77 not found at {BANKING77}", file=sys.stderr)
        return 2
    from tuneloop.cli.common import quiet_libraries
    from tuneloop.train.session import train

    quiet_libraries()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_data(folder, args.train, args.heldout)
        for method in args.methods:
            recipe = recipe_for(method, folder, *data, args.steps).resolved(folder)
            started = time.perf_counter()
            run = train(recipe, progress=False)
            seconds = time.perf_counter() - started
            info = run.info()
            log = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
            reloaded = reloaded_eval_loss(recipe, run)
            output = Path(info["output"])
            rows.append({
                "method": method,
                "trainable": info["memory_estimate"]["trainable_params"],
                "precision": info["precision"],
                "first_loss": log[0]["loss"],
                "last_loss": log[-1]["loss"],
                "eval_loss_logged": log[-1]["eval_loss"],
                "eval_loss_reloaded": reloaded,
                "saved": output.name,
                "saved_mb": round(sum(f.stat().st_size for f in output.iterdir()) / 2**20, 1),
                "train_seconds": round(seconds, 1),
            })  # fmt: skip
            r = rows[-1]
            save(rows)
            print(f"{method:7} trainable {r['trainable']:>11,}  loss {r['first_loss']:.3f} -> "
                  f"{r['last_loss']:.3f}  held-out {r['eval_loss_logged']:.5f} logged, "
                  f"{r['eval_loss_reloaded']:.5f} reloaded from {r['saved']}/ "
                  f"({r['saved_mb']} MB)  {r['train_seconds']}s", flush=True)  # fmt: skip
    bad = [r["method"] for r in rows
           if abs(r["eval_loss_logged"] - r["eval_loss_reloaded"]) > 1e-4]  # fmt: skip
    if bad:
        print(f"reloaded output does not reproduce the trained model: {bad}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
