"""How lint scales: 100,000 generated examples in at most 60 s (tokenization excluded), and a
near-duplicate search that grows subquadratically (4x the data costs at most 5x the time).

    .venv/bin/python bench/lint_scale.py                 # 25,000 and 100,000 examples
    .venv/bin/python bench/lint_scale.py --sizes 5000 20000

Each size writes a generated JSONL training file (messages format, one system prompt, 50
labels) plus a held-out file a tenth its size, both with planted problems at fixed rates:
2% exact duplicates, 3% near-duplicates (one word of a 20+ word prompt changed), 1% held-out
leaks, 0.5% e-mail addresses, 0.2% broken JSON lines. It then times `lint_files` end to end
(reading every line, every check; no tokenizer) and, separately, the MinHash/LSH near-duplicate
search alone (best of five runs: the machine is shared, and other processes only ever add
time), and checks that the planted problems were found. The 1-minute load average is printed
beside each size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tuneloop.data.dedupe import find_near_duplicates  # noqa: E402
from tuneloop.data.lintfile import lint_files  # noqa: E402

SYSTEM = "Classify the customer message into one intent. Answer with the label only."
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def sentence(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(8, 30))).capitalize() + "."


def record(text: str, label: str) -> str:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text},
        {"role": "assistant", "content": label},
    ]
    return json.dumps({"messages": messages, "meta": {"label": label}})


def generate(n: int, seed: int = 0) -> tuple[list[str], list[str], Counter]:
    """(train lines, held-out lines, how many of each planted problem)."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    labels = [f"intent_{k:02d}" for k in range(50)]
    planted: Counter = Counter()
    texts: list[tuple[str, str]] = []
    lines = []
    for _ in range(n):
        roll = rng.random()
        if texts and roll < 0.02:
            text, label = rng.choice(texts)
            planted["duplicate"] += 1
        elif texts and roll < 0.05:
            text, label = rng.choice(texts)
            while len(text.split()) < 20:  # one word of 20 or more: similarity above 0.8
                text, label = rng.choice(texts)
            tokens = text.split()
            tokens[rng.randrange(len(tokens))] = rng.choice(words)
            text = " ".join(tokens)
            planted["near-duplicate"] += 1
        else:
            text, label = sentence(rng, words), rng.choice(labels)
            if roll < 0.055:
                text += f" Write to me at user{rng.randrange(10**6)}@mailbox.org."
                planted["pii"] += 1
            texts.append((text, label))
        if roll > 0.998:
            lines.append(record(text, label)[:-2])  # a broken JSON line
            planted["invalid-json"] += 1
        else:
            lines.append(record(text, label))
    heldout = []
    for _ in range(n // 10):
        if rng.random() < 0.1:
            text, label = rng.choice(texts)
            planted["leakage"] += 1
        else:
            text, label = sentence(rng, words), rng.choice(labels)
        heldout.append(record(text, label))
    return lines, heldout, planted


def run(n: int, folder: Path, repeats: int) -> dict:
    train_lines, held_lines, planted = generate(n)
    train, heldout = folder / f"train-{n}.jsonl", folder / f"heldout-{n}.jsonl"
    train.write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    heldout.write_text("\n".join(held_lines) + "\n", encoding="utf-8")

    started, cpu = time.perf_counter(), time.process_time()
    report = lint_files(train, heldout)
    lint_s, lint_cpu = time.perf_counter() - started, time.process_time() - cpu

    # Best of `repeats`, in wall-clock and in this process's CPU time: other processes on a
    # shared machine only ever add time, and they add much less to the CPU time.
    near_s = near_cpu = float("inf")
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        near = find_near_duplicates(report.train.examples, report.heldout.examples)
        near_s = min(near_s, time.perf_counter() - started)
        near_cpu = min(near_cpu, time.process_time() - cpu)

    found = Counter(f.code for f in report.findings)
    return {
        "examples": n,
        "heldout": len(held_lines),
        "lint_s": round(lint_s, 2),
        "lint_cpu_s": round(lint_cpu, 2),
        "read_s": round(report.seconds["read"], 2),
        "checks_s": round(report.seconds["checks"], 2),
        "near_search_s": round(near_s, 2),
        "near_search_cpu_s": round(near_cpu, 2),
        "load_average": round(os.getloadavg()[0], 1),
        "near_pairs": len(near.within) + len(near.across),
        "planted": dict(planted),
        "found": {k: found[k] for k in planted},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5, help="near-duplicate search: best of")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            result = run(n, Path(tmp), args.repeats)
            results.append(result)
            print(json.dumps(result), flush=True)
    small, large = results[0], results[-1]
    scale = large["examples"] / small["examples"]
    near_ratio = large["near_search_s"] / small["near_search_s"]
    near_cpu_ratio = large["near_search_cpu_s"] / small["near_search_cpu_s"]
    lint_ratio = large["lint_s"] / small["lint_s"]
    print(
        f"\n{large['examples']:,} examples: lint {large['lint_s']} s wall-clock, "
        f"{large['lint_cpu_s']} s CPU (read {large['read_s']} s, checks {large['checks_s']} s; "
        f"limit 60 s; load average {large['load_average']})"
    )
    print(
        f"{scale:g}x the data: near-duplicate search {near_cpu_ratio:.2f}x the CPU time, "
        f"{near_ratio:.2f}x the wall-clock time (limit {scale * 1.25:g}x; quadratic would be "
        f"{scale**2:g}x); whole lint {lint_ratio:.2f}x"
    )
    ok = large["lint_s"] <= 60 and near_cpu_ratio <= scale * 1.25
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
