"""Two training processes share one registry; one is killed with SIGKILL mid-run."""

import json
import signal
import subprocess
import sys

import yaml

from conftest import kill_at_step
from tuneloop.registry import Registry


def write_recipe(folder, workspace, model_dir, name):
    folder.mkdir(parents=True)
    rows = [
        {"messages": [{"role": "user", "content": f"q {i} {name}"},
                      {"role": "assistant", "content": ["yes", "no"][i % 2]}]}
        for i in range(30)
    ]  # fmt: skip
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    recipe = {
        "name": name,
        "workspace": str(workspace),
        "model": {"name": str(model_dir)},
        "data": {"train": "train.jsonl", "heldout": "heldout.jsonl"},
        "train": {"max_steps": 40, "batch_size": 4, "checkpoint_every": 5},
    }
    (folder / "tuneloop.yaml").write_text(yaml.safe_dump(recipe))
    return folder / "tuneloop.yaml"


def test_killed_run_shows_failed_and_registry_stays_intact(tmp_path, tiny_model_dir):
    workspace = tmp_path / "ws"
    a = write_recipe(tmp_path / "a", workspace, tiny_model_dir, "survivor")
    b = write_recipe(tmp_path / "b", workspace, tiny_model_dir, "victim")
    cmd = [sys.executable, "-m", "tuneloop.cli.main", "train", "--quiet"]
    survivor = subprocess.Popen([*cmd, str(a)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim = subprocess.Popen([*cmd, str(b)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_at_step(victim, workspace / "runs", 12, metrics="*-victim/metrics.jsonl")
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err.decode()
    assert victim.returncode == -signal.SIGKILL

    with Registry(workspace) as reg:
        assert reg.integrity() == "ok"
        runs = {r["name"]: r for r in reg.runs()}
        assert runs["survivor"]["status"] == "finished"
        assert runs["survivor"]["summary"]["steps"] == 40
        assert runs["victim"]["status"] == "failed"  # not `training` forever
