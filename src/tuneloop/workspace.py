"""The workspace folder (default `.tuneloop/`) and the run folders inside it.

    .tuneloop/runs/<run id>/
        recipe.yaml        the resolved recipe (absolute paths, every default filled in)
        run.json           status, model, data hashes, truncation, hardware, timings
        data/              the train/held-out split, when the run made it
        metrics.jsonl      one line per optimizer step
        checkpoints/       step-000050/ ... (resumable)
        adapter/           the final PEFT adapter with tokenizer and chat template
        eval/              <rung>.jsonl (per item) and <rung>.json (metrics)

A run folder is created only after the data and recipe have been checked, so a mistake in
either never leaves a half-made run behind.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from tuneloop.config import Recipe
from tuneloop.errors import UserError
from tuneloop.files import write_json, write_text


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def recipe_path(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def info(self) -> dict:
        return json.loads(self.info_path.read_text()) if self.info_path.exists() else {}

    def update(self, **fields) -> dict:
        """Update run.json and mirror the lineage-relevant fields into the registry."""
        from tuneloop.registry import record

        info = self.info()
        info.update(fields)
        write_json(self.info_path, info)
        record.run_updated(self.path, self.id, fields)
        return info


def runs_root(workspace: Path) -> Path:
    return Path(workspace) / "runs"


def new_run(workspace: Path, name: str, recipe_yaml: str, parent: str | None = None) -> Run:
    """Create `runs/<timestamp>-<name>` (made unique) holding the resolved recipe, and
    register it (with its parent run, when it refines an earlier one)."""
    import yaml

    from tuneloop.registry import record

    recipe = yaml.safe_load(recipe_yaml) or {}
    parent = parent or recipe.get("parent")

    root = runs_root(workspace)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (f"{stamp}-{name}" if n == 0 else f"{stamp}-{name}-{n}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    run = Run(path)
    write_text(run.recipe_path, recipe_yaml)
    record.run_created(path, run.id, name, recipe, parent)
    write_json(
        run.info_path,
        {
            "id": run.id,
            "name": name,
            "status": "created",
            "parent": parent,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "hardware": hardware(),
        },
    )
    return run


def find_run(ref: str | Path, workspace: Path | None = None) -> Run:
    """A run by folder path, or by id (or unique id prefix/suffix) inside the workspace."""
    path = Path(ref)
    if (path / "run.json").is_file():
        return Run(path.resolve())
    root = runs_root(workspace or Recipe.model_fields["workspace"].default)
    if root.is_dir():
        matches = [p for p in sorted(root.iterdir()) if ref in p.name and (p / "run.json").exists()]
        exact = [p for p in matches if p.name == ref]
        if exact or len(matches) == 1:
            return Run((exact or matches)[0].resolve())
        if len(matches) > 1:
            raise UserError(
                f"run `{ref}` is ambiguous: {', '.join(p.name for p in matches)}",
                fix="give more of the run id, or the run folder's path",
            )
    raise UserError(
        f"no run `{ref}` (looked for a folder with run.json, and in {root})",
        fix="pass a run folder such as .tuneloop/runs/<id>, or list runs with `ls .tuneloop/runs`",
    )


def latest_run(workspace: Path, unfinished: bool = False) -> Run | None:
    root = runs_root(workspace)
    if not root.is_dir():
        return None
    runs = [Run(p) for p in sorted(root.iterdir()) if (p / "run.json").exists()]
    if unfinished:
        runs = [r for r in runs if r.info().get("status") != "finished"]
    return runs[-1] if runs else None


def hardware() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
