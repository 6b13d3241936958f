"""Adapters by name: where each one is, what it was trained with, and a bounded cache of them.

An adapter is registered from a run (`.tuneloop/runs/<id>`, whose `adapter/` folder is used) or
from an adapter folder (one holding `adapter_config.json`). Besides the PEFT weights, a tuneloop
adapter folder keeps the tokenizer and chat template it was trained with and `tuneloop.json`
(the recipe), from which the server takes what training and evaluation used:

- the chat template, to render prompts exactly as in training;
- `task.instruction`, given as the system message to a chat that has none (as in training and
  in `tuneloop eval`);
- `eval.max_new_tokens`, the default `max_tokens` of a request to this adapter.

The cache (`AdapterPool`) keeps at most `capacity` adapters on the one base model, loading each
on first use and evicting the least recently used one that the next batch does not need.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import UserError
from tuneloop.models.adapters import PROMPT_LEARNING, prompt_learning_refusal

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch, and the base model's name here
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path  # the folder holding adapter_config.json
    peft_type: str
    method: str | None  # the recipe's train.method: lora, qlora, dora, ...
    use_dora: bool
    rank: int | None
    base_model: str | None  # `model.name` of the recipe it was trained with
    instruction: str | None
    max_new_tokens: int | None
    run_id: str | None

    @property
    def served_on(self) -> str:
        """What this adapter runs on here, against what it was trained and evaluated on."""
        if self.method == "qlora":
            return (
                "the full-precision base (trained and evaluated on a 4-bit NF4 base: answers "
                "can differ from tuneloop eval's)"
            )
        return "the full-precision base, as trained and evaluated"

    @property
    def mixable(self) -> bool:
        """PEFT batches requests for different adapters together for plain LoRA only."""
        return self.peft_type == "LORA" and not self.use_dora


def adapter_folder(ref: str | Path, workspace: Path | None = None) -> Path:
    """The adapter folder for a run id, a run folder or an adapter folder."""
    from tuneloop.workspace import find_run

    path = Path(ref)
    if (path / "adapter_config.json").is_file():
        return path.resolve()
    if (path / "adapter" / "adapter_config.json").is_file():
        return (path / "adapter").resolve()
    run = find_run(str(ref), workspace)
    if not (run.adapter_dir / "adapter_config.json").is_file():
        raise UserError(
            f"run {run.id} has no finished adapter (status: {run.info().get('status')})",
            str(run.path),
            f"finish training first: tuneloop train --resume --run {run.path}",
        )
    return run.adapter_dir


def read_spec(name: str, folder: Path) -> AdapterSpec:
    """What the server needs to know about the adapter in `folder`, checked."""
    if name == BASE or not NAME.match(name):
        raise UserError(
            f"adapter name {name!r} is not allowed",
            "--adapter",
            f"use letters, digits and ._:/- (not `{BASE}`, which names the base model)",
        )
    config = json.loads((folder / "adapter_config.json").read_text())
    meta_path = folder / "tuneloop.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    recipe = meta.get("recipe") or {}
    spec = AdapterSpec(
        name=name,
        path=folder,
        peft_type=str(config.get("peft_type", "")).upper(),
        method=(recipe.get("train") or {}).get("method"),
        use_dora=bool(config.get("use_dora")),
        rank=config.get("r"),
        base_model=meta.get("base_model"),
        instruction=(recipe.get("task") or {}).get("instruction"),
        max_new_tokens=(recipe.get("eval") or {}).get("max_new_tokens"),
        run_id=meta.get("run"),
    )
    if spec.peft_type in PROMPT_LEARNING:
        raise prompt_learning_refusal(spec.peft_type, folder, str(folder))
    if spec.peft_type != "LORA":  # IA3: its scaling vectors merge into the base weights
        raise UserError(
            f"adapter `{name}` is a {spec.peft_type} adapter; tuneloop serve serves LoRA adapters",
            str(folder),
            "merge it into the base model (tuneloop export RUN --merge) and serve the merged "
            "folder with --model",
        )
    return spec


def parse_adapter_arg(arg: str, workspace: Path | None = None) -> AdapterSpec:
    """`NAME=REF` or `REF`; REF is a run id, a run folder or an adapter folder.

    Without a name, a run's adapter is named after the run id and an adapter folder after
    itself (or its run folder, when it is a run's `adapter/`).
    """
    name, sep, ref = arg.partition("=")
    if not sep:
        name, ref = "", arg
    folder = adapter_folder(ref, workspace)
    if not name:
        name = folder.parent.name if folder.name == "adapter" else folder.name
    return read_spec(name, folder)


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two `model.name`s point at the same model (names, or paths to one folder)."""
    if a is None or b is None:
        return True  # nothing recorded: nothing to check
    if a == b:
        return True
    from tuneloop.models.load import resolve

    try:  # `smollm2-135m-instruct` and the folder it was converted into are one model
        return resolve(a).path.resolve() == resolve(b).path.resolve()
    except UserError:
        return False


class AdapterPool:
    """At most `capacity` adapters on one base model, least recently used evicted first.

    The first adapter wraps the base model in a `PeftModel`; later ones are added to it with
    `load_adapter` and removed with `delete_adapter`. Only the engine's worker thread calls it.
    """

    def __init__(
        self, base_model, specs: dict[str, AdapterSpec], capacity: int, on_load=None, on_evict=None
    ):
        if capacity < 1:
            raise UserError(
                "the adapter cache must hold at least 1 adapter",
                "--cache-size",
                "pass --cache-size 1 or more",
            )
        self.model = base_model
        self.specs = specs
        self.capacity = capacity
        self.loaded: OrderedDict[str, None] = OrderedDict()
        self.on_load, self.on_evict = on_load, on_evict

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def ensure(self, names: set[str]) -> None:
        """Have every adapter in `names` loaded (they must fit in the cache together)."""
        wanted = [n for n in names if n != BASE]
        assert len(wanted) <= self.capacity, "the batcher never asks for more than fits"
        for name in wanted:
            if name not in self.loaded:
                self._load(name)
            self.loaded.move_to_end(name)
        while len(self.loaded) > self.capacity:
            victim = next(n for n in self.loaded if n not in names)
            self._evict(victim)

    def _load(self, name: str) -> None:
        from peft import PeftModel

        spec = self.specs[name]
        if self.is_peft:
            self.model.load_adapter(str(spec.path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(spec.path), adapter_name=name)
        self.model.eval()
        self.loaded[name] = None
        if self.on_load:
            self.on_load(name)

    def _evict(self, name: str) -> None:
        # Never delete the active adapter: PeftModel would keep pointing at it.
        self.model.set_adapter(next(n for n in reversed(self.loaded) if n != name))
        self.model.delete_adapter(name)
        del self.loaded[name]
        if self.on_evict:
            self.on_evict(name)


def base_model_of(model: str | None, adapters: list[AdapterSpec]) -> str:
    """The base model to serve: `--model`, else the one the adapters were trained on; every
    adapter must have been trained on it."""
    if model is None:
        recorded = [a.base_model for a in adapters if a.base_model]
        if not recorded:
            raise UserError(
                "no base model to serve",
                "--model",
                "pass --model NAME, or adapters trained by tuneloop",
            )
        model = recorded[0]
    for a in adapters:
        if not same_model(a.base_model, model):
            raise UserError(
                f"adapter `{a.name}` was trained on `{a.base_model}`, not on `{model}`",
                str(a.path),
                "serve adapters of one base model together (one server per base model)",
            )
    return model
