"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from conftest import kill_at_step

TUNELOOP = [sys.executable, "-m", "tuneloop.cli.main"]


def write_data(folder: Path) -> tuple[Path, Path]:
    labels = ["alpha", "beta", "gamma"]
    rows = [
        {"messages": [
            {"role": "user", "content": f"item {i} about {labels[i % 3]} things"},
            {"role": "assistant", "content": labels[i % 3]},
        ]}
        for i in range(30)
    ]  # fmt: skip
    train, heldout = folder / "train.jsonl", folder / "heldout.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    heldout.write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    return train, heldout


def write_recipe(folder: Path, model_dir: Path, train: Path, heldout: Path) -> Path:
    recipe = {
        "name": "resume",
        "workspace": str(folder / "ws"),
        "model": {"name": str(model_dir)},
        "data": {"train": str(train), "heldout": str(heldout)},
        "train": {
            "max_steps": 12,
            "batch_size": 4,
            "lr": 0.01,
            "checkpoint_every": 4,
            "warmup_ratio": 0.2,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},  # dropout: the RNG state must resume
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tuneloop.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# One thread: a tiny model gains nothing from two, and loses a lot on a busy machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tuneloop(*args):
    return subprocess.run(
        [*TUNELOOP, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300
    )


def only_run(folder: Path) -> Path:
    (run,) = list((folder / "ws" / "runs").iterdir())
    return run


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    train, heldout = write_data(tmp_path)
    straight = write_recipe(tmp_path / "straight", tiny_model_dir, train, heldout)
    killed = write_recipe(tmp_path / "killed", tiny_model_dir, train, heldout)

    done = tuneloop("train", straight, "--quiet")
    assert done.returncode == 0, done.stderr

    # Killed from outside after step 5: past the checkpoint of step 4, most likely before
    # the one of step 8 (the signal lands a step or so after step 5 is logged).
    crash = subprocess.Popen([*TUNELOOP, "train", str(killed), "--quiet"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    kill_at_step(crash, tmp_path / "killed" / "ws" / "runs", 5)
    assert crash.returncode == -signal.SIGKILL
    run = only_run(tmp_path / "killed")
    assert json.loads((run / "run.json").read_text())["status"] == "training"
    assert "step-000004" in {p.name for p in (run / "checkpoints").iterdir()}
    assert 5 <= len(losses(run)) < 12  # steps past the last checkpoint are lost on resume

    resumed = tuneloop("train", killed, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr

    reference = only_run(tmp_path / "straight")
    assert losses(run) == losses(reference)  # exactly, step by step
    assert len(losses(run)) == 12
    want = load_file(reference / "adapter" / "adapter_model.safetensors")
    got = load_file(run / "adapter" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
