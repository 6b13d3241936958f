"""The ladder on a knowledge-base task: zero-shot, few-shot, RAG, a "hosted" endpoint and a tuned
model answering questions only a product handbook answers, with quality, CI, latency and cost.

    .venv/bin/python bench/knowledge/handbook_ladder.py [--work /tmp/tl-bench/handbook]

1. `handbook.py` writes the fictional handbook (36 pages) and its 270 questions;
2. the recipe holds out 40% of the questions (the same split for every rung), asks for the
   `contains` metric (the short reference found in the answer), and points task.knowledge at
   the handbook (BM25, top 3 passages of at most 120 words);
3. `tuneloop serve` serves the embedded model on 127.0.0.1 as the "hosted" endpoint
   (eval.endpoints, asked zero-shot and with RAG), priced as a hosted small model;
4. `tuneloop advise` scores every rung; `tuneloop train` fine-tunes LoRA on the training
   questions; `tuneloop eval` scores the rungs and the tuned model on the run's held-out items;
   `tuneloop compare` tests RAG against zero-shot; `tuneloop gate` decides; `tuneloop report`
   writes the report with the RAG rung's failures and their retrieved passages.

Every command is the real command line; answers are cached in the work folder, so a second
run re-uses them (and the latencies measured the first time). Results:
bench/knowledge/results/handbook_ladder.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results"
TUNELOOP = [sys.executable, "-m", "tuneloop.cli.main"]

# A hosted small model's list price, USD per million tokens: gpt-4o-mini at its launch
# (OpenAI, July 2024: $0.15 input, $0.60 output). The served model is the embedded one; the
# price only shows how the cost column reads.
PRICE_IN, PRICE_OUT = 0.15, 0.60
# This machine's price per hour: about what a 2-vCPU cloud VM costs on demand (an AWS
# c7i.large in us-east-1 listed $0.089/hour in 2024).
PRICE_PER_HOUR = 0.09
INSTRUCTION = "Answer the question about the company's products with the exact value only."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tuneloop(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    print("$ tuneloop " + " ".join(args), flush=True)
    done = subprocess.run([*TUNELOOP, *args], env=env, capture_output=True, text=True)
    print(done.stdout[-4000:], flush=True)
    if check and done.returncode not in (0, 1):
        print(done.stderr[-4000:], flush=True)
        raise SystemExit(f"tuneloop {args[0]} failed with {done.returncode}")
    return done


def serve(port: int, env: dict) -> subprocess.Popen:
    command = [*TUNELOOP, "serve", "--model", "smollm2-135m-instruct", "--port", str(port),
               "--log-sample", "0"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("tuneloop serve exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return server
        except OSError:
            time.sleep(0.5)
    raise SystemExit("tuneloop serve did not come up")


def recipe(work: Path, url: str) -> dict:
    return {
        "name": "handbook",
        "workspace": str(work / ".tuneloop"),
        "data": {"train": str(work / "kb" / "questions.jsonl"),
                 "split": {"heldout_fraction": 0.4, "seed": 0}},
        "task": {
            "kind": "text",
            "metric": "contains",
            "instruction": INSTRUCTION,
            "target": 0.8,
            "knowledge": {"paths": [str(work / "kb" / "handbook")], "k": 3, "chunk_words": 120,
                          "overlap_words": 20},
        },
        "train": {"method": "lora", "epochs": 3, "batch_size": 8, "lr": 0.001},
        "eval": {
            # The embedded model restates the question before the value ("The Lugufir Rozir
            # ships with firmware version 3.28.9."): the derived budget (the longest reference
            # plus 8 tokens) cut most answers before the value, so every rung gets 48.
            "max_new_tokens": 48,
            "batch_size": 16,
            "price_per_hour": PRICE_PER_HOUR,
            "endpoints": [{
                "name": "hosted", "url": url, "model": "__base__",
                "price_in": PRICE_IN, "price_out": PRICE_OUT,
                "prompts": ["zero-shot", "rag"], "concurrency": 8,
            }],
        },
        "gate": {"rungs": ["zero-shot", "few-shot", "rag"]},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tl-bench/handbook"))
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TUNELOOP_CACHE": str(work / "cache"), "OMP_NUM_THREADS": "2"}
    env.pop("TUNELOOP_NO_CACHE", None)
    subprocess.run([sys.executable, str(HERE / "handbook.py"), "--out", str(work / "kb")],
                   check=True)  # fmt: skip
    port = free_port()
    server = serve(port, env)
    timings = {}
    try:
        path = work / "handbook.yaml"
        path.write_text(yaml.safe_dump(recipe(work, f"http://127.0.0.1:{port}/v1")))
        started = time.perf_counter()
        tuneloop("advise", str(path), "--quiet", env=env)
        timings["advise_s"] = round(time.perf_counter() - started, 1)
        advice_file = max((work / ".tuneloop" / "advice").glob("*.json"),
                          key=lambda p: p.stat().st_mtime_ns)  # fmt: skip
        advice = json.loads(advice_file.read_text())
        started = time.perf_counter()
        tuneloop("train", str(path), "--quiet", env=env)
        timings["train_s"] = round(time.perf_counter() - started, 1)
        run = max((work / ".tuneloop" / "runs").iterdir(), key=lambda p: p.stat().st_mtime_ns)
        rungs = ["zero-shot", "few-shot", "rag", "hosted", "hosted+rag", "tuned"]
        started = time.perf_counter()
        tuneloop("eval", str(run), "--quiet", *[a for r in rungs for a in ("--rung", r)], env=env)
        timings["eval_s"] = round(time.perf_counter() - started, 1)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    compare = tuneloop("compare", f"{run}:zero-shot", f"{run}:rag", "--json", env=env)
    gated = tuneloop("gate", str(run), "--quiet", env=env)
    tuneloop("report", str(run), env=env)
    summaries = {r: json.loads((run / "eval" / f"{r}.json").read_text()) for r in rungs}
    table = {
        r: {
            "contains": s["contains"],
            "ci": [s["ci"]["contains"]["low"], s["ci"]["contains"]["high"]],
            "n": s["n"],
            "prompt_tokens_mean": s["prompt_tokens_mean"],
            "latency_p50_s": s["cost"]["latency_p50_s"],
            "latency_p95_s": s["cost"]["latency_p95_s"],
            "cost_per_1k": s["cost"]["cost_per_1k"],
            "cost_basis": s["cost"]["cost_basis"],
            "retrieval": s.get("retrieval", {}).get("hit_rate"),
        }
        for r, s in summaries.items()
    }
    results = {
        "command": "python bench/knowledge/handbook_ladder.py",
        "heldout": advice["n_heldout"],
        "train": advice["n_train"],
        "advice": {"verdict": advice["verdict"], "reasons": advice["reasons"]},
        "run": table,
        "rag_vs_zero_shot": json.loads(compare.stdout)["paired"],
        "gate": json.loads((run / "gate.json").read_text())["reasons"],
        "gate_exit": gated.returncode,
        "report": str(run / "report.html"),
        "timings": timings,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "handbook_ladder.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(table, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
