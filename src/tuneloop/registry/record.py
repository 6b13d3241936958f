"""What the steps of the loop tell the registry. Each function opens the workspace's registry,
writes one thing, and closes it, so any process can call it at any time.

The registry is a record of the work, not the work: when recording fails (a locked or broken
database, data that can no longer be read), the step goes on, and the failure is said on stderr
with its reason and added to the run's `run.json` under `notes`.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
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
    import yaml

    recipe_file, info_file = Path(run_path) / "recipe.yaml", Path(run_path) / "run.json"
    recipe = yaml.safe_load(recipe_file.read_text()) if recipe_file.exists() else {}
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    reg.add_run(run_id, info.get("name", run_id), str(run_path), recipe or {}, info.get("parent"))
    status = info.get("status")
    if status and status not in ("created", "training"):
        reg.update_run(run_id, status=status)


def tell(run_path: Path, message: str) -> None:
    """Say `message` on stderr and add it to the run's `run.json` notes (when it has one)."""
    print(f"tuneloop: {message}", file=sys.stderr)
    info_file = Path(run_path) / "run.json"
    if not info_file.exists():
        return
    from tuneloop.files import write_json

    try:
        info = json.loads(info_file.read_text())
        if message not in info.setdefault("notes", []):
            info["notes"].append(message)
            write_json(info_file, info)
    except (OSError, ValueError) as err:
        print(f"tuneloop: could not add that note to {info_file}: {err}", file=sys.stderr)


def _reported(what: str) -> Callable:
    """Run a recording step; if it fails, say so (`tell`) instead of failing the caller."""

    def wrap(step: Callable) -> Callable:
        @functools.wraps(step)
        def guarded(run_path: Path, run_id: str, *args, **kwargs) -> None:
            try:
                step(run_path, run_id, *args, **kwargs)
            except Exception as err:  # any failure is said, none is raised
                tell(
                    run_path,
                    f"the registry did not record {what} of run {run_id} "
                    f"({type(err).__name__}: {err}); the run itself is unaffected, but "
                    "`tuneloop runs show` lacks it",
                )

        return guarded

    return wrap


@_reported("the new run")
def run_created(run_path: Path, run_id: str, name: str, recipe: dict, parent: str | None) -> None:
    with Registry(workspace_of(run_path)) as reg:
        reg.add_run(run_id, name, str(run_path), recipe, parent=parent)


@_reported("an update (status, model, hardware, summary)")
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
    """Link the run to its train and held-out sets. A side with no examples is not registered
    (it would read as real data in every diff): an empty train set is an error, an empty
    held-out set is said."""
    if not train:
        raise ValueError(f"no training examples were read from {info['train_file']}")
    heldout_sha = info.get("heldout_sha256") or f"split-of:{info['train_sha256']}"
    heldout_path = info.get("heldout_file") or f"{run_path}/data/heldout.jsonl"
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        train_id = reg.add_dataset(
            info["train_sha256"], info["train_file"], dataset_hashes(train), lint,
            teacher_provenance(run_path, info["train_file"], info["train_sha256"]),
        )  # fmt: skip
        columns = {"train_dataset_id": train_id}
        if heldout:
            columns["heldout_dataset_id"] = reg.add_dataset(
                heldout_sha, heldout_path, dataset_hashes(heldout), None,
                teacher_provenance(run_path, info.get("heldout_file"), heldout_sha),
            )  # fmt: skip
        reg.update_run(run_id, **columns)
    if not heldout:
        tell(run_path, f"the held-out set of run {run_id} ({heldout_path}) has no examples, "
                       "so the registry links none")  # fmt: skip


def teacher_provenance(run_path: Path, data_file: str | None, sha256: str) -> dict | None:
    """The provenance `tuneloop distill generate` wrote beside `data_file`, if any, as the
    registry links it: its path and hash, the teacher, the prompts, and whether the data file is
    still what the teacher wrote (`matches`; None for a provenance that did not record it)."""
    from tuneloop.files import provenance_path, sha256_file

    if not data_file or not provenance_path(data_file).is_file():
        return None
    path = provenance_path(data_file)
    try:
        prov = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        tell(run_path, f"the teacher's provenance {path} could not be read ({err}); not linked")
        return None
    written = (prov.get("output") or {}).get("sha256")
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "teacher": prov.get("teacher"),
        "prompts": prov.get("prompts"),
        "written": prov.get("written"),
        "matches": None if written is None else written == sha256,
    }


@_reported("the datasets")
def _register_datasets(run_path: Path, run_id: str, info: dict) -> None:
    """Register the run's train and held-out sets with per-example hashes for later diffs,
    with the lint counts training recorded (`info["lint"]`) and a teacher's provenance.

    The examples are read again as training read them: the split saved in the run, else the
    recipe's files (`prepare.run_examples`; a preference pair counts as its prompt with the
    chosen answer). Data that cannot be read again is not registered, and that is said.
    """
    from tuneloop.config import load_recipe
    from tuneloop.data.prepare import run_examples

    recipe = load_recipe(run_path / "recipe.yaml")
    saved = Path(run_path) / "data"
    train = run_examples(recipe, saved, "train")
    heldout = run_examples(recipe, saved, "heldout")
    datasets_used(run_path, run_id, train, heldout, info, info.get("lint"))


@_reported("an evaluation")
def evaluation(run_path: Path, run_id: str, rung: str, suite: str, metrics: dict,
               items_path: Path | None = None) -> None:  # fmt: skip
    from tuneloop.files import sha256_file

    sha = sha256_file(items_path) if items_path and Path(items_path).exists() else None
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        reg.add_eval(run_id, rung, suite, metrics, str(items_path) if items_path else None, sha)


@_reported("a gate decision")
def gate(run_path: Path, run_id: str, passed: bool, reasons: list | dict) -> None:
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        reg.add_gate(run_id, passed, reasons)


@_reported("an export")
def export(run_path: Path, run_id: str, kind: str, path: Path, details: dict | None = None) -> None:
    with Registry(workspace_of(run_path)) as reg:
        _ensure_run(reg, run_path, run_id)
        reg.add_export(run_id, kind, str(path), details)
