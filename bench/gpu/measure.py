"""LoRA and QLoRA on one CUDA GPU: tuneloop, TRL (defaults and fastest) and Unsloth, one JSON.

    bash bench/gpu/run.sh                     # installs, then runs this
    python bench/gpu/measure.py --steps 20    # in an environment that has everything

Model: randomly initialised, Llama-3.2-1B's body (16 layers, hidden 2048, MLP 8192, 32 heads, 8
key/value heads) with SmolLM2's tokenizer and tied 49,152-word embeddings: 1.0 B parameters.
Speed and memory do not depend on the weights' values. Data: the generated varied-prompt set
(`bench/sft_sets.py`, a different system prompt per example, 38-490 tokens), batch 8, LoRA
r=16 alpha 32 on q/k/v/o, AdamW, lr 1e-4, bf16. QLoRA: NF4, double quantization, bf16 compute.

Sides, each in a fresh process (`--side`), in the order listed, LoRA first, then QLoRA:

    tuneloop        the recipe's defaults (`share_prefix` finds nothing to share on this data;
                    `packing: auto` then packs)
    tuneloop-packed `train.packing: true`
    trl-default     SFTTrainer with its defaults (gradient checkpointing on, padded batches)
    trl-fastest     no gradient checkpointing, `padding_free=True` (flash attention's varlen
                    kernels where flash-attn is installed, SDPA with a block-diagonal mask else)
    unsloth         FastLanguageModel + TRL's SFTTrainer, Unsloth's defaults (its gradient
                    checkpointing), skipped if unsloth does not import

Measured per side: the training loop's wall-clock time (`torch.cuda.synchronize` at both ends),
real (unpadded) tokens/s, `torch.cuda.max_memory_allocated` and `max_memory_reserved`, and model
FLOPs utilisation: 4 x the parameters a token passes through (forward 2N, backward through the
frozen weights 2N; the adapters' own FLOPs not counted) per token, over the bf16 matmul peak
measured here (best of 3 s of 8192 x 8192 bf16 `torch.matmul`).
Writes bench/results/gpu-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bench" / "evaluation"))

SIDES = ("tuneloop", "tuneloop-packed", "trl-default", "trl-fastest", "unsloth")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def bf16_peak_tflops(n: int = 8192, seconds: float = 3.0) -> float:
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t0) / 1e12)
    return best


def attention() -> str:
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2"
    except ImportError:
        return "sdpa"


def train_tuneloop(args, qlora: bool, packed: bool) -> dict:
    import torch

    from tuneloop.cli.common import quiet_libraries
    from tuneloop.config import validate_recipe
    from tuneloop.train import session

    quiet_libraries()
    out = Path(args.out)
    train = {"method": "qlora" if qlora else "lora", "packing": True if packed else "auto",
             "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": TARGETS},
             "batch_size": args.batch_size, "max_steps": args.steps, "lr": 1e-4,
             "max_length": 512, "schedule": "linear", "warmup_ratio": 0.0,
             "checkpoint_every": 10**6, "precision": "bf16"}  # fmt: skip
    recipe = validate_recipe({
        "name": "gpu-bench", "workspace": str(out / "ws"), "model": {"name": str(args.model)},
        "data": {"train": str(args.data / "train.jsonl"),
                 "heldout": str(args.data / "heldout.jsonl")},
        "train": train,
    }).resolved(out)  # fmt: skip
    timed = {}
    real_loop = session.run_loop

    def loop(*a, **k):  # the loop alone, synchronised at both ends
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        state = real_loop(*a, **k)
        torch.cuda.synchronize()
        timed["seconds"] = time.perf_counter() - t0
        return state

    session.run_loop = loop
    info = session.train(recipe, progress=False).info()
    return {"seconds": timed["seconds"], "tokens": info["real_tokens"],
            "memory_estimate_gib": info["memory_estimate"]["total"] / 2**30}  # fmt: skip


def trl_dataset(args):
    from datasets import Dataset

    rows = [json.loads(x) for x in (args.data / "train.jsonl").read_text().splitlines()]
    return Dataset.from_list(
        [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    )


def train_trl(args, qlora: bool, fastest: bool, unsloth: bool = False) -> dict:
    if unsloth:
        from unsloth import FastLanguageModel  # must come before transformers
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    quant = None
    if qlora:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    peft_config = None
    if unsloth:
        model, tokenizer = FastLanguageModel.from_pretrained(
            str(args.model), max_seq_length=512, dtype=torch.bfloat16, load_in_4bit=qlora
        )
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules=TARGETS)  # fmt: skip
    else:
        model = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=torch.bfloat16, attn_implementation=attention(),
            quantization_config=quant, device_map={"": 0},
        )  # fmt: skip
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                 task_type="CAUSAL_LM")  # fmt: skip
    timer = {}

    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            timer["start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            torch.cuda.synchronize()
            timer["seconds"] = time.perf_counter() - timer["start"]

    config = SFTConfig(
        output_dir=str(Path(args.out) / "trl"), per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, learning_rate=1e-4, lr_scheduler_type="linear", warmup_steps=0,
        logging_steps=1, save_strategy="no", report_to="none", bf16=True,
        max_length=None if fastest else 512, padding_free=fastest,
        gradient_checkpointing=not fastest and not unsloth, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=config, train_dataset=trl_dataset(args),
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[Timer()])  # fmt: skip
    trainer.train()
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    return {"seconds": timer["seconds"], "tokens": tokens, "attention": attention()}


def run_side(args) -> int:
    import torch

    qlora = args.method == "qlora"
    if args.side.startswith("tuneloop"):
        result = train_tuneloop(args, qlora, args.side == "tuneloop-packed")
    else:
        result = train_trl(args, qlora, args.side == "trl-fastest", args.side == "unsloth")
    result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument("--methods", nargs="+", default=["lora", "qlora"])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)

    import torch
    from train_vs_trl import lora_step_flops_per_token, model_path, write_data

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark measures a GPU", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    model = model_path("1b", work)
    data = work / "data"
    write_data(data, "varied", args.steps * args.batch_size, 16)
    peak = bf16_peak_tflops()
    flops, body = lora_step_flops_per_token(model)
    results = []
    for method in args.methods:
        for side in args.sides:
            out = work / method / side
            cmd = [sys.executable, __file__, "--side", side, "--method", method, "--model",
                   str(model), "--data", str(data), "--out", str(out), "--steps",
                   str(args.steps), "--batch-size", str(args.batch_size)]  # fmt: skip
            print(f"{method} {side}", flush=True)
            t0 = time.perf_counter()
            env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            row = {"method": method, "side": side, "wall_s": round(time.perf_counter() - t0, 1)}
            if proc.returncode == 0 and (out / "result.json").is_file():
                row.update(json.loads((out / "result.json").read_text()))
                row["mfu"] = row["tokens_per_s"] * flops / (peak * 1e12)
                print(f"  {row['tokens_per_s']:.0f} tokens/s, MFU {row['mfu']:.1%}, peak "
                      f"{row['peak_allocated_gib']:.2f} GiB", flush=True)  # fmt: skip
            else:
                row["error"] = proc.stderr[-1500:]
                print(f"  failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
            results.append(row)
    summary = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_peak_tflops": peak,
        "model": {
            "shape": "Llama-3.2-1B body, SmolLM2 vocabulary",
            "body_params": body,
            "model_flops_per_token": flops,
        },
        "settings": {"steps": args.steps, "batch_size": args.batch_size, "data": "varied"},
        "results": results,
    }
    name = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()
    out = REPO / "bench" / "results" / f"gpu-{name}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
