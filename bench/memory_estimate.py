"""The memory estimate printed before training, against the peak memory actually measured.

    python bench/memory_estimate.py                          # every configuration below
    python bench/memory_estimate.py --configs lora full
    python bench/memory_estimate.py --configs lora "lora + packing" --dataset varied \
        --shape 360m --max-length 512 --batch-size 4

Each configuration trains the embedded default model (`--shape 360m`: a random model of
SmolLM2-360M's shape, `bench/train_vs_trl.py`) for a few steps on banking77 text (`--dataset
varied`: the generated varied-prompt set of `bench/sft_sets.py`, 38-490 tokens) in a fresh
process. Measured: the process's peak resident memory (ru_maxrss) minus its resident
memory once Python, torch and transformers are imported and before the model loads (so the
interpreter and libraries are not counted), for the training loop alone (the peak counter is
reset when the loop starts) against the estimate of the loop, and for the whole run including
loading against the estimated peak (the loop's or loading's, whichever is higher). The
estimate is `tuneloop train`'s own (weights, gradients, optimizer state, activations, the
mapped weight file while loading; see `tuneloop.train.memory`). Prints a Markdown table (and writes
bench/results/memory_estimate.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bench" / "evaluation"))

CONFIGS = {
    "lora": {"method": "lora"},
    "lora + checkpointing": {"method": "lora", "gradient_checkpointing": True},
    "lora + packing": {"method": "lora", "packing": True},
    "dora": {"method": "dora"},
    "qlora": {"method": "qlora"},
    "ia3": {"method": "ia3"},
    "full": {"method": "full", "lr": 2e-5},
    "full + sgd": {"method": "full", "lr": 2e-5, "optimizer": "sgd"},
    "lora dpo": {"method": "lora", "objective": "dpo"},
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """The process's peak resident memory since start, or since `reset_peak()`."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size (Linux)


def measure(name: str, args) -> dict:
    """Run in a fresh process: train one configuration, return estimate and measured peaks."""
    import peft  # noqa: F401  (the libraries are imported before the baseline is taken)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from tuneloop.cli.common import quiet_libraries
    from tuneloop.config import validate_recipe
    from tuneloop.train import session

    quiet_libraries()
    baseline = rss_bytes()
    loop_peak = {}
    real_loop = session.run_loop

    def measured_loop(*args, **kwargs):
        # Loading can peak above training (a file's pages and the tensors made from them);
        # the peak of the loop alone is what the estimate describes.
        loop_peak["start"] = rss_bytes()
        loop_peak["loading"] = peak_rss_bytes()  # before the reset below erases it
        reset_peak()
        state = real_loop(*args, **kwargs)
        loop_peak["bytes"] = peak_rss_bytes()
        return state

    session.run_loop = measured_loop
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_cfg = {"max_steps": args.steps, "batch_size": args.batch_size, "lr": 1e-3,
                     "max_length": args.max_length, "checkpoint_every": 1000,
                     **CONFIGS[name]}  # fmt: skip
        if args.dataset == "varied":
            from common import write_jsonl
            from sft_sets import make_set

            train_rows, heldout_rows = make_set("varied", 64, 8)
            data = {
                "train": str(write_jsonl(folder / "train.jsonl", train_rows)),
                "heldout": str(write_jsonl(folder / "heldout.jsonl", heldout_rows)),
            }
        elif train_cfg.get("objective") == "dpo":
            from tuneloop.data.preference_examples import write_support_preferences

            data = {"train": str(write_support_preferences(folder / "p.jsonl", n_per_label=8))}
        else:
            from methods import write_data

            tr, held = write_data(folder, 64, 8)
            data = {"train": str(tr), "heldout": str(held),
                    "csv": {"text": "text", "label": "category"}}  # fmt: skip
        model = {"name": str(args.model)} if args.model else {}
        recipe = validate_recipe({"name": "mem", "workspace": str(folder / "ws"), "data": data,
                                  "model": model, "train": train_cfg}).resolved(folder)  # fmt: skip
        run = session.train(recipe, progress=False)
        estimate = run.info()["memory_estimate"]
    # ru_maxrss is the same counter as VmHWM, reset with it: the whole run's peak is the larger
    # of the peak before the loop and the peak since
    peak = max(loop_peak["loading"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "config": name,
        "estimate": estimate,
        "measured_peak": loop_peak["bytes"] - baseline,
        "resident_at_loop_start": loop_peak["start"] - baseline,
        "peak_with_loading": peak - baseline,
        "baseline_rss": baseline,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--dataset", choices=["banking77", "varied"], default="banking77")
    parser.add_argument("--shape", choices=["135m", "360m", "1.7b"], default="135m")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "memory-bench",
                        help="where a random model of --shape is written once")  # fmt: skip
    parser.add_argument("--out-json", type=Path,
                        default=REPO / "bench" / "results" / "memory_estimate.json")  # fmt: skip
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config, print JSON
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args)))
        return 0
    model = []
    if args.shape != "135m":
        from train_vs_trl import model_path

        args.work.mkdir(parents=True, exist_ok=True)
        model = ["--model", str(model_path(args.shape, args.work))]

    results = []
    for name in args.configs:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", name, "--steps", str(args.steps),
             "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
             "--dataset", args.dataset, *model],
            capture_output=True, text=True,
        )  # fmt: skip
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append({**json.loads(line[len("RESULT ") :]), "shape": args.shape,
                        "dataset": args.dataset, "batch_size": args.batch_size,
                        "max_length": args.max_length})  # fmt: skip
        r = results[-1]
        e = r["estimate"]
        print(f"{name}: training {e['training'] / 2**30:.2f} GiB estimated, "
              f"{r['measured_peak'] / 2**30:.2f} measured; peak {e['total'] / 2**30:.2f} "
              f"estimated, {r['peak_with_loading'] / 2**30:.2f} measured", file=sys.stderr,
              flush=True)  # fmt: skip

    gib = 2**30
    print("| configuration | weights | gradients | optimizer | activations | overhead | estimate, "
          "training | measured, training | measured / estimate | of which resident at loop "
          "start | estimate, loading | estimate, peak | measured, with loading | measured / "
          "estimate |")  # fmt: skip
    print("| --- |" + " ---: |" * 13)
    for r in results:
        e = r["estimate"]
        keys = ("weights", "gradients", "optimizer", "activations", "overhead", "training")
        parts = [f"{e[k] / gib:.2f}" for k in keys]
        print(
            f"| {r['config']} | {' | '.join(parts)} | {r['measured_peak'] / gib:.2f} | "
            f"{r['measured_peak'] / e['training']:.2f} | "
            f"{r['resident_at_loop_start'] / gib:.2f} | {e['loading'] / gib:.2f} | "
            f"{e['total'] / gib:.2f} | {r['peak_with_loading'] / gib:.2f} | "
            f"{r['peak_with_loading'] / e['total']:.2f} |"
        )
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
