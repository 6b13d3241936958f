"""LoRA training speed and memory, tuneloop against TRL's SFTTrainer, side by side in one run:
TRL with its defaults, TRL in its fastest setting on this machine, and tuneloop, on three data
sets and at several model sizes.

    .venv/bin/python bench/train_vs_trl.py                          # 135M, three sets, 2 repeats
    .venv/bin/python bench/train_vs_trl.py --shapes 135m 360m --steps 8 --repeats 1
    .venv/bin/python bench/train_vs_trl.py --datasets varied --sides trl-default tuneloop

Data sets (`--datasets`):

    banking77  8 intents, one system instruction listing the labels: 106 tokens an example,
               80 of them common to all (the favourable case for `train.share_prefix`)
    varied     generated (`bench/sft_sets.py`): a different system prompt and instruction per
               example, 38-490 tokens, short answers; no batch shares a prefix
    long       generated: short requests, answers longer than the prompts (68-434 tokens)

Model sizes (`--shapes`): `135m` is the embedded SmolLM2-135M-Instruct (its real weights, so the
held-out loss means something); `360m` and `1.7b` are randomly initialised Llama models with the
shapes of SmolLM2-360M and -1.7B and the same tokenizer (speed and memory do not depend on the
weights' values; their held-out loss only compares the sides with each other).

Sides (`--sides`):

    trl-default     TRL 1.16 SFTTrainer with its defaults (gradient checkpointing on, padded
                    batches; its chunked LM-head loss is always on, `adamw_torch_fused`)
    trl-no-ckpt     TRL without gradient checkpointing, padded batches
    trl-padding-free  TRL without gradient checkpointing and with `padding_free=True` (the batch
                    flattened into one row, positions restarting per example)

"TRL fastest" in the summary is, for each model size and data set, whichever TRL side had the
most tokens/s (TRL's `packing=True` is not among them: it re-cuts the data set into rows of
`max_length`, so a step would no longer be the same examples; `use_liger_kernel` needs Triton,
which has no CPU backend; `torch_compile` is left out, as it is for tuneloop).
    tuneloop        the recipe's defaults (`share_prefix: true`, `packing: auto`: packed where
                    that sends fewer tokens through the model than padded rows sharing
                    their prompt prefix)
    tuneloop-packed `train.packing: true`: a batch's examples side by side in one row,
                    positions restarting per example, each attending to itself alone
    tuneloop-plain  `share_prefix: false`, `packing: false` (not run unless asked)

Every side trains LoRA r=16, alpha 32, no dropout on q/k/v/o, the same examples, batch size,
steps, learning rate (linear decay, no warmup), AdamW, clipping at 1.0, loss on the answer
tokens only, bf16 autocast. Steps x batch size = the training examples, so every side sees
every example once. Every training run is a fresh process, the sides alternating (the order is
reversed on every other repeat and data set), so that peak resident memory (VmHWM: imports, weights,
training) is each side's own. Timed: the training loop, first step to last. tokens/s counts
each side's real (unpadded) tokens.

The saved adapters of the last repeat are scored by the same code in one more process:
held-out loss (mean over answer tokens) on held-out items (banking77 at 135M also greedy exact
match). Model FLOPs utilisation divides the model FLOPs of a LoRA step (4 x the parameters a
token passes through: forward 2N, backward through the frozen weights 2N; the adapters' own
FLOPs not counted) by the bf16 matrix-product peak measured in this run (best of 3 s of
`torch.matmul` on 2048 x 2048 bf16 matrices, before and after the runs, the higher taken).

Results go to bench/results/train_vs_trl_fair.json (`--out-json`); docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "evaluation"))
sys.path.insert(0, str(REPO / "bench"))
from common import BANKING77, write_jsonl  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SIDES = ("trl-default", "trl-no-ckpt", "trl-padding-free", "tuneloop", "tuneloop-packed",
         "tuneloop-plain")  # fmt: skip
DEFAULT_SIDES = SIDES[:5]
DATASETS = ("banking77", "varied", "long")
MAX_LENGTH = {"banking77": 256, "varied": 512, "long": 512}
# SmolLM2 shapes (hidden, MLP width, layers, heads, key/value heads); the vocabulary (49,152),
# tied embeddings and RoPE settings are the 135M model's.
SHAPES = {
    "135m": None,  # the embedded model itself
    "360m": (960, 2560, 32, 15, 5),
    "1.7b": (2048, 8192, 24, 32, 32),
    "1b": (2048, 8192, 16, 32, 8),  # Llama-3.2-1B's body (bench/gpu/measure.py)
}


def write_data(folder: Path, dataset: str, n_train: int, n_heldout: int) -> None:
    """train.jsonl and heldout.jsonl of chat messages for one data set."""
    if dataset == "banking77":
        from banking77_gate import subset

        _, train, heldout = subset(folder, 8, n_train // 8, n_heldout // 8)
    else:
        from sft_sets import make_set

        train, heldout = make_set(dataset, n_train, n_heldout)
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "heldout.jsonl", heldout)


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def embedded_model_path() -> Path:
    from tuneloop.models.load import resolve

    return Path(resolve("smollm2-135m-instruct").path)


def model_path(shape: str, work: Path) -> Path:
    """The model folder for a shape: the embedded model, or a random one of that shape (made
    once in `work`, float32 safetensors, the embedded model's tokenizer and chat template)."""
    base = embedded_model_path()
    if SHAPES[shape] is None:
        return base
    folder = work / f"random-{shape}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hidden, width, layers, heads, kv_heads = SHAPES[shape]
    config = AutoConfig.from_pretrained(base)
    config.update({"hidden_size": hidden, "intermediate_size": width, "num_hidden_layers": layers,
                   "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                   "head_dim": hidden // heads})  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tmp = folder.with_suffix(".tmp")
    model.save_pretrained(tmp)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json"):  # fmt: skip
        if (base / name).is_file():
            shutil.copy(base / name, tmp / name)
    tmp.rename(folder)
    return folder


# ---- one side, in its own process ----------------------------------------------------------


def train_tuneloop(args, out: Path) -> dict:
    from tuneloop.cli.common import quiet_libraries
    from tuneloop.config import validate_recipe
    from tuneloop.train.session import train

    quiet_libraries()
    recipe = validate_recipe({
        "name": "bench-tuneloop",
        "workspace": str(out / "ws"),
        "model": {"name": str(args.model)},
        "data": {"train": str(args.data / "train.jsonl"),
                 "heldout": str(args.data / "heldout.jsonl")},
        "train": {"method": "lora",
                  "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": TARGETS},
                  "share_prefix": args.side != "tuneloop-plain",
                  "packing": {"tuneloop-packed": True, "tuneloop-plain": False}.get(
                      args.side, "auto"),
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
        "tokens_through_model": info["tokens"],  # padding included
        "supervised_tokens": info["supervised_tokens"],
        "first_loss": log[0]["loss"],
        "last_loss": log[-1]["loss"],
        "precision": info["precision"],
        "gradient_checkpointing": recipe.train.gradient_checkpointing,
        "memory_estimate_mib": info["memory_estimate"]["total"] / 2**20,
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
    free = args.side == "trl-padding-free"
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
        # padding-free without packing does not truncate; every example here fits (the data
        # are written so; the tokens counted below would show a difference)
        max_length=None if free else args.max_length,
        padding_free=free,
        gradient_checkpointing=args.side == "trl-default",  # True is SFTConfig's default
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=str(args.model),
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(args.model),
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
        "padding_free": config.padding_free,
        "adapter": str(adapter),
        "torch_threads": torch.get_num_threads(),
    }


def run_side(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trl = args.side.startswith("trl")
    result = train_trl(args, out) if trl else train_tuneloop(args, out)
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return 0


# ---- evaluation of every adapter, by the same code ------------------------------------------


def evaluate_adapters(args) -> int:
    """Held-out loss of each adapter in `--adapters` on the same items (and exact match of
    greedy answers with `--exact-match`)."""
    import torch

    from tuneloop.cli.common import quiet_libraries
    from tuneloop.config import validate_recipe
    from tuneloop.data.prepare import load_datasets
    from tuneloop.data.templates import tokenize_dataset
    from tuneloop.models.adapters import load_adapter
    from tuneloop.models.load import load_model, load_tokenizer, resolve
    from tuneloop.models.precision import resolve_precision
    from tuneloop.train.batching import collate
    from tuneloop.train.loop import evaluate_loss
    from tuneloop.train.sft import sft_loss

    quiet_libraries()
    recipe = validate_recipe({
        "name": "bench-eval", "workspace": str(Path(args.out) / "ws"),
        "model": {"name": str(args.model)},
        "data": {"train": str(args.data / "train.jsonl"),
                 "heldout": str(args.data / "heldout.jsonl")},
    })  # fmt: skip
    source = resolve(recipe.model.name)
    tokenizer = load_tokenizer(source)
    heldout = load_datasets(recipe).heldout
    tokens, _ = tokenize_dataset(tokenizer, heldout, args.max_length, "drop")
    batches = [collate(tokens[i : i + 8], tokenizer.pad_token_id) for i in range(0, len(tokens), 8)]
    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    results = {}
    for name, adapter in json.loads(args.adapters).items():
        model = load_adapter(load_model(source), adapter).to(device).eval()
        loss = evaluate_loss(model, sft_loss, batches, device, precision)["eval_loss"]
        results[name] = {"heldout_loss": loss, "heldout_items": len(tokens)}
        if args.exact_match:
            from tuneloop.evaluate.metrics import exact_match
            from tuneloop.models.generate import generate

            answers = generate(model, tokenizer, [ex.messages[:-1] for ex in heldout],
                               max_new_tokens=16, batch_size=32, precision=precision)  # fmt: skip
            results[name]["correct"] = exact_match(
                answers, [ex.messages[-1]["content"] for ex in heldout]
            )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "eval.json").write_text(json.dumps(results))
    return 0


# ---- the machine's bf16 matrix-product peak, and a step's model FLOPs -----------------------


def bf16_peak_gflops(threads: int = 0, n: int = 2048, seconds: float = 3.0) -> float:
    import torch

    if threads:
        torch.set_num_threads(threads)
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


def lora_step_flops_per_token(model: Path) -> tuple[float, int]:
    """Model FLOPs per trained token of a LoRA step over a frozen base: 4 x the parameters the
    token passes through (the transformer body, and the tied LM head for every token as a
    reference trainer computes it). Returns (FLOPs per token, body parameters)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    h, inter, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    body = layers * (h * h * 2 + h * kv * 2 + 3 * h * inter)
    return 4.0 * (body + h * c.vocab_size), body


# ---- the orchestration -----------------------------------------------------------------------


def summarise_cell(runs: list[dict], evals: dict, peak: float, flops_per_token: float) -> dict:
    """One (shape, data set): every side's medians, and the ratios to both TRL settings."""
    side = {}
    for name in dict.fromkeys(r["side"] for r in runs):
        mine = [r for r in runs if r["side"] == name]
        tok_s = [r["tokens"] / r["seconds"] for r in mine]
        side[name] = {
            "tokens_per_s": statistics.median(tok_s),
            "tokens_per_s_each": [round(x, 1) for x in tok_s],
            "supervised_tokens_per_s": statistics.median(
                r["supervised_tokens"] / r["seconds"] for r in mine),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in mine),
            "peak_rss_mib_each": [r["peak_rss_mib"] for r in mine],
            "tokens": mine[0]["tokens"],
            "supervised_tokens": mine[0]["supervised_tokens"],
            "loss_first_last": [mine[-1]["first_loss"], mine[-1]["last_loss"]],
            "heldout_loss": evals.get(name, {}).get("heldout_loss"),
            "mfu": statistics.median(tok_s) * flops_per_token / (peak * 1e9),
        }  # fmt: skip
        if "correct" in evals.get(name, {}):
            side[name]["exact_match"] = statistics.mean(evals[name]["correct"])
    trl = [n for n in side if n.startswith("trl")]
    if trl:
        fastest = max(trl, key=lambda n: side[n]["tokens_per_s"])
        side["trl-fastest"] = {**side[fastest], "is": fastest}
    for name, d in side.items():
        for ref in ("trl-default", "trl-fastest"):
            if ref in side and not name.startswith("trl"):
                d[f"vs_{ref}"] = {
                    "speed": d["tokens_per_s"] / side[ref]["tokens_per_s"],
                    "memory": d["peak_rss_mib"] / side[ref]["peak_rss_mib"],
                    # the least favourable pairing: our highest peak over TRL's lowest
                    "memory_worst": max(d["peak_rss_mib_each"]) / min(
                        side[ref]["peak_rss_mib_each"]),
                }  # fmt: skip
    return side


def print_cell(title: str, sides: dict) -> None:
    names = list(sides)

    def row(label, fn):
        cells = []
        for n in names:
            try:
                cells.append(fn(sides[n]))
            except (KeyError, TypeError):
                cells.append("")
        return (label, cells)

    rows = [
        row("tokens/s (real tokens)", lambda d: f"{d['tokens_per_s']:.1f}"),
        row("  (TRL fastest is)", lambda d: d["is"]),
        row("  x TRL default", lambda d: f"{d['vs_trl-default']['speed']:.2f}x"),
        row("  x TRL fastest", lambda d: f"{d['vs_trl-fastest']['speed']:.2f}x"),
        row("peak resident MiB", lambda d: f"{d['peak_rss_mib']:.0f}"),
        row("  x TRL fastest (median; worst)", lambda d: (
            f"{d['vs_trl-fastest']['memory']:.2f}; {d['vs_trl-fastest']['memory_worst']:.2f}")),
        row("  x TRL default (median)", lambda d: f"{d['vs_trl-default']['memory']:.2f}"),
        row("held-out loss", lambda d: f"{d['heldout_loss']:.4f}"),
        row("held-out exact match", lambda d: f"{d['exact_match']:.1%}"),
        row("model FLOPs / bf16 peak", lambda d: f"{d['mfu']:.1%}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}\n{'':{width}}" + "".join(f"  {n:>16}" for n in names))
    for label, values in rows:
        if any(values):
            print(f"{label:{width}}" + "".join(f"  {v:>16}" for v in values))
    for n in names:
        print(f"  {n}: each run {sides[n]['tokens_per_s_each']} tokens/s, "
              f"{sides[n]['peak_rss_mib_each']} MiB")  # fmt: skip


def child(args, *extra: str) -> None:
    cmd = [sys.executable, __file__, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--seed", str(args.seed), "--threads", str(args.threads), *extra]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    subprocess.run(cmd, check=True, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", type=int, default=48, help="held-out items per data set")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--shapes", nargs="+", default=["135m"], choices=list(SHAPES))
    parser.add_argument("--sides", nargs="+", default=list(DEFAULT_SIDES), choices=SIDES)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (0: torch's default, all cores); on a "
                        "machine other work shares, 1 thread per run keeps OpenMP's barriers "
                        "from waiting on descheduled threads")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--out-json", type=Path, default=REPO / "bench" / "results" /
                        "train_vs_trl_fair.json")  # fmt: skip
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--exact-match", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--adapters", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if args.evaluate:
        return evaluate_adapters(args)
    if not (BANKING77 / "train.csv").is_file():
        print(f"banking77 not found at {BANKING77}", file=sys.stderr)
        return 2
    if (args.steps * args.batch_size) % 8:
        parser.error("--steps x --batch-size must be a multiple of 8 (banking77's intents)")

    work = args.work or Path(tempfile.mkdtemp(prefix="train-vs-trl-"))
    peaks = [bf16_peak_gflops(args.threads)]
    runs, cells = [], {}
    for shape in args.shapes:
        model = model_path(shape, work)
        for dataset in args.datasets:
            data = work / "data" / dataset
            write_data(data, dataset, args.steps * args.batch_size, args.heldout)
            common = ["--data", str(data), "--model", str(model),
                      "--max-length", str(MAX_LENGTH[dataset])]  # fmt: skip
            mine = []
            for repeat in range(args.repeats):
                # reversed on every other repeat, and every other data set
                flip = (repeat + len(cells)) % 2
                order = args.sides[::-1] if flip else args.sides
                for name in order:
                    out = work / shape / dataset / f"{name}-{repeat}"
                    print(f"{shape} {dataset} repeat {repeat + 1}/{args.repeats}: {name}",
                          flush=True)  # fmt: skip
                    child(args, *common, "--side", name, "--out", str(out))
                    result = json.loads((out / "result.json").read_text())
                    mine.append({"shape": shape, "dataset": dataset, "side": name,
                                 "repeat": repeat, **result})  # fmt: skip
                    print(f"  {result['tokens'] / result['seconds']:.1f} tokens/s, peak "
                          f"{result['peak_rss_mib']:.0f} MiB, loss {result['first_loss']:.3f} "
                          f"-> {result['last_loss']:.3f}", flush=True)  # fmt: skip
            last = {r["side"]: r["adapter"] for r in mine if r["repeat"] == args.repeats - 1}
            evals_dir = work / shape / dataset / "eval"
            exact = ["--exact-match"] if dataset == "banking77" and shape == "135m" else []
            child(args, *common, "--evaluate", *exact, "--adapters", json.dumps(last),
                  "--out", str(evals_dir))  # fmt: skip
            evals = json.loads((evals_dir / "eval.json").read_text())
            cells[f"{shape} {dataset}"] = {"runs": mine, "evals": evals, "model": str(model)}
            runs += mine
    peaks.append(bf16_peak_gflops(args.threads))
    peak = max(peaks)
    summary = {"bf16_peak_gflops": peak, "bf16_peak_gflops_each": peaks, "cells": {}}
    for key, cell in cells.items():
        flops, body = lora_step_flops_per_token(Path(cell["model"]))
        sides = summarise_cell(cell["runs"], cell["evals"], peak, flops)
        summary["cells"][key] = {"sides": sides, "model_flops_per_token": flops,
                                 "body_params": body}  # fmt: skip
        print_cell(key, sides)
    summary["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                           if k in ("repeats", "steps", "batch_size", "lr", "seed", "heldout",
                                    "datasets", "shapes", "sides", "threads")}  # fmt: skip
    summary["runs"] = runs
    summary["work"] = str(work)
    summary["machine"] = {"cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0]}
    print(f"\nbf16 matmul peak {peak:.0f} GFLOP/s (best of {[round(p) for p in peaks]})")
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
