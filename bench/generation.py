"""Evaluation generation: batched with a KV cache against one prompt at a time, in one run.

    .venv/bin/python bench/generation.py                  # 64 held-out items, 3 repeats
    .venv/bin/python bench/generation.py --items 64 --batch-size 32 --repeats 3

Both sides are `tuneloop.models.generate.generate`, the function every rung, probe and gate
uses, on the embedded default model with the same 64 banking77 held-out prompts (the 8-intent
subset of bench/evaluation/banking77_gate.py, system instruction listing the labels), greedy,
at most 32 new tokens, stopping at the end-of-turn token, bf16 autocast where the CPU has it:
once with `batch_size=1` (one prompt at a time, KV cache on), once batched (prompts sorted by
length, left-padded, one KV cache for the batch). The two alternate over the repeats; the
median of each is compared. The answers of the two are compared too: batching must not change
what the model says (padding can move bf16 rounding, so the count of identical answers is
reported rather than assumed).

Results go to bench/results/generation.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "evaluation"))
from common import BANKING77  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (BANKING77 / "test.csv").is_file():
        print(f"banking77 not found at {BANKING77}", file=sys.stderr)
        return 2
    import torch
    from banking77_gate import subset

    from tuneloop.cli.common import quiet_libraries
    from tuneloop.models.generate import generate
    from tuneloop.models.load import load
    from tuneloop.models.precision import resolve_precision

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        _, _, heldout = subset(Path(tmp), 8, 1, (args.items + 7) // 8)
    prompts = [row["messages"][:-1] for row in heldout][: args.items]
    model, tokenizer, _ = load("smollm2-135m-instruct")
    precision = resolve_precision("auto", torch.device("cpu"))

    def timed(batch_size: int) -> tuple[float, list[str]]:
        started = time.perf_counter()
        answers = generate(model, tokenizer, prompts, args.max_new_tokens, batch_size, precision)
        return time.perf_counter() - started, answers

    timed(args.batch_size)  # warm-up: first calls allocate and pick kernels
    seconds: dict[str, list[float]] = {"one at a time": [], "batched": []}
    answers: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        order = [("one at a time", 1), ("batched", args.batch_size)]
        for name, size in order if repeat % 2 == 0 else order[::-1]:
            s, answers[name] = timed(size)
            seconds[name].append(s)
            print(f"repeat {repeat + 1}: {name:13} {s:6.1f} s ({len(prompts) / s:.2f} items/s)",
                  flush=True)  # fmt: skip
    median = {name: statistics.median(v) for name, v in seconds.items()}
    same = sum(a == b for a, b in zip(answers["one at a time"], answers["batched"], strict=True))
    new_tokens = sum(len(tokenizer(a)["input_ids"]) for a in answers["batched"])
    result = {
        "items": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "precision": precision,
        "seconds": seconds,
        "median_seconds": median,
        "speedup": median["one at a time"] / median["batched"],
        "identical_answers": same,
        "answer_tokens": new_tokens,
    }
    print(f"\n{len(prompts)} items, median of {args.repeats}: one at a time "
          f"{median['one at a time']:.1f} s, batched ({args.batch_size}) "
          f"{median['batched']:.1f} s: {result['speedup']:.1f}x "
          f"(target 5x: {'met' if result['speedup'] >= 5 else 'NOT met'}); "
          f"identical answers {same}/{len(prompts)}")  # fmt: skip
    out = REPO / "bench" / "results" / "generation.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
