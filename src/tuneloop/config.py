"""The recipe (`tuneloop.yaml`): typed, grouped, validated once, saved resolved with every run.

Defaults live here and nowhere else. Unknown keys are errors, and every problem in a recipe is
reported at once with its line in the file, the field, the value and the fix:

    tuneloop.yaml:7 (train.lr): Input should be greater than 0; got -0.1
      fix: set `train.lr` to a number greater than 0 (default: 0.0002)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneloop.errors import Problem, UserError

DEFAULT_MODEL = "smollm2-135m-instruct"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field(
        DEFAULT_MODEL,
        description="The embedded default, a local Hugging Face folder, or a .gguf file.",
    )
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with the model. Only for models you trust."
    )


class CsvConfig(Section):
    text: str = Field("text", description="Column holding the user message.")
    label: str | None = Field("label", description="Column holding the class label, if any.")
    target: str | None = Field(
        None, description="Column holding the answer; defaults to the label column."
    )


class SplitConfig(Section):
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class DataConfig(Section):
    train: Path = Field(description="Training data file (JSONL, JSON or CSV).")
    heldout: Path | None = Field(
        None, description="Held-out data; when absent, a split of `train` is made and saved."
    )
    format: Literal["auto", "messages", "alpaca", "sharegpt", "prompt_completion", "csv"] = "auto"
    csv: CsvConfig | None = None
    split: SplitConfig = SplitConfig()


class TaskConfig(Section):
    kind: Literal["auto", "label", "json", "text"] = Field(
        "auto", description="Decides the metrics; `auto` infers it from the references."
    )
    instruction: str | None = Field(
        None,
        description="System prompt given to every example that has none, in training and "
        "in every evaluation rung (the zero-shot baseline included).",
    )


class LoraConfig(Section):
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class TrainConfig(Section):
    method: Literal["lora"] = "lora"
    lora: LoraConfig = LoraConfig()
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Overrides `epochs` when set.")
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(2e-4, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="`auto` uses bf16 autocast where the CPU or GPU supports it."
    )
    max_length: int = Field(512, gt=8)
    truncation: Literal["drop", "truncate_left", "truncate_right"] = Field(
        "drop",
        description="Examples longer than max_length: `drop` them, cut the start of the "
        "prompt (`truncate_left`), or cut the end (`truncate_right`).",
    )
    checkpoint_every: int = Field(50, gt=0, description="Optimizer steps between checkpoints.")
    keep_checkpoints: int = Field(2, gt=0)
    log_every: int = Field(1, gt=0)


class EvalConfig(Section):
    max_new_tokens: int = Field(32, gt=0)
    batch_size: int = Field(16, gt=0)
    max_items: int | None = Field(None, gt=0, description="Evaluate the first N held-out items.")


class TrackConfig(Section):
    tensorboard: bool = Field(False, description="Write TensorBoard event files into the run.")
    mlflow: str | None = Field(
        None,
        description="MLflow tracking URI (a server such as http://127.0.0.1:5000, or "
        "sqlite:///mlflow.db); unset means no MLflow.",
    )


class Recipe(Section):
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    parent: str | None = Field(
        None, description="The run this one refines (e.g. trained on its edited data)."
    )
    workspace: Path = Path(".tuneloop")
    model: ModelConfig = ModelConfig()
    data: DataConfig
    task: TaskConfig = TaskConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    track: TrackConfig = TrackConfig()

    @model_validator(mode="after")
    def _csv_needs_mapping(self) -> Recipe:
        is_csv = self.data.format == "csv" or str(self.data.train).endswith(".csv")
        if is_csv and self.data.csv is None:
            self.data.csv = CsvConfig()
        return self

    def resolved(self, base: Path) -> Recipe:
        """The same recipe with every path made absolute against `base` (the recipe's folder)."""
        out = self.model_copy(deep=True)

        def absolute(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p)).resolve()

        out.workspace = absolute(out.workspace)
        out.data.train = absolute(out.data.train)
        out.data.heldout = absolute(out.data.heldout)
        model_path = Path(out.model.name).expanduser()
        if not model_path.is_absolute() and (base / model_path).exists():
            out.model.name = str((base / model_path).resolve())
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read, validate and resolve a recipe file; raise one `UserError` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"recipe file not found: {path}",
            fix="create one with `tuneloop init`, or pass the path of an existing tuneloop.yaml",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise UserError(
            "the recipe is not valid UTF-8", f"{path}:{line}", "re-save the recipe as UTF-8"
        ) from None
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(
            f"not valid YAML: {problem}", where, "fix the YAML syntax at that line"
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(
            f"a recipe must be a mapping of sections, got {type(raw).__name__}",
            str(path),
            "start from `tuneloop init`",
        )
    for section in ("model", "task", "train", "eval", "track"):
        if section in raw and raw[section] is None:  # `train:` with nothing under it: defaults
            raw[section] = {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return validate_recipe(raw, source=path, node=node).resolved(path.parent)


def validate_recipe(raw: dict, source: Path | str = "recipe", node: Any = None) -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(err, source, node) for err in exc.errors()]
        raise UserError.many(
            problems, title=f"{source}: {len(problems)} problem(s) in the recipe"
        ) from None


def _problem(err: dict, source: Path | str, node: Any) -> Problem:
    loc = [str(p) for p in err["loc"]]
    field = ".".join(loc)
    line = _line_of(node, err["loc"])
    where = f"{source}:{line} ({field})" if line else f"{source} ({field})"
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(err["loc"][:-1])
        guess = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean `{guess[0]}`? " if guess else ""
        return Problem(
            f"unknown key `{loc[-1]}`",
            where,
            f"{hint}remove it; keys allowed here: {', '.join(allowed)}",
        )
    if kind == "missing":
        return Problem("required field is missing", where, f"add `{field}` to the recipe")
    ctx = err.get("ctx", {})
    bounds = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
    limits = [f"{words} {ctx[key]}" for key, words in bounds.items() if key in ctx]
    default = _default_of(err["loc"])
    example = f" (default: {default})" if default is not None else ""
    if kind == "literal_error":
        fix = f"set `{field}` to one of: {ctx.get('expected', '')}"
    elif limits:
        fix = f"set `{field}` to a number {' and '.join(limits)}{example}"
    else:
        fix = f"set `{field}` to a valid value{example}"
    return Problem(f"{err['msg']}; got {value!r}", where, fix)


def _default_of(loc: tuple) -> Any:
    """The default of the field at `loc`, for the fix text; None when there is none."""
    model: Any = Recipe
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or str(part) not in fields:
            return None
        info = fields[str(part)]
        model = info.annotation
    default = info.default
    return None if default is None or isinstance(default, BaseModel) else default


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next(c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel))
    return list(model.model_fields)


def _line_of(node: Any, loc: tuple) -> int | None:
    """1-based line of the YAML key at `loc` (or its deepest existing parent)."""
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if key.value == str(part):
                line, node = key.start_mark.line + 1, value
                break
        else:
            break
    return line


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for n, part in enumerate(parents):
        if raw.get(part) is None:  # absent, or an empty section (`train:` with nothing under it)
            raw[part] = {}
        if not isinstance(raw[part], dict):
            section = ".".join(parents[: n + 1])
            raise UserError(
                f"cannot set `{dotted}`: `{section}` is {raw[part]!r} in the recipe, not a section",
                "--set",
                f"make `{section}` a section in the recipe, or override `{section}` itself",
            )
        raw = raw[part]
    raw[last] = value
