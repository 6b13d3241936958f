"""What the steps of the loop tell the registry. Each function opens the workspace's registry,
writes one thing, and closes it, so any process can call it at any time."""

from __future__ import annotations

from pathlib import Path

from tuneloop.data.records import Example, content_hash, prompt_hash
from tuneloop.registry.store import Registry


def workspace_of(run_path: Path) -> Path:
    """`<workspace>/runs/<id>` -> `<workspace>`."""
    return Path(run_path).parent.parent


def _ensure_run(reg: Registry, run_path: Path, run_id: str) -> None:
    """Register a run made before its workspace had a registry (or copied in from elsewhere)."""
    if reg.run(run_id) is not None:
        return
    import json

    import yaml

    recipe_file, info_file = Path(run_path) / "recipe.yaml", Path(run_path) / "run.json"
    recipe = yaml.safe_load(recipe_file.read_text()) if recipe_file.exists() else {}
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    reg.add_run(run_id, info.get("name", run_id), str(run_path), recipe or {}, info.get("parent"))
    status = info.get("status")
    if status and status not in ("created", "training"):
        reg.update_run(run_id, status=status)


def run_created(run_path: Path, run_id: str, name: str, recipe: dict, parent: str | None) -> None:
    with Registry(workspace_of(run_path)) as reg:
        reg.add_run(run_id, name, str(run_path), recipe, parent=parent)


def run_updated(run_path: Path, run_id: str, fields: dict) -> None:
    """Mirror the lineage-relevant parts of a `run.json` update into the registry."""
    columns: dict = {}
    if "status" in fields:
        columns["status"] = fields["status"]
    if "model" in fields:
        columns["model_name"] = fields["model"].get("name")
        columns["weights_sha256"] = fields["model"].get("weights_sha256_16")
    if "hardware" in fields:
        columns["hardware"] = fields["hardware"]
    summary_keys = ("steps", "tokens", "supervised_tokens", "train_seconds", "tokens_per_s",
                    "final_loss", "precision", "device", "total_steps", "truncation")  # fmt: skip
    summary = {k: fields[k] for k in summary_keys if k in fields}
    if "data" in fields and fields["data"].get("train_sha256"):
        _register_datasets(Path(run_path), run_id, fields["data"])
    if not columns and not summary:
        return
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        if summary:
            current = (reg.run(run_id) or {}).get("summary") or {}
            columns["summary"] = {**current, **summary}
        reg.update_run(run_id, **columns)


def dataset_hashes(examples: list[Example]) -> list[list[str]]:
    """[prompt hash, content hash] per example: enough to tell added, removed and edited."""
    return [[prompt_hash(ex), content_hash(ex)] for ex in examples]


def datasets_used(run_path: Path, run_id: str, train: list[Example], heldout: list[Example],
                  info: dict, lint: dict | None = None) -> None:  # fmt: skip
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        train_id = reg.add_dataset(
            info["train_sha256"], info["train_file"], dataset_hashes(train), lint
        )
        heldout_sha = info.get("heldout_sha256") or f"split-of:{info['train_sha256']}"
        heldout_path = info.get("heldout_file") or f"{run_path}/data/heldout.jsonl"
        heldout_id = reg.add_dataset(heldout_sha, heldout_path, dataset_hashes(heldout))
        reg.update_run(run_id, train_dataset_id=train_id, heldout_dataset_id=heldout_id)


def _register_datasets(run_path: Path, run_id: str, info: dict) -> None:
    """Register the run's train and held-out sets with per-example hashes for later diffs.

    The examples are read again exactly as training read them (same recipe, same split); data
    that is not chat examples (preference pairs) is registered by file hash alone.
    """
    from tuneloop.config import load_recipe
    from tuneloop.data.prepare import load_datasets
    from tuneloop.errors import UserError

    try:
        data = load_datasets(load_recipe(run_path / "recipe.yaml"))
        train, heldout = data.train, data.heldout
    except (UserError, KeyError, ValueError):
        train, heldout = [], []
    datasets_used(run_path, run_id, train, heldout, info)


def evaluation(run_path: Path, run_id: str, rung: str, suite: str, metrics: dict,
               items_path: Path | None = None) -> None:  # fmt: skip
    from tuneloop.files import sha256_file

    sha = sha256_file(items_path) if items_path and Path(items_path).exists() else None
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        reg.add_eval(run_id, rung, suite, metrics, str(items_path) if items_path else None, sha)


def gate(run_path: Path, run_id: str, passed: bool, reasons: list | dict) -> None:
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        reg.add_gate(run_id, passed, reasons)


def export(run_path: Path, run_id: str, kind: str, path: Path, details: dict | None = None) -> None:
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        reg.add_export(run_id, kind, str(path), details)
