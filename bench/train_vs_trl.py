"""LoRA training speed and memory, tuneloop against TRL's SFTTrainer, side by side in one run.

    .venv/bin/python bench/train_vs_trl.py                    # 2 repeats of each side
    .venv/bin/python bench/train_vs_trl.py --repeats 3 --steps 32 --batch-size 8

Each side trains the embedded default model (SmolLM2-135M-Instruct) with LoRA r=16, alpha 32, no
dropout (PEFT's default) on q/k/v/o, on the same banking77 examples (`../shared/data/banking77`:
an 8-intent subset, chat messages with the system instruction), the same batch size, maximum
length, steps, learning rate (linear decay, no warmup), AdamW, gradient clipping at 1.0, loss on
the answer tokens only, bf16 autocast. Steps x batch size = the training examples, so every side
sees every example exactly once and processes the same tokens. Everything else is each side's
default: TRL's SFTConfig turns gradient checkpointing on (`--trl-no-checkpointing` turns it
off); tuneloop's recipe leaves it off and shares the prompt prefix common to a batch
(`train.share_prefix`). A third side, `tuneloop-plain`, is tuneloop with `share_prefix: false`,
to show what the other levers give on their own.

Every training run is a fresh process (`--side`), the sides alternating, so that peak resident
memory (VmHWM, the whole process: imports, weights, training) is each side's own. Timed: the
training loop, from its first step to its last (model loading and saving excluded on both
sides). tokens/s counts the real (unpadded) tokens of the examples, and supervised tokens/s
the answer tokens the loss is on.

Both saved adapters are then evaluated by the same code in one more process: held-out loss
(mean over answer tokens) and exact-match accuracy of greedy answers on the 200 held-out
items, with a 95% interval and the paired difference. Model FLOPs utilisation divides the
model FLOPs of a LoRA step (forward 2N, backward through the frozen weights 2N per token; the
adapters' own FLOPs are not counted) by the bf16 matrix-product peak measured in this run
(`torch.matmul` of 2048 x 2048 bf16 matrices on all threads).

Results go to bench/results/train_vs_trl.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "evaluation"))
from common import BANKING77, write_jsonl  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SIDES = ("trl", "tuneloop", "tuneloop-plain")  # plain: train.share_prefix off


def write_data(folder: Path, n_labels: int, per_label: int, heldout_per_label: int):
    """banking77 as chat JSONL (the 8-intent subset of bench/evaluation/banking77_gate.py)."""
    from banking77_gate import subset

    _, train, heldout = subset(folder, n_labels, per_label, heldout_per_label)
    return write_jsonl(folder / "train.jsonl", train), write_jsonl(
        folder / "heldout.jsonl", heldout
    )


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def embedded_model_path() -> Path:
    from tuneloop.models.load import resolve

    return Path(resolve("smollm2-135m-instruct").path)


# ---- one side, in its own process ----------------------------------------------------------


def train_tuneloop(args, out: Path) -> dict:
    from tuneloop.cli.common import quiet_libraries
    from tuneloop.config import validate_recipe
    from tuneloop.train.session import train

    quiet_libraries()
    recipe = validate_recipe({
        "name": "bench-tuneloop",
        "workspace": str(out / "ws"),
        "data": {"train": str(args.data / "train.jsonl"),
                 "heldout": str(args.data / "heldout.jsonl")},
        "train": {"method": "lora",
                  "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": TARGETS},
                  "share_prefix": args.side == "tuneloop",
                  "batch_size": args.batch_size, "max_steps": args.steps, "lr": args.lr,
                  "max_length": args.max_length, "schedule": "linear", "warmup_ratio": 0.0,
                  "max_grad_norm": 1.0, "weight_decay": 0.0, "seed": args.seed,
                  "checkpoint_every": 10**6, "log_every": 1},
    }).resolved(out)  # fmt: skip
    run = train(recipe, progress=False)
    info = run.info()
    log = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    return {
        "seconds": info["loop_seconds"],
        "tokens": info["real_tokens"],
        "supervised_tokens": info["supervised_tokens"],
        "first_loss": log[0]["loss"],
        "last_loss": log[-1]["loss"],
        "precision": info["precision"],
        "gradient_checkpointing": recipe.train.gradient_checkpointing,
        "adapter": info["output"],
    }


def train_trl(args, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class LoopTimer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_train_end(self, *a, **k):
            self.seconds = time.perf_counter() - self.start

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    timer = LoopTimer()
    timer.losses = []
    rows = [json.loads(x) for x in (args.data / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list(
        [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    )
    path = embedded_model_path()
    config = SFTConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=args.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        use_cpu=True,
        dataloader_num_workers=0,
        gradient_checkpointing=args.trl_checkpointing,
    )
    trainer = SFTTrainer(
        model=str(path),
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"
        ),  # fmt: skip
        callbacks=[timer],
    )
    trainer.train()
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    processed = trainer.train_dataset
    supervised = sum(sum(t != -100 for t in labels) for labels in processed["labels"])
    return {
        "seconds": timer.seconds,
        "tokens": sum(len(ids) for ids in processed["input_ids"]),
        "supervised_tokens": supervised,
        "first_loss": timer.losses[0],
        "last_loss": timer.losses[-1],
        "precision": "bf16" if config.bf16 else "fp32",
        "gradient_checkpointing": config.gradient_checkpointing,
        "adapter": str(adapter),
        "torch_threads": torch.get_num_threads(),
    }


def run_side(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = train_trl(args, out) if args.side == "trl" else train_tuneloop(args, out)
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return 0


# ---- evaluation of both adapters, by the same code ------------------------------------------


def evaluate_adapters(args) -> int:
    """Held-out loss and exact match of each adapter in `--adapters`, on the same items."""
    import torch

    from tuneloop.cli.common import quiet_libraries
    from tuneloop.config import validate_recipe
    from tuneloop.data.prepare import load_datasets
    from tuneloop.data.templates import tokenize_dataset
    from tuneloop.evaluate.metrics import exact_match
    from tuneloop.models.adapters import load_adapter
    from tuneloop.models.generate import generate
    from tuneloop.models.load import load_model, load_tokenizer, resolve
    from tuneloop.models.precision import resolve_precision
    from tuneloop.train.batching import collate
    from tuneloop.train.loop import evaluate_loss
    from tuneloop.train.sft import sft_loss

    quiet_libraries()
    recipe = validate_recipe({
        "name": "bench-eval", "workspace": str(Path(args.out) / "ws"),
        "data": {"train": str(args.data / "train.jsonl"),
                 "heldout": str(args.data / "heldout.jsonl")},
    })  # fmt: skip
    source = resolve(recipe.model.name)
    tokenizer = load_tokenizer(source)
    heldout = load_datasets(recipe).heldout
    tokens, _ = tokenize_dataset(tokenizer, heldout, args.max_length, "drop")
    batches = [
        collate(tokens[i : i + 16], tokenizer.pad_token_id) for i in range(0, len(tokens), 16)
    ]
    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    prompts = [ex.messages[:-1] for ex in heldout]
    refs = [ex.messages[-1]["content"] for ex in heldout]
    results = {}
    for name, adapter in json.loads(args.adapters).items():
        model = load_adapter(load_model(source), adapter).to(device).eval()
        loss = evaluate_loss(model, sft_loss, batches, device, precision)["eval_loss"]
        answers = generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=32,
                           precision=precision)  # fmt: skip
        results[name] = {"heldout_loss": loss, "correct": exact_match(answers, refs)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "eval.json").write_text(json.dumps(results))
    return 0


# ---- the machine's bf16 matrix-product peak -------------------------------------------------


def bf16_peak_gflops(n: int = 2048, seconds: float = 3.0) -> float:
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def lora_step_flops_per_token() -> tuple[float, int]:
    """Model FLOPs per trained token of a LoRA step over a frozen base: 4 x the parameters the
    token passes through (the transformer body, and the tied LM head for every token as a
    reference trainer computes it). Returns (FLOPs per token, body parameters)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(embedded_model_path())
    h, inter, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    body = layers * (h * h * 2 + h * kv * 2 + 3 * h * inter)
    return 4.0 * (body + h * c.vocab_size), body


# ---- the orchestration -----------------------------------------------------------------------


def summarise(runs: list[dict], evals: dict, peak: float, flops_per_token: float) -> dict:
    from tuneloop.evaluate.stats import mcnemar_exact, mean_ci, paired_bootstrap

    side = {}
    for name in SIDES:
        mine = [r for r in runs if r["side"] == name]
        tok_s = [r["tokens"] / r["seconds"] for r in mine]
        sup_s = [r["supervised_tokens"] / r["seconds"] for r in mine]
        ci = mean_ci(evals[name]["correct"])
        side[name] = {
            "tokens_per_s": statistics.median(tok_s),
            "tokens_per_s_each": [round(x, 1) for x in tok_s],
            "supervised_tokens_per_s": statistics.median(sup_s),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in mine),
            "peak_rss_mib_range": [
                min(r["peak_rss_mib"] for r in mine),
                max(r["peak_rss_mib"] for r in mine),
            ],  # fmt: skip
            "peak_rss_mib_each": [r["peak_rss_mib"] for r in mine],
            "tokens": mine[0]["tokens"],
            "supervised_tokens": mine[0]["supervised_tokens"],
            "loss_first_last": [mine[-1]["first_loss"], mine[-1]["last_loss"]],
            "heldout_loss": evals[name]["heldout_loss"],
            "accuracy": ci.value,
            "accuracy_ci": [ci.low, ci.high],
            "precision": mine[0]["precision"],
            "gradient_checkpointing": mine[0]["gradient_checkpointing"],
            "mfu": statistics.median(tok_s) * flops_per_token / (peak * 1e9),
        }
        if name != "trl":
            trl = side["trl"]
            diff = paired_bootstrap(evals["trl"]["correct"], evals[name]["correct"])
            side[name]["vs_trl"] = {
                "speed": side[name]["tokens_per_s"] / trl["tokens_per_s"],
                "memory": side[name]["peak_rss_mib"] / trl["peak_rss_mib"],
                # the least favourable pairing: this side's highest peak over TRL's lowest
                "memory_worst": side[name]["peak_rss_mib_range"][1] / trl["peak_rss_mib_range"][0],
                "accuracy_diff": diff.diff,
                "accuracy_diff_ci": [diff.low, diff.high],
                "mcnemar_p": mcnemar_exact(evals["trl"]["correct"], evals[name]["correct"]).p_value,
            }
    return {"sides": side, "bf16_peak_gflops": peak, "model_flops_per_token": flops_per_token}


def print_summary(s: dict) -> None:
    sides = s["sides"]

    def cells(fn) -> list[str]:
        return [fn(sides[name]) for name in SIDES]

    def pct(x: float) -> str:
        return f"{x:.1%}"

    rows = [
        ("tokens/s (real tokens)", cells(lambda d: f"{d['tokens_per_s']:.1f}")),
        ("  x TRL", cells(lambda d: f"{d['vs_trl']['speed']:.2f}x" if "vs_trl" in d else "")),
        ("supervised tokens/s", cells(lambda d: f"{d['supervised_tokens_per_s']:.1f}")),
        ("peak resident memory MiB", cells(lambda d: f"{d['peak_rss_mib']:.0f}")),
        ("  x TRL (median; worst pair)", cells(lambda d: (
            f"{d['vs_trl']['memory']:.2f}x; {d['vs_trl']['memory_worst']:.2f}x")
            if "vs_trl" in d else "")),
        ("held-out loss", cells(lambda d: f"{d['heldout_loss']:.4f}")),
        ("held-out exact match", cells(lambda d: pct(d["accuracy"]))),
        ("  95% interval", cells(lambda d: f"[{pct(d['accuracy_ci'][0])}, "
                                           f"{pct(d['accuracy_ci'][1])}]")),
        ("  minus TRL (paired)", cells(lambda d: (
            f"{d['vs_trl']['accuracy_diff']:+.1%} [{d['vs_trl']['accuracy_diff_ci'][0]:+.1%}, "
            f"{d['vs_trl']['accuracy_diff_ci'][1]:+.1%}]") if "vs_trl" in d else "")),
        ("gradient checkpointing", cells(lambda d: "on" if d["gradient_checkpointing"] else "off")),
        ("model FLOPs / bf16 peak", cells(lambda d: pct(d["mfu"]))),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"\n{'':{width}}" + "".join(f"  {name:>24}" for name in SIDES))
    for name, values in rows:
        print(f"{name:{width}}" + "".join(f"  {v:>24}" for v in values))
    for name in SIDES:
        print(f"{name}: each run {sides[name]['tokens_per_s_each']} tokens/s, "
              f"{sides[name]['peak_rss_mib_each']} MiB")  # fmt: skip
    print(
        f"bf16 matmul peak {s['bf16_peak_gflops']:.0f} GFLOP/s; model FLOPs per token "
        f"{s['model_flops_per_token'] / 1e6:.0f} M (4 x parameters a token passes through)"
    )
    t = sides["tuneloop"]["vs_trl"]
    print(
        f"targets (tuneloop vs TRL): speed >= 3x {'met' if t['speed'] >= 3 else 'NOT met'}; "
        f"memory <= 0.75x {'met' if t['memory_worst'] <= 0.75 else 'NOT met'}; "
        f"accuracy not lower {'met' if t['accuracy_diff_ci'][1] >= 0 else 'NOT met'}"
    )


def child(args, *extra: str) -> None:
    cmd = [sys.executable, __file__, "--data", str(args.data), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--max-length", str(args.max_length), "--seed", str(args.seed),
           *([] if args.trl_checkpointing else ["--trl-no-checkpointing"]), *extra]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", type=int, default=8)
    parser.add_argument("--heldout-per-label", type=int, default=25)
    parser.add_argument(
        "--trl-no-checkpointing",
        dest="trl_checkpointing",
        action="store_false",
        help="TRL without gradient checkpointing (its default is on): faster, more memory",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--summarise", type=Path, metavar="RESULTS_JSON",
                        help="print the summary of a finished run again (its runs and the "
                        "evaluations kept in its --work folder)")  # fmt: skip
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--adapters", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if args.evaluate:
        return evaluate_adapters(args)
    if args.summarise:
        kept = json.loads(args.summarise.read_text())
        work = args.work or Path(kept["work"])
        evals = json.loads((work / "eval" / "eval.json").read_text())
        kept.update(summarise(kept["runs"], evals, kept["bf16_peak_gflops"],
                              kept["model_flops_per_token"]))  # fmt: skip
        kept["work"] = str(work)
        print_summary(kept)
        args.summarise.write_text(json.dumps(kept, indent=2) + "\n")
        return 0
    if not (BANKING77 / "train.csv").is_file():
        print(f"banking77 not found at {BANKING77}", file=sys.stderr)
        return 2
    if (args.steps * args.batch_size) % args.labels:
        parser.error("--steps x --batch-size must be a multiple of --labels")

    work = args.work or Path(tempfile.mkdtemp(prefix="train-vs-trl-"))
    args.data = work / "data"
    write_data(args.data, args.labels, args.steps * args.batch_size // args.labels,
               args.heldout_per_label)  # fmt: skip
    runs = []
    for repeat in range(args.repeats):
        order = SIDES if repeat % 2 == 0 else SIDES[::-1]
        for name in order:
            out = work / f"{name}-{repeat}"
            print(f"repeat {repeat + 1}/{args.repeats}: training with {name}", flush=True)
            child(args, "--side", name, "--out", str(out))
            result = json.loads((out / "result.json").read_text())
            runs.append({"side": name, "repeat": repeat, **result})
            print(f"  {result['tokens'] / result['seconds']:.1f} tokens/s, peak "
                  f"{result['peak_rss_mib']:.0f} MiB, loss {result['first_loss']:.3f} -> "
                  f"{result['last_loss']:.3f}", flush=True)  # fmt: skip
    last = {r["side"]: r["adapter"] for r in runs if r["repeat"] == args.repeats - 1}
    print("evaluating every adapter on the held-out items", flush=True)
    child(args, "--evaluate", "--adapters", json.dumps(last), "--out", str(work / "eval"))
    evals = json.loads((work / "eval" / "eval.json").read_text())
    peak = bf16_peak_gflops()
    flops_per_token, _ = lora_step_flops_per_token()
    summary = summarise(runs, evals, peak, flops_per_token)
    summary["settings"] = {k: v for k, v in vars(args).items()
                           if k in ("repeats", "steps", "batch_size", "lr", "max_length", "seed",
                                    "labels", "heldout_per_label",
                                    "trl_checkpointing")}  # fmt: skip
    summary["runs"] = runs
    summary["work"] = str(work)
    summary["machine"] = {"cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0]}
    print_summary(summary)
    name = "train_vs_trl" if args.trl_checkpointing else "train_vs_trl_no_checkpointing"
    out = REPO / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
