"""Serving under load: continuous against static batching, mixed adapters against one adapter.

    .venv/bin/python bench/serve/continuous.py                 # 64 requests, 1 repeat
    .venv/bin/python bench/serve/continuous.py --requests 200 --repeats 3 --check 4  # issue 15's
    .venv/bin/python bench/serve/continuous.py --quick         # 40 requests, 1 repeat: a smoke run

The embedded default model (SmolLM2-135M-Instruct) is served with three LoRA adapters made here
with random non-zero weights, each on other layers and with another rank, so a mixed batch
really mixes (saved as `tuneloop train` saves them: weights, tokenizer, tuneloop.json):

    qv8     q_proj, v_proj                            r=8
    attn16  q_proj, k_proj, v_proj, o_proj            r=16
    mlp4    gate_proj, up_proj, down_proj             r=4

Workload: N banking77 held-out questions (seeded), each a streamed chat request over real HTTP
(`create_app` + `BackgroundServer`; the client is a separate process, httpx), greedy, with
`max_tokens` drawn from 8..128 and a logit bias of -100 on every stop token, so each answer runs
to exactly its `max_tokens` and every configuration generates the same tokens. All N requests
arrive at once: the server's worker is paused while the burst arrives and resumed when all N
wait, so both batching designs start from the same queue (without that, a static batch forms
from whatever arrived in its first 2 ms). Latency and time to first token are measured by the
client from its send; the first token is the first streamed text.

Three configurations on the same request set, alternated in one run (A B C A B C ...), medians
reported:

    continuous, mixed    the engine as it serves: rows of the 3 adapters and the base in one batch
    static, mixed        `batching="static"`: a batch forms only when none runs; its ended rows
                         are computed until its last row ends, as `model.generate` did
    continuous, one      the same requests, all to `attn16` (mixed-adapter overhead: vs the first)

Afterwards a sample of the answers (both mixed configurations) is checked against the same
request sent alone to the idle server: greedy answers must not depend on what shares the batch.

Results go to bench/results/serve_continuous.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuneloop.train.session import _cpu_name

REPO = Path(__file__).resolve().parents[2]
BANKING77 = REPO.parent / "shared" / "data" / "banking77"
RESULTS = REPO / "bench" / "results" / "serve_continuous.json"
MODEL = "smollm2-135m-instruct"
BASE = "__base__"
# (name, target modules, rank)
ADAPTERS = [
    ("qv8", ["q_proj", "v_proj"], 8),
    ("attn16", ["q_proj", "k_proj", "v_proj", "o_proj"], 16),
    ("mlp4", ["gate_proj", "up_proj", "down_proj"], 4),
]
ONE = "attn16"  # the adapter of the one-adapter traffic: the most layers, the highest rank
CONFIGS = {  # name: (batching, mixed traffic)
    "continuous, mixed": ("continuous", True),
    "static, mixed": ("static", True),
    "continuous, one adapter": ("continuous", False),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--min-tokens", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--check", type=int, default=1, help="answers checked alone, per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="40 requests, 1 repeat, 1 check")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: the load generator
    args = parser.parse_args()
    if args.client:
        return client_main(args.client)
    if args.quick:
        args.requests, args.repeats, args.check = 40, 1, 1
    if not (BANKING77 / "test.csv").is_file():
        print(f"banking77 not found at {BANKING77}", file=sys.stderr)
        return 2

    from tuneloop.cli.common import quiet_libraries
    from tuneloop.serve.adapters import parse_adapter_arg
    from tuneloop.serve.app import create_app
    from tuneloop.serve.engine import Engine
    from tuneloop.serve.options import ServeOptions
    from tuneloop.serve.server import BackgroundServer

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_adapters(Path(tmp))
        specs = [parse_adapter_arg(f"{name}={folder}") for name, folder in folders.items()]
        engines = {
            batching: Engine.load(
                None,
                specs,
                ServeOptions(batching=batching, max_batch=args.max_batch, precision=args.precision),
            )
            for batching in ("continuous", "static")
        }
        stops = engines["continuous"].all_stops
        workload = make_workload(args, stops)
        with (
            BackgroundServer(create_app(engines["continuous"])) as continuous,
            BackgroundServer(create_app(engines["static"])) as static,
        ):
            servers = {"continuous": continuous, "static": static}
            for batching, server in servers.items():  # first calls load adapters, pick kernels
                warm = [dict(r, max_tokens=8) for r in workload["mixed"][:8]]
                run_client(server.url, warm, engines[batching])
            runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
            answers: dict[str, list[dict]] = {}
            for repeat in range(args.repeats):
                for name, (batching, mixed) in CONFIGS.items():
                    requests = workload["mixed" if mixed else "one"]
                    results = run_client(servers[batching].url, requests, engines[batching])
                    runs[name].append({**summarize(results), "load_1m": os.getloadavg()[0]})
                    answers[name] = results
                    s = runs[name][-1]
                    print(
                        f"repeat {repeat + 1}: {name:24} {s['wall_s']:6.1f} s  "
                        f"{s['tokens_per_s']:6.1f} tok/s  p50 {s['latency_p50_s']:5.1f} s  "
                        f"max {s['latency_max_s']:5.1f} s  ({s['complete']}/{len(requests)} "
                        "ran to max_tokens)",
                        flush=True,
                    )
            check = check_alone(continuous.url, workload["mixed"], answers, args.check, stops)
        precision = engines["continuous"].precision
    result = report(args, runs, check, precision, workload)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


# ---- the adapters and the workload ---------------------------------------------------------


def make_adapters(root: Path) -> dict[str, Path]:
    """The three LoRA adapters, random non-zero weights, saved with tokenizer and tuneloop.json
    (as tests/serve/tiny_adapters.py `make_adapter`, on the real model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneloop.models.load import load_model, load_tokenizer, resolve

    source = resolve(MODEL)
    tokenizer = load_tokenizer(source)
    folders = {}
    for i, (name, targets, r) in enumerate(ADAPTERS):
        torch.manual_seed(10 + i)
        config = LoraConfig(
            r=r,
            lora_alpha=2 * r,
            target_modules=targets,
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(load_model(source), config)
        folder = root / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        recipe = {"task": {"instruction": None}, "eval": {"max_new_tokens": 32}}
        meta = {"run": name, "base_model": MODEL, "recipe": recipe}
        (folder / "tuneloop.json").write_text(json.dumps(meta))
        folders[name] = folder
    return folders


def make_workload(args, stops: list[int]) -> dict[str, list[dict]]:
    """The request bodies: the same prompts and lengths for mixed and one-adapter traffic."""
    with (BANKING77 / "test.csv").open(newline="") as f:
        questions = [row["text"] for row in csv.DictReader(f)]
    rng = random.Random(args.seed)
    picked = rng.sample(questions, args.requests)
    models = [BASE] + [name for name, _, _ in ADAPTERS]
    bias = {str(t): -100 for t in stops}  # no stop token: each answer runs to max_tokens
    mixed, one = [], []
    for i, question in enumerate(picked):
        body = {
            "messages": [{"role": "user", "content": question}],
            "max_tokens": rng.randint(args.min_tokens, args.max_tokens),
            "temperature": 0,
            "logit_bias": bias,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        mixed.append({**body, "model": models[i % len(models)]})
        one.append({**body, "model": ONE})
    rng.shuffle(mixed)
    rng.shuffle(one)
    return {"mixed": mixed, "one": one}


# ---- the load generator (a process of its own: its timing is not held up by the server) ------


def run_client(url: str, requests: list[dict], engine) -> list[dict]:
    """Send `requests` at once from a client process; the engine's worker waits until all have
    arrived. One result per request, in order."""
    engine.pause()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--client", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write(json.dumps(requests))
    proc.stdin.close()
    deadline = time.monotonic() + 120
    while engine.pending() < len(requests) and time.monotonic() < deadline:
        time.sleep(0.005)
    if engine.pending() < len(requests):
        print(f"only {engine.pending()}/{len(requests)} requests arrived", file=sys.stderr)
    engine.resume()
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError("the client failed")
    return json.loads(out)


def client_main(url: str) -> int:
    requests = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(_send_all(url, requests))))
    return 0


async def _send_all(url: str, requests: list[dict]) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=len(requests) + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(_one(client, body, started) for body in requests))
    return results


async def _one(client, body: dict, started: float) -> dict:
    """One streamed chat request: its text, token count, time to first text and to the end."""
    sent = time.perf_counter()
    first = None
    text, tokens, reason, error = [], None, None, None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            error = f"{response.status_code}: {(await response.aread()).decode()[:200]}"
        else:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    error = event["error"].get("message")
                    break
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                for choice in event.get("choices", []):
                    content = choice["delta"].get("content")
                    if content and "role" not in choice["delta"]:
                        first = first or time.perf_counter()
                        text.append(content)
                    reason = choice.get("finish_reason") or reason
    end = time.perf_counter()
    return {
        "model": body["model"],
        "max_tokens": body["max_tokens"],
        "sent_s": sent - started,
        "latency_s": end - sent,
        "first_token_s": (first or end) - sent,
        "end_s": end - started,
        "tokens": tokens,
        "text": "".join(text),
        "finish_reason": reason,
        "error": error,
    }


# ---- numbers -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    at = (len(ordered) - 1) * q
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def summarize(results: list[dict]) -> dict:
    ok = [r for r in results if r["error"] is None]
    wall = max(r["end_s"] for r in results)
    tokens = sum(r["tokens"] or 0 for r in ok)
    latency = [r["latency_s"] for r in ok]
    first = [r["first_token_s"] for r in ok]
    return {
        "wall_s": wall,
        "output_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "requests_per_s": len(ok) / wall,
        "latency_p50_s": percentile(latency, 0.5),
        "latency_p95_s": percentile(latency, 0.95),
        "latency_max_s": max(latency),
        "first_token_p50_s": percentile(first, 0.5),
        "first_token_p95_s": percentile(first, 0.95),
        "errors": len(results) - len(ok),
        "complete": sum(r["tokens"] == r["max_tokens"] for r in ok),
        "last_sent_s": max(r["sent_s"] for r in results),
    }


def check_alone(url, requests, answers, per_model, stops) -> dict:
    """Send a sample of the mixed requests alone, one at a time, and compare each answer with
    the one it got under load in each mixed configuration; and one prompt to every model, to
    show the adapters really answer differently (so cross-talk would show)."""
    import httpx

    by_model: dict[str, list[int]] = {}
    for i, body in enumerate(requests):
        by_model.setdefault(body["model"], []).append(i)
    sample = sorted(i for idx in by_model.values() for i in idx[:per_model])
    rows = []
    with httpx.Client(base_url=url, timeout=None) as client:
        for i in sample:
            alone = _alone(client, requests[i])
            row = {"index": i, "model": requests[i]["model"], "alone": alone}
            for name in ("continuous, mixed", "static, mixed"):
                row[name] = answers[name][i]["text"] == alone
            rows.append(row)
        probe = {**requests[0], "max_tokens": 32}
        distinct = {m: _alone(client, {**probe, "model": m}) for m in by_model}
    return {
        "checked": len(rows),
        "equal": {
            name: sum(r[name] for r in rows) for name in ("continuous, mixed", "static, mixed")
        },
        "unequal": [
            {
                "index": r["index"],
                "model": r["model"],
                "alone": r["alone"],
                **{
                    n: answers[n][r["index"]]["text"]
                    for n in ("continuous, mixed", "static, mixed")
                    if not r[n]
                },
            }
            for r in rows
            if not (r["continuous, mixed"] and r["static, mixed"])
        ],
        "distinct_answers_one_prompt_every_model": len(set(distinct.values())),
        "models": len(distinct),
    }


def _alone(client, body: dict) -> str:
    text = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices", []):
                    content = choice["delta"].get("content")
                    if content and "role" not in choice["delta"]:
                        text.append(content)
    return "".join(text)


def report(args, runs: dict[str, list[dict]], check: dict, precision: str, workload) -> dict:
    keys = list(next(iter(runs.values()))[0])
    median = {
        name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()
    }
    cm, sm, one = (median[n] for n in CONFIGS)
    ratios = {
        "continuous_over_static_throughput": cm["tokens_per_s"] / sm["tokens_per_s"],
        "mixed_over_one_adapter_throughput": cm["tokens_per_s"] / one["tokens_per_s"],
        "mixed_adapter_overhead_pct": 100 * (1 - cm["tokens_per_s"] / one["tokens_per_s"]),
        "continuous_max_latency_over_static_max": cm["latency_max_s"] / sm["latency_max_s"],
    }
    paired = {  # per repeat, same position in the alternation: less exposed to drifting load
        "mixed_adapter_overhead_pct": [
            100 * (1 - c["tokens_per_s"] / o["tokens_per_s"])
            for c, o in zip(runs["continuous, mixed"], runs["continuous, one adapter"], strict=True)
        ],
        "continuous_max_over_static_max": [
            c["latency_max_s"] / s["latency_max_s"]
            for c, s in zip(runs["continuous, mixed"], runs["static, mixed"], strict=True)
        ],
    }
    goals = {
        "mixed_adapter_overhead_at_most_20pct": ratios["mixed_adapter_overhead_pct"] <= 20,
        "no_request_slower_than_static_worst": all(
            c["latency_max_s"] <= s["latency_max_s"]
            for c, s in zip(runs["continuous, mixed"], runs["static, mixed"], strict=True)
        ),
        "greedy_answers_equal_alone": all(v == check["checked"] for v in check["equal"].values()),
    }
    print()
    print(
        f"{'':24} {'wall s':>7} {'tok/s':>7} {'req/s':>6} {'p50 s':>6} {'p95 s':>6} "
        f"{'max s':>6} {'TTFT p50':>8} {'TTFT p95':>8}"
    )
    for name, m in median.items():
        print(
            f"{name:24} {m['wall_s']:7.1f} {m['tokens_per_s']:7.1f} {m['requests_per_s']:6.2f} "
            f"{m['latency_p50_s']:6.1f} {m['latency_p95_s']:6.1f} {m['latency_max_s']:6.1f} "
            f"{m['first_token_p50_s']:8.2f} {m['first_token_p95_s']:8.2f}"
        )
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    print(
        f"greedy answers equal alone: {check['equal']} of {check['checked']}; one prompt, "
        f"{check['distinct_answers_one_prompt_every_model']} distinct answers from "
        f"{check['models']} models"
    )
    print(f"goals: {goals}")
    return {
        "requests": args.requests,
        "repeats": args.repeats,
        "arrival": "all at once (worker held until every request arrived)",
        "max_batch": args.max_batch,
        "precision": precision,
        "max_tokens_range": [args.min_tokens, args.max_tokens],
        "output_tokens": sum(r["max_tokens"] for r in workload["mixed"]),
        "stop_tokens_biased": "-100 on every stop token: each answer runs to max_tokens",
        "adapters": {name: {"targets": t, "r": r} for name, t, r in ADAPTERS},
        "one_adapter": ONE,
        "machine": {
            "cpu": _cpu_name() or platform.processor(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "runs": runs,
        "median": median,
        "ratios": ratios,
        "paired_per_repeat": paired,
        "goals": goals,
        "greedy_alone": check,
    }


if __name__ == "__main__":
    sys.exit(main())
