"""The ladder and the gate on banking77: a good LoRA run passes, on 200 held-out items.

    .venv/bin/python bench/evaluation/banking77_gate.py [--work /tmp/tl-bench/banking77]

An 8-intent subset (every 9th of the 77 labels, five of them about cards) keeps training to
minutes on 2 CPU cores: 40 training queries per label from train.csv, 25 held-out per label
from test.csv (200 items), plus 40 general assistant answers replayed to keep old skills.
The gate evaluates zero-shot, few-shot (one example per label) and retrieval
few-shot (4 BM25 neighbours) on the base model, the tuned model on the same 200 items and on
64 of its training items, and the shipped probes for both; all generation is batched (32 a
batch). Then 32 held-out items are answered one at a time and 32 at a time, to measure what
batching buys.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BANKING77,
    gate,
    save_results,
    train_recipe,
    write_jsonl,
    write_recipe,
)


def subset(folder: Path, n_labels: int = 8, n_train: int = 40, n_heldout: int = 25):
    """Chat JSONL of an n_labels-intent subset: n_train per label for train, n_heldout for
    held-out, no query on both sides (banking77 repeats a few across its files)."""
    labels = json.loads((BANKING77 / "categories.json").read_text())[::9][:n_labels]
    instruction = (
        f"Classify the banking customer query into exactly one intent. Allowed labels: "
        f"{', '.join(labels)}. Answer with the label only."
    )
    out, texts = {}, set()
    for split, source, n in (("train", "train.csv", n_train), ("heldout", "test.csv", n_heldout)):
        rows, seen = [], dict.fromkeys(labels, 0)
        with open(BANKING77 / source, newline="") as f:
            for row in csv.DictReader(f):
                text, label = row["text"], row["category"]
                key = " ".join(text.split()).casefold()
                if label in seen and seen[label] < n and key not in texts:
                    seen[label] += 1
                    texts.add(key)
                    rows.append(
                        {
                            "messages": [
                                {"role": "system", "content": instruction},
                                {"role": "user", "content": text},
                                {"role": "assistant", "content": label},
                            ],
                            "meta": {"label": label},
                        }
                    )
        out[split] = rows
    return labels, out["train"], out["heldout"]


def replay_rows() -> list[dict]:
    """General assistant answers written by us (`safety_data.BENIGN_TRAIN`), under the model's
    default system prompt: replayed during training so that the adapter keeps answering
    ordinary requests as an assistant (without them, 2 epochs on labels cost 9.5 points of the
    general probes). The ladder draws no shots from them: they are not the task's prompts."""
    from safety_data import BENIGN_TRAIN

    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    return [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in BENIGN_TRAIN
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/tl-bench/banking77"))
    args = parser.parse_args()
    if not (BANKING77 / "train.csv").is_file():
        sys.exit(f"banking77 not found at {BANKING77}")
    labels, train, heldout = subset(args.work / "data")
    train_path = write_jsonl(args.work / "data" / "train.jsonl", train + replay_rows())
    heldout_path = write_jsonl(args.work / "data" / "heldout.jsonl", heldout)
    recipe = {
        "name": "banking8",
        "workspace": str(args.work / ".tuneloop"),
        "data": {"train": str(train_path), "heldout": str(heldout_path)},
        "task": {"kind": "label"},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 1e-3,
            "max_length": 256,
            "checkpoint_every": 100,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        },
        "eval": {
            "max_new_tokens": 12,
            "batch_size": 32,
            "few_shot_k": len(labels),
            "retrieval_k": 4,
            "slices": ["label"],
        },
    }
    path = write_recipe(args.work, recipe)
    run, train_s = train_recipe(path)
    info = run.info()
    print(
        f"trained {run.id}: {info['steps']} steps in {train_s} s, "
        f"{info['tokens_per_s']} tokens/s, final loss {info['final_loss']:.4f}",
        flush=True,
    )
    report, gate_s = gate(run)
    summaries = {p.stem: json.loads(p.read_text()) for p in run.eval_dir.glob("*.json")}
    rungs = {
        r: {
            "metric": s["metric"],
            "score": s[s["metric"]],
            "ci": s["ci"][s["metric"]],
            "n": s["n"],
            "seconds": s["seconds"],
            "prompt_tokens_mean": s["prompt_tokens_mean"],
        }
        for r, s in summaries.items()
        if r != "gate"
    }
    batching = measure_batching(run, n=32)
    save_results(
        "banking77_gate",
        {
            "run": run.id,
            "labels": labels,
            "train_seconds": train_s,
            "gate_seconds": gate_s,
            "train": {k: info[k] for k in ("steps", "tokens", "tokens_per_s", "final_loss")},
            "rungs": rungs,
            "gate": report.to_dict(),
            "batching": batching,
        },
    )


def measure_batching(run, n: int) -> dict:
    """Seconds to answer n held-out items one prompt at a time and in one batch."""
    import torch

    from tuneloop.config import load_recipe
    from tuneloop.evaluate.run import heldout_examples
    from tuneloop.models.adapters import load_adapter
    from tuneloop.models.generate import generate
    from tuneloop.models.load import load
    from tuneloop.models.precision import resolve_precision

    recipe = load_recipe(run.recipe_path)
    prompts = [ex.prompt_messages for ex in heldout_examples(run, recipe)[:n]]
    model, tokenizer, _ = load(recipe.model.name)
    model = load_adapter(model, run.adapter_dir)
    precision = resolve_precision(recipe.train.precision, torch.device("cpu"))
    out = {"items": n, "max_new_tokens": recipe.eval.max_new_tokens}
    for batch_size in (1, n):
        started = time.perf_counter()
        answers = generate(
            model, tokenizer, prompts, recipe.eval.max_new_tokens, batch_size, precision
        )
        out[f"batch_{batch_size}_seconds"] = round(time.perf_counter() - started, 2)
        out[f"batch_{batch_size}_answers"] = answers
    pairs = zip(out["batch_1_answers"], out[f"batch_{n}_answers"], strict=True)
    out["same_answers"] = sum(a == b for a, b in pairs)
    print(
        f"batching: {n} items one at a time {out['batch_1_seconds']} s, "
        f"{n} at a time {out[f'batch_{n}_seconds']} s; same answers: {out['same_answers']}/{n}"
    )
    for key in ("batch_1_answers", f"batch_{n}_answers"):
        del out[key]
    return out


if __name__ == "__main__":
    main()
