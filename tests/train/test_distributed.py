"""Two CPU processes (gloo over loopback, started by `accelerate launch`) follow the same loss
curve as one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tuneloop.config import load_recipe
from tuneloop.models.adapters import load_trained
from tuneloop.train.session import train

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_recipe(tmp_path, model_dir, name, **train):
    labels = ["alpha", "beta", "gamma"]
    rows = [
        {"messages": [{"role": "user", "content": f"item {i} {labels[i % 3]}" + " x" * (i % 5)},
                      {"role": "assistant", "content": labels[i % 3]}]}
        for i in range(30)
    ]  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "name": name,
        "workspace": str(tmp_path / name),
        "model": {"name": str(model_dir)},
        "data": {"train": str(data)},
        # fp32: bf16 rounds each process's half-batch sums differently (about 1e-3)
        "train": {"max_steps": 5, "batch_size": 6, "grad_accum": 2, "lr": 0.02,
                  "precision": "fp32", "lora": {"dropout": 0.0}, "eval_every": 2, **train},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def curve(run_dir):
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records], [r["eval_loss"] for r in records if "eval_loss" in r]


def launch_two(recipe, mode: str):
    """`tuneloop train` in two CPU processes under `accelerate launch` (`--multi_gpu` or
    `--use_fsdp`); the run folder it made."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", mode,
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
              "--main_process_port", str(free_port())]  # fmt: skip
    proc = subprocess.run(
        [*launch, "-m", "tuneloop.cli.main", "train", str(recipe), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = list((recipe.parent / recipe.stem / "runs").iterdir())
    assert json.loads((run / "run.json").read_text())["processes"] == 2
    return run


def test_two_processes_match_one(tmp_path, tiny_model_dir):
    one = train(load_recipe(write_recipe(tmp_path, tiny_model_dir, "one")), progress=False)
    two = launch_two(write_recipe(tmp_path, tiny_model_dir, "two"), "--multi_gpu")

    losses_1, evals_1 = curve(one.path)
    losses_2, evals_2 = curve(two)
    assert len(losses_1) == len(losses_2) == 5 and len(evals_1) == len(evals_2) == 3
    assert losses_2 == pytest.approx(losses_1, abs=1e-5)
    # held-out losses near 5, summed over rows laid out differently per process (packed):
    # float32 rounding of a few parts in a million
    assert evals_2 == pytest.approx(evals_1, rel=1e-5)
    want = load_file(one.adapter_dir / "adapter_model.safetensors")
    got = load_file(two / "adapter" / "adapter_model.safetensors")
    # Weights agree less tightly than losses: Adam divides by sqrt(v), which turns rounding in
    # a near-zero gradient into a visible difference of that one weight.
    worst = max(float((want[name] - got[name]).abs().max()) for name in want)
    assert worst < 1e-3, worst


def test_fsdp_two_processes_match_one(tmp_path, tiny_model_dir):
    """Full fine-tuning sharded over two CPU processes (FSDP2, see `distributed.shard`)."""
    full = {"method": "full", "lr": 0.002}
    one = train(load_recipe(write_recipe(tmp_path, tiny_model_dir, "one", **full)), progress=False)
    two = launch_two(write_recipe(tmp_path, tiny_model_dir, "two", **full), "--use_fsdp")
    assert json.loads((two / "run.json").read_text())["parallelism"] == "fsdp"

    losses_1, evals_1 = curve(one.path)
    losses_2, evals_2 = curve(two)
    assert len(losses_1) == len(losses_2) == 5 and len(evals_1) == len(evals_2) == 3
    assert losses_2 == pytest.approx(losses_1, abs=1e-5)
    assert evals_2 == pytest.approx(evals_1, abs=1e-5)
    ids = torch.arange(3, 40).reshape(1, -1)
    with torch.no_grad():
        want = load_trained(None, one.path / "model")(input_ids=ids).logits
        got = load_trained(None, two / "model")(input_ids=ids).logits
    worst = float((want - got).abs().max())
    assert worst < 1e-4, worst
