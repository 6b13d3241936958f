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
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.errors import UserError
from tuneloop.models.adapters import PROMPT_LEARNING, prompt_learning_refusal
from tuneloop.models.virtual import KINDS as VIRTUAL_KINDS

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch, and the base model's name here
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path  # the folder holding adapter_config.json (or a full run's model/ folder)
    peft_type: str  # LORA, IA3, PROMPT_TUNING, P_TUNING, PREFIX_TUNING; FULL for a full run
    method: str | None  # the recipe's train.method: lora, qlora, dora, ...
    use_dora: bool
    rank: int | None
    base_model: str | None  # `model.name` of the recipe it was trained with
    instruction: str | None
    max_new_tokens: int | None
    run_id: str | None
    train: dict = field(default_factory=dict, compare=False, hash=False)  # recipe's train:

    @property
    def served_on(self) -> str:
        """What this adapter runs on here: as it was trained and evaluated, always."""
        if self.peft_type == "FULL":
            return "its own fine-tuned weights, as trained and evaluated"
        if self.method == "qlora":
            return "a 4-bit NF4 base of its own, as trained and evaluated"
        if self.peft_type == "IA3":
            return (
                "a copy of the full-precision base with its IA3 vectors, as trained, as evaluated"
            )
        if self.virtual:
            return "the full-precision base with its virtual tokens, as trained and evaluated"
        return "the full-precision base, as trained and evaluated"

    @property
    def virtual(self) -> bool:
        """A prompt-learning adapter: virtual tokens before the prompt, no weights."""
        return self.peft_type in VIRTUAL_KINDS

    @property
    def own_model(self) -> bool:
        """Served by a model of its own, not the shared base: a QLoRA adapter on the 4-bit
        base it was trained on, an IA3 adapter on a copy of the base (PEFT holds one adapter
        type per model), a fully fine-tuned model."""
        return self.peft_type in ("FULL", "IA3") or self.method == "qlora"

    @property
    def mixable(self) -> bool:
        """Rows of this adapter share the mixed batch: plain LoRA (PEFT's mixed-adapter
        batches) and prompt-learning adapters (their rows run as the base with their own
        virtual tokens); DoRA, and adapters on models of their own, run in batches of their
        own."""
        if self.own_model:
            return False
        return (self.peft_type == "LORA" and not self.use_dora) or self.virtual


def adapter_folder(ref: str | Path, workspace: Path | None = None) -> Path:
    """The adapter folder for a run id, a run folder or an adapter folder; a fully fine-tuned
    run's `model/` folder."""
    from tuneloop.workspace import find_run

    path = Path(ref)
    for folder in (path, path / "adapter", path / "model"):
        if (folder / "adapter_config.json").is_file() or _full_model(folder):
            return folder.resolve()
    run = find_run(str(ref), workspace)
    for folder in (run.adapter_dir, run.path / "model"):
        if (folder / "adapter_config.json").is_file() or _full_model(folder):
            return folder
    raise UserError(
        f"run {run.id} has no finished adapter or model (status: {run.info().get('status')})",
        str(run.path),
        f"finish training first: tuneloop train --resume --run {run.path}",
    )


def _full_model(folder: Path) -> bool:
    """A fully fine-tuned run's saved model: weights and config, and tuneloop's note of how."""
    if not ((folder / "config.json").is_file() and (folder / "tuneloop.json").is_file()):
        return False
    return json.loads((folder / "tuneloop.json").read_text()).get("method") == "full"


def read_spec(name: str, folder: Path) -> AdapterSpec:
    """What the server needs to know about the adapter in `folder`, checked."""
    if name == BASE or not NAME.match(name):
        raise UserError(
            f"adapter name {name!r} is not allowed",
            "--adapter",
            f"use letters, digits and ._:/- (not `{BASE}`, which names the base model)",
        )
    full = _full_model(folder)
    config = {} if full else json.loads((folder / "adapter_config.json").read_text())
    meta_path = folder / "tuneloop.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    recipe = meta.get("recipe") or {}
    spec = AdapterSpec(
        name=name,
        path=folder,
        peft_type="FULL" if full else str(config.get("peft_type", "")).upper(),
        method=(recipe.get("train") or {}).get("method") or meta.get("method"),
        use_dora=bool(config.get("use_dora")),
        rank=config.get("r"),
        base_model=meta.get("base_model"),
        instruction=(recipe.get("task") or {}).get("instruction"),
        max_new_tokens=(recipe.get("eval") or {}).get("max_new_tokens"),
        run_id=meta.get("run"),
        train=recipe.get("train") or {},
    )
    if spec.peft_type in PROMPT_LEARNING and spec.peft_type not in VIRTUAL_KINDS:
        raise prompt_learning_refusal(spec.peft_type, folder, str(folder))
    if spec.peft_type not in ("LORA", "IA3", "FULL", *VIRTUAL_KINDS):
        raise UserError(
            f"adapter `{name}` is a {spec.peft_type} adapter, which tuneloop serve does not serve",
            str(folder),
            "serve LoRA, DoRA, QLoRA, IA3, prompt, P-tuning or prefix adapters, or full runs",
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
        name = folder.parent.name if folder.name in ("adapter", "model") else folder.name
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

    def forget(self, name: str) -> None:
        """Remove an adapter that is no longer served, if loaded (the last one unwraps the
        base model again)."""
        if name not in self.loaded:
            return
        if len(self.loaded) == 1:
            self.model = self.model.unload()  # the base model, its LoRA layers removed
            del self.loaded[name]
            if self.on_evict:
                self.on_evict(name)
            return
        self._evict(name)

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
