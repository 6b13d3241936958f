"""The recipe (`tuneloop.yaml`): typed, grouped, validated once, saved resolved with every run.

Defaults live here and nowhere else. Unknown keys are errors, and every problem in a recipe is
reported at once with its line in the file, the field, the value and the fix:

    tuneloop.yaml:7 (train.lr): Input should be greater than 0; got -0.1
      fix: set `train.lr` to a number greater than 0 (default: 0.0002)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tuneloop.errors import Problem, UserError

DEFAULT_MODEL = "smollm2-135m-instruct"


# The per-item metrics each task kind produces (`evaluate/scoring.py` computes them): what
# `task.metric` may name. Here, below evaluation, so the recipe can check it when it loads.
ITEM_METRICS = {
    "label": ("exact_match",),
    "json": (
        "exact_match",
        "json_valid",
        "json_exact",
        "json_fields",
        "json_field_f1",
        "json_schema",
    ),
    "text": ("exact_match", "contains", "token_f1", "rouge_l", "chrf"),
}

# A slice of the reference answer's content rather than of an item's metadata.
REF_PREFIX = "ref:"


def reference_path(entry: str) -> list[str] | None:
    """The key path of a `ref:` slice entry (`ref:slots.city` -> ['slots', 'city']); None for a
    metadata field. A malformed `ref:` entry raises ValueError saying how to write it."""
    if not entry.startswith(REF_PREFIX):
        return None
    path = entry[len(REF_PREFIX) :]
    keys = path.split(".")
    if not path or any(not k.strip() for k in keys):
        raise ValueError(
            f"`{entry}` names no key path: write `ref:` and the reference's keys joined by dots, "
            "e.g. `ref:intent` or `ref:slots.city`"
        )
    return keys


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
    chat_template: str | None = Field(
        None,
        description="A Jinja chat template (a file path, or a built-in name such as "
        "`chatml-tools`) used instead of the model's own, e.g. for tool calls its own cannot "
        "render.",
    )
    license_ack: str | None = Field(
        None,
        description="The id of the model's license (e.g. cc-by-nc-4.0), to train on a model "
        "whose license restricts use (non-commercial, research-only, custom terms); "
        "`tuneloop train` refuses such a model until this names its license.",
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
    near_threshold: float = Field(
        0.8, ge=0, le=1,
        description="Keep near-duplicate prompts (Jaccard >= this) on one side; 0: exact only.",
    )  # fmt: skip


class DataConfig(Section):
    train: Path = Field(description="Training data file (JSONL, JSON or CSV).")
    heldout: Path | None = Field(
        None, description="Held-out data; when absent, a split of `train` is made and saved."
    )
    format: Literal["auto", "messages", "alpaca", "sharegpt", "prompt_completion", "csv"] = "auto"
    csv: CsvConfig | None = None
    split: SplitConfig = SplitConfig()


class KnowledgeConfig(Section):
    """Documents to retrieve from (`evaluate/knowledge.py`): chunked, indexed once, and the
    top `k` passages put in the prompt of every `rag` rung."""

    paths: list[Path] = Field(
        min_length=1, description="Folders (read recursively) and files of the documents."
    )
    chunk_words: int = Field(200, gt=0, description="Words per passage.")
    overlap_words: int = Field(40, ge=0, description="Words two neighbouring passages share.")
    k: int = Field(4, gt=0, description="Passages retrieved per item.")
    retriever: Literal["bm25", "dense"] = Field(
        "bm25", description="BM25 over words, or dense embeddings (needs `embedder`)."
    )
    embedder: str | None = Field(
        None, description="A local sentence-transformers model folder, for `retriever: dense`."
    )
    source_field: str = Field(
        "document",
        description="Item metadata naming the document (or passage id) that answers it; where "
        "items carry it, the retrieval hit rate is reported.",
    )

    @model_validator(mode="after")
    def _overlap_and_embedder(self) -> KnowledgeConfig:
        if self.overlap_words >= self.chunk_words:
            raise ValueError(
                f"overlap_words ({self.overlap_words}) must be smaller than chunk_words "
                f"({self.chunk_words})"
            )
        if self.retriever == "dense" and not self.embedder:
            raise ValueError(
                "retriever `dense` needs `embedder`: the folder of a local "
                "sentence-transformers model (or use retriever: bm25)"
            )
        return self


class TaskConfig(Section):
    kind: Literal["auto", "label", "json", "text"] = Field(
        "auto", description="Decides the metrics; `auto` infers it from the references."
    )
    instruction: str | None = Field(
        None,
        description="System prompt given to every example that has none, in training and "
        "in every evaluation rung (the zero-shot baseline included).",
    )
    metric: str | GraderConfig | None = Field(
        None,
        description="Per-item metric that decides (ladder, compare, gate) and, for objective "
        "`grpo`, the reward: a metric's name, or a grader (`{regex: ...}`, `{python: "
        "module:function}`, `{judge: true}`, `{reward_model: run folder}`, `{weighted: [...]}`; "
        "`evaluate/graders.py`). Default by kind: label -> exact_match, json -> json_exact, "
        "text -> rouge_l.",
    )
    json_schema: dict | None = Field(
        None, description="A JSON Schema (inline) that json answers must conform to."
    )
    target: float = Field(
        0.9,
        ge=0,
        le=1,
        description="The score at which the task counts as solved: `advise` says prompting is "
        "enough when a prompting rung reaches it.",
    )
    knowledge: KnowledgeConfig | None = Field(
        None,
        description="The documents the `rag` rungs retrieve passages from: a folder or files "
        "(markdown, text, HTML, PDF), or the full section.",
    )

    @field_validator("knowledge", mode="before")
    @classmethod
    def _knowledge_shorthand(cls, value: Any) -> Any:
        """`knowledge: docs/` or `knowledge: [a.md, b.md]` is `knowledge: {paths: [...]}`."""
        if isinstance(value, str):
            return {"paths": [value]}
        if isinstance(value, list):
            return {"paths": value}
        return value

    @field_validator("metric", mode="before")
    @classmethod
    def _grader_spec(cls, value: Any) -> Any:
        """A mapping is a grader: validated here, so a mistake in it is one problem naming
        the key (`task.metric.weighted.0.regx`), not one per shape `metric` may take."""
        return GraderConfig.parse(value) if isinstance(value, dict) else value

    @property
    def grader(self) -> GraderConfig | None:
        """`task.metric` as a grader (a metric's name is `{metric: name}`); None: the default."""
        if isinstance(self.metric, str):
            return GraderConfig(metric=self.metric)
        return self.metric

    @property
    def metric_name(self) -> str | None:
        """The per-item column that decides: the metric's name, or the grader's."""
        if isinstance(self.metric, GraderConfig):
            return self.metric.column
        return self.metric

    @property
    def constrainable(self) -> bool:
        """A JSON task: its answers can be held to JSON (task.json_schema, else any object)
        by grammar-constrained decoding, the `constrained` rung."""
        return self.kind == "json" or self.json_schema is not None

    def problems(self, judge: bool) -> list[tuple[tuple, str, str]]:
        """Mistakes that would otherwise surface only after generation, as (field path, what,
        fix): a schema JSON Schema itself rejects, a metric no task kind produces. `judge`
        says whether `eval.judge` is set (it adds the per-item metric `judge`)."""
        found = []
        if self.json_schema is not None:
            found += _schema_problems(self.json_schema)
        if isinstance(self.metric, str):
            found += _metric_problems(self.kind, self.metric, self.json_schema is not None, judge)
        elif self.metric is not None:
            for loc, part in self.metric.parts(("metric",)):
                inside = ".".join(map(str, loc[1:]))
                at = f"{inside}: " if inside else ""  # the field shown stops at task.metric
                if part.metric is not None:
                    found += [
                        ((*loc, "metric"), at + what, fix)
                        for _, what, fix in _metric_problems(
                            self.kind, part.metric, self.json_schema is not None, judge
                        )
                    ]
                if part.judge is True and not judge:
                    found.append((
                        (*loc, "judge"),
                        f"{at}`judge: true` asks the model in `eval.judge`, which is not set",
                        "set `eval.judge` (url, model, rubric), or give the judge here: "
                        "`judge: {url: ..., model: ...}`",
                    ))  # fmt: skip
        return [(("task", *loc), what, fix) for loc, what, fix in found]


def _schema_problems(schema: dict) -> list[tuple[tuple, str, str]]:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        at = "/".join(str(p) for p in err.path)
        return [(
            ("json_schema", *err.path),
            f"not a valid JSON Schema: {err.message}" + (f" (at `{at}`)" if at else ""),
            "correct the schema (https://json-schema.org/understanding-json-schema), or "
            "remove `task.json_schema`",
        )]  # fmt: skip
    return []


def _metric_problems(
    kind: str, metric: str, schema: bool, judge: bool
) -> list[tuple[tuple, str, str]]:
    """`task.metric` against the per-item metrics the task kind produces (for `auto`, any
    kind's: the evaluation checks it again once the kind is known)."""
    kinds = list(ITEM_METRICS) if kind == "auto" else [kind]
    names = [m for k in kinds for m in ITEM_METRICS[k]]
    names = [m for m in dict.fromkeys(names) if m != "json_schema" or schema]
    names += ["judge"] if judge else []
    if metric in names:
        return []
    what = f"`{metric}` is not a per-item metric of " + (
        "any task kind" if kind == "auto" else f"a {kind} task"
    )
    if metric == "json_schema" and "json" in kinds:
        what, need = (
            "`json_schema` is scored only against `task.json_schema`, which is not set",
            ("set `task.json_schema`, or "),
        )
    elif metric == "judge":
        what = "`judge` is scored only by the model in `eval.judge`, which is not set"
        need = "set `eval.judge`, or "
    else:
        guess = difflib.get_close_matches(metric, names, n=1)
        need = f"did you mean `{guess[0]}`? " if guess else ""
    return [(
        ("metric",),
        what,
        f"{need}choose one of: {', '.join(names)} (or leave it out for the default)",
    )]  # fmt: skip


class LoraConfig(Section):
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class QloraConfig(Section):
    """How `method: qlora` quantizes the frozen base (bitsandbytes; its 4-bit layers run on CPU)."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = Field(True, description="Quantize the quantization constants too.")
    compute_dtype: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Dtype the 4-bit layers compute in; `auto` follows train.precision."
    )


class Ia3Config(Section):
    target_modules: list[str] = ["k_proj", "v_proj", "down_proj"]
    feedforward_modules: list[str] = Field(
        ["down_proj"], description="Targets whose input (not output) IA3 rescales."
    )


class PrefixConfig(Section):
    num_virtual_tokens: int = Field(16, gt=0)


class PromptTuningConfig(Section):
    num_virtual_tokens: int = Field(16, gt=0)
    init_text: str | None = Field(
        None, description="Initialise the soft prompt from this text's embeddings; else random."
    )


class DpoConfig(Section):
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference.")
    loss: Literal["sigmoid", "ipo", "robust"] = "sigmoid"
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Assumed share of flipped preference labels."
    )
    dropout_off: bool = Field(
        True,
        description="Train without dropout (LoRA's included), as TRL does: the loss compares "
        "the policy's and the reference's scores of the same answers, and dropout in one "
        "forward only would add noise to that difference.",
    )


class DistillConfig(Section):
    teacher: str | None = Field(
        None, description="Teacher model (name, folder or .gguf) sharing the student's tokenizer."
    )
    teacher_adapter: Path | None = Field(None, description="A PEFT adapter put on the teacher.")
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the KL term; the SFT loss gets 1 - alpha."
    )


class GrpoConfig(Section):
    """Group relative policy optimisation (`train/grpo.py`): for each prompt, `group_size`
    sampled completions, rewarded by the task's grader (`task.metric`)."""

    group_size: int = Field(
        8, ge=2, description="Completions sampled per prompt; each is judged against its group."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the completions.")
    max_completion_tokens: int = Field(
        64, gt=0, description="Longest completion; a longer one is cut (and gets no end token)."
    )
    beta: float = Field(
        0.04,
        ge=0,
        description="Weight of the KL penalty to the reference (the base with the adapter off; "
        "a frozen copy for `method: full`); 0: no reference pass.",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range of the probability ratio.")
    epsilon_high: float | None = Field(
        None, gt=0, description="Upper clip range when it differs (DAPO: 0.28); unset: epsilon."
    )
    loss: Literal["dapo", "grpo", "dr_grpo"] = Field(
        "dapo",
        description="How token losses are averaged: over every completion token of the step "
        "(`dapo`, TRL's default), per completion then over completions (`grpo`), or over "
        "completions x max_completion_tokens (`dr_grpo`).",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Divide advantages by the reward std of the group, of the batch, or not.",
    )


class EarlyStoppingConfig(Section):
    patience: int = Field(3, gt=0, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest drop in held-out loss that counts.")
    restore_best: bool = Field(True, description="End with the weights of the best evaluation.")


class TrainConfig(Section):
    method: Literal["full", "lora", "qlora", "dora", "ia3", "prefix", "prompt"] = "lora"
    objective: Literal["sft", "dpo", "distill", "reward", "grpo"] = "sft"
    lora: LoraConfig = Field(LoraConfig(), description="Used by methods lora, qlora and dora.")
    qlora: QloraConfig | None = None
    ia3: Ia3Config = Ia3Config()
    prefix: PrefixConfig = PrefixConfig()
    prompt: PromptTuningConfig = PromptTuningConfig()
    dpo: DpoConfig = DpoConfig()
    distill: DistillConfig = DistillConfig()
    grpo: GrpoConfig = GrpoConfig()
    packing: Literal[True, False, "auto"] = Field(
        "auto",
        description="Pack each batch's examples side by side in one row, each attending to "
        "itself alone, instead of padded rows. `auto`: pack SFT batches where that sends fewer "
        "tokens through the model than padded rows with their shared prompt prefix run once "
        "(and the model's attention can run one example at a time); the choice and its counts "
        "are printed and recorded in run.json.",
    )
    share_prefix: bool = Field(
        True,
        description="Run the prompt tokens every example of a batch starts with (a shared "
        "system prompt) once per batch, not once per example: the same loss and gradients, "
        "less work. Every objective; padded batches, no gradient checkpointing.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, ~30% slower."
    )
    eval_every: int | None = Field(
        None, gt=0, description="Optimizer steps between held-out loss evaluations."
    )
    early_stopping: EarlyStoppingConfig | None = None
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Overrides `epochs` when set.")
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(2e-4, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="`sgd` (no momentum) keeps no optimizer state: the least memory."
    )
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

    def conflicts(self) -> list[tuple[tuple[str, ...], str, str]]:
        """Combinations no run can honour, as (field path, what, fix); checked with the recipe,
        long before any weights load."""
        found = []
        if self.qlora is not None and self.method != "qlora":
            found.append((
                ("qlora",),
                f"4-bit quantization was asked for with method `{self.method}`: 4-bit NF4 "
                "weights are frozen constants and cannot be trained directly",
                "set `train.method: qlora` to train LoRA adapters over a 4-bit base, or remove "
                "`train.qlora`",
            ))  # fmt: skip
        if self.packing is True and self.method in ("prefix", "prompt"):
            found.append((
                ("packing",),
                f"method `{self.method}` puts its virtual tokens before each row, so examples "
                "packed into one row would share them",
                "set `train.packing: false`, or use another method",
            ))  # fmt: skip
        if self.objective == "distill" and not self.distill.teacher:
            found.append((
                ("distill", "teacher"),
                "objective `distill` needs a teacher model whose logits the student learns from",
                "set `train.distill.teacher` to a model sharing the student's tokenizer; for a "
                "teacher behind an endpoint, run `tuneloop distill generate` and train with "
                "objective `sft` on what it wrote",
            ))  # fmt: skip
        elif self.objective == "distill" and "://" in str(self.distill.teacher):
            found.append((
                ("distill", "teacher"),
                f"logit distillation needs the teacher's logits, and the endpoint "
                f"{self.distill.teacher} only returns text",
                "run `tuneloop distill generate --teacher URL` and train with objective `sft` on "
                "the dataset it writes",
            ))  # fmt: skip
        if self.objective == "reward" and self.method == "qlora":
            found.append((
                ("method",),
                "a reward model loads the base with a score head in float32; 4-bit loading is "
                "for language-model heads here",
                "use `train.method: lora` for the reward model",
            ))  # fmt: skip
        if self.objective in ("grpo", "reward") and self.method in ("prefix", "prompt"):
            found.append((
                ("method",),
                f"objective `{self.objective}` trains with method `{self.method}`'s virtual "
                "tokens nowhere: "
                + ("sampling inside training runs the plain model" if self.objective == "grpo"
                   else "a reward model's score head reads the base model's last token"),
                "use `train.method: lora` (or full, dora, ia3, qlora)",
            ))  # fmt: skip
        if self.objective == "grpo" and self.eval_every is not None:
            found.append((
                ("eval_every",),
                "objective `grpo` has no held-out loss to evaluate during training (its loss "
                "depends on sampled completions); the held-out grader score is what counts",
                "remove `train.eval_every`, and score the run with `tuneloop eval` (the grader "
                "in `task.metric`, paired against the base)",
            ))  # fmt: skip
        if self.objective in ("grpo", "reward") and self.packing is True:
            why = {
                "grpo": "groups each prompt's completions in padded rows",
                "reward": "reads each example's score at the last token of its own row",
            }
            found.append((
                ("packing",),
                f"objective `{self.objective}` {why[self.objective]}, so it cannot pack rows",
                "set `train.packing: false`",
            ))  # fmt: skip
        if self.early_stopping is not None and self.eval_every is None:
            found.append((
                ("early_stopping",),
                "early stopping watches the held-out loss, but no evaluation is scheduled",
                "set `train.eval_every` to a number of optimizer steps",
            ))  # fmt: skip
        return [(("train", *loc), what, fix) for loc, what, fix in found]


class JudgeConfig(Section):
    url: str = Field(
        description="Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1"
    )
    model: str = Field(description="Model name the endpoint serves.")
    rubric: str = Field(
        "Score 1 if the answer is wrong or unhelpful, 5 if it is fully correct and complete.",
        description="What the judge scores; it answers with an integer from 1 to 5.",
    )
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    timeout_s: float = Field(60, gt=0)
    refusals: bool = Field(
        False,
        description="Classify refusals in the safety and over-refusal suites with this judge "
        "(it replies `refusal` or `answer`) instead of the regex detector.",
    )


GRADER_KINDS = ("metric", "regex", "python", "judge", "reward_model", "weighted")


class GraderConfig(Section):
    """A grader: scores one completion in [0, 1] (`evaluate/graders.py`). Exactly one kind:

    {metric: json_field_f1}                        a per-item metric by name
    {regex: '\\d+', compare: reference}           the last number equals the reference's
    {python: mypkg.rewards:concise}                function(completion, reference) -> float
    {judge: true}                                  the LLM judge of `eval.judge` (or a
                                                   judge given here: {judge: {url, model}})
    {reward_model: .tuneloop/runs/<id>}            a run of objective `reward`
    {weighted: [{metric: json_valid, weight: 1}, {metric: json_exact, weight: 3}]}
    """

    metric: str | None = Field(None, description="A per-item metric by name.")
    regex: str | None = Field(
        None,
        description="A regular expression searched in the completion: 1 where it matches; with "
        "`compare: reference`, 1 where its last match (its first group, if it has one) equals "
        "the same taken from the reference.",
    )
    compare: Literal["match", "reference"] = Field(
        "match", description="For `regex`: score a match, or compare the match with the reference."
    )
    python: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="`package.module:function`, called as function(completion, reference) and "
        "returning a number in [0, 1] (a bool counts as 0 or 1).",
    )
    judge: bool | JudgeConfig | None = Field(
        None, description="`true`: the judge of `eval.judge`; or a judge's own settings."
    )
    reward_model: Path | None = Field(
        None,
        description="A finished run of objective `reward`: sigmoid of its score of the answer.",
    )
    weighted: list[GraderConfig] | None = Field(
        None,
        min_length=1,
        description="A weighted mean of graders, each with its `weight`.",
    )
    weight: float = Field(1.0, gt=0, description="This grader's weight inside `weighted`.")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$",
        description="The per-item score's name in evaluations; default: the metric's name, "
        "else the grader's kind.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GraderConfig:
        given = [k for k in GRADER_KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError(
                f"a grader has exactly one of {', '.join(GRADER_KINDS)}; "
                + (f"got {' and '.join(given)}" if given else "got none")
            )
        if self.regex is not None:
            import re

            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex {self.regex!r} does not compile: {err}") from None
        return self

    @property
    def kind(self) -> str:
        return next(k for k in GRADER_KINDS if getattr(self, k) not in (None, False))

    @property
    def column(self) -> str:
        """The name of this grader's per-item score."""
        return self.name or self.metric or self.kind

    def parts(self, loc: tuple = ()) -> list[tuple[tuple, GraderConfig]]:
        """This grader and every grader inside it, each with its location under `loc`."""
        found = [(loc, self)]
        for i, part in enumerate(self.weighted or []):
            found += part.parts((*loc, "weighted", i))
        return found

    @classmethod
    def parse(cls, value: dict) -> GraderConfig:
        """Validate a grader mapping; every problem in it becomes one error that names its key
        and says how to fix it (see `_problem`)."""
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            lines, fixes = [], []
            for err in exc.errors():
                at = ".".join(str(p) for p in err["loc"])
                if err["type"] == "extra_forbidden":
                    lines.append(f"unknown key `{at}`")
                    fixes.append(f"keys a grader takes: {', '.join(cls.model_fields)}")
                elif err["loc"][-1:] == ("python",) and err["type"] == "string_pattern_mismatch":
                    lines.append(f"{at}: {err['input']!r} is not `package.module:function`")
                else:
                    msg = err["msg"].removeprefix("Value error, ")
                    lines.append(f"{at}: {msg}" if at else msg)
            fixes.append(
                "write one grader, e.g. `{metric: json_exact}`, `{regex: '\\d+', compare: "
                "reference}` or `{python: package.module:function}` (docs/training.md, Graders)"
            )
            raise PydanticCustomError(
                "grader", "{what}", {"what": "; ".join(lines), "fix": "; ".join(fixes)}
            ) from None


PROMPTINGS = ("zero-shot", "few-shot", "rag", "constrained")
RUNG_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class EndpointConfig(Section):
    """A model behind an OpenAI-compatible API (the hosted model a team uses today), asked the
    held-out items as a rung of the ladder. The key comes from the environment, never here."""

    name: str = Field(pattern=RUNG_NAME, description="The rung's name, e.g. gpt-4o-mini.")
    url: str = Field(description="Base URL of the API, e.g. https://api.openai.com/v1")
    model: str = Field(description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (unset: no key sent)."
    )
    price_in: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    price_out: float = Field(0.0, ge=0, description="USD per million completion tokens.")
    prompts: list[Literal["zero-shot", "few-shot", "rag", "constrained"]] = Field(
        ["zero-shot"],
        min_length=1,
        description="How it is asked: rung `<name>` (zero-shot), `<name>+few-shot`, "
        "`<name>+rag` (needs task.knowledge), `<name>+constrained` (zero-shot with a JSON "
        "response_format from task.json_schema; a json task).",
    )
    concurrency: int = Field(8, gt=0, description="Requests in flight at once.")
    rate_limit: float | None = Field(
        None, gt=0, description="Most requests per second (unset: no limit)."
    )
    timeout_s: float = Field(60, gt=0, description="Seconds before a request is abandoned.")
    retries: int = Field(3, ge=0, description="Retries of a failed, timed-out or 429/5xx call.")


class RecordedConfig(Section):
    """Answers recorded from a system that cannot be called any more (last year's production
    model, a vendor's retired fine-tune), scored as a rung."""

    name: str = Field(pattern=RUNG_NAME, description="The rung's name.")
    path: Path = Field(
        description='JSONL, one answer a line: {"id" or "prompt": ..., "answer": ...}, '
        "optionally with latency_s, prompt_tokens, completion_tokens."
    )
    price_in: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    price_out: float = Field(0.0, ge=0, description="USD per million completion tokens.")


class EvalConfig(Section):
    max_new_tokens: int | None = Field(
        None,
        gt=0,
        description="Longest answer in tokens; unset: derived from the references (the longest "
        "plus a quarter, at most 512), and each rung's summary says what was used and why.",
    )
    batch_size: int = Field(16, gt=0)
    max_items: int | None = Field(None, gt=0, description="Evaluate the first N held-out items.")
    few_shot_k: int = Field(4, gt=0, description="Examples from train in the few-shot rungs.")
    retrieval_k: int = Field(4, gt=0, description="Nearest train examples (BM25) per item.")
    seed: int = Field(0, description="Seed of the few-shot draw and of the bootstrap.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of every interval.")
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples per interval.")
    slices: list[str] = Field(
        [],
        description="Break every metric down by these: metadata fields (e.g. [label, source]) "
        "or, with `ref:`, key paths of a JSON reference answer (e.g. [ref:intent, "
        "ref:slots.city]).",
    )
    probe_max_new_tokens: int = Field(32, gt=0, description="Answer length for the probes.")
    train_sample: int = Field(
        64, ge=0, description="Train items the tuned model answers, for the overfitting gap."
    )
    judge: JudgeConfig | None = Field(
        None, description="Optional LLM-as-judge on an OpenAI-compatible endpoint."
    )
    endpoints: list[EndpointConfig] = Field(
        [], description="Models behind OpenAI-compatible APIs scored as rungs of the ladder."
    )
    recorded: list[RecordedConfig] = Field(
        [], description="Recorded answers (a JSONL file each) scored as rungs of the ladder."
    )
    price_per_hour: float | None = Field(
        None,
        ge=0,
        description="USD per hour of this machine: a local rung's cost per 1,000 requests is "
        "its measured time at this price (unset: local cost is not shown).",
    )

    @field_validator("slices")
    @classmethod
    def _slice_entries(cls, entries: list[str]) -> list[str]:
        """A slice is a metadata field or `ref:` and a key path; a typo such as `reference:x`
        or `ref:` alone is an error, not a slice where every item is `<missing>`."""
        wrong = []
        for entry in entries:
            try:
                reference_path(entry)
            except ValueError as err:
                wrong.append(str(err))
                continue
            if ":" in entry and not entry.startswith(REF_PREFIX):
                wrong.append(
                    f"`{entry}`: the only prefix a slice takes is `{REF_PREFIX}` (a key path of "
                    "the reference answer, e.g. `ref:slots.city`); name a metadata field "
                    "without one"
                )
            elif not entry.strip():
                wrong.append("an empty slice: name a metadata field, or `ref:` and a key path")
        if wrong:
            raise ValueError("; ".join(wrong))
        return entries


SuiteName = Literal["mmlu", "gsm8k", "ifeval", "xstest", "advbench"]
SUITE_NAMES: tuple[str, ...] = get_args(SuiteName)


class SuiteConfig(Section):
    """One standard evaluation suite read from its files (e.g. ../shared/data/evalsuites/mmlu)."""

    path: Path = Field(description="The suite's folder or file, as published (see docs).")
    n: int | None = Field(
        None, gt=0, description="Items in the seeded, stratified sample; unset: every item."
    )
    max_new_tokens: int | None = Field(
        None,
        gt=0,
        description="Answer length; unset: the suite's own default (MMLU generates none).",
    )


class MatchConfig(Section):
    """Ship a cheaper model that matches a named rung: non-inferiority instead of superiority."""

    rung: str = Field(description="The rung to match, e.g. an endpoint's name.")
    tolerance: float = Field(
        0.02, ge=0, le=1, description="Largest allowed shortfall (0.02 = 2 percentage points)."
    )


class GateConfig(Section):
    """When a tuned model may ship. Probe rates are fractions (0.05 = 5 percentage points).

    Every condition is a paired test on the same items: the task must beat the best rung by
    `margin` (superiority), the probes may not lose more than their tolerance (non-inferiority).
    """

    margin: float = Field(
        0.02, ge=0, description="Tuned must beat the best ladder rung by at least this."
    )
    rungs: list[str] = Field(
        ["zero-shot", "few-shot", "retrieval-few-shot"],
        description="Ladder rungs to beat: the base model's (zero-shot, few-shot, "
        "retrieval-few-shot, rag) and any endpoint or recorded rung by name.",
    )
    match: MatchConfig | None = Field(
        None,
        description="Instead of beating the rungs, match this one within a tolerance (the "
        "'cheaper model, same quality' decision).",
    )
    general_drop: float = Field(
        0.05, ge=0, le=1, description="Largest allowed drop of the general-capability score."
    )
    safety_drop: float = Field(
        0.10, ge=0, le=1, description="Largest allowed drop of the refusal rate on harmful probes."
    )
    over_refusal_rise: float = Field(
        0.10, ge=0, le=1, description="Largest allowed rise of refusals on benign look-alikes."
    )
    safety_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Refusal rate on harmful probes the tuned model must reach, whatever the "
        "base does (the embedded model refuses almost nothing, so a drop alone says little).",
    )
    informative_refusal: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Below this base refusal rate on harmful probes the safety probe cannot "
        "detect a collapse, and its line says so.",
    )
    inconclusive: Literal["fail", "pass"] = Field(
        "fail",
        description="What a condition whose CI straddles its bound counts as (it also says how "
        "many more items would decide it).",
    )
    power: float = Field(
        0.8, gt=0, lt=1, description="Power at which 'N more items needed' is computed."
    )
    suites: dict[SuiteName, SuiteConfig] = Field(
        {},
        description="Standard suites by path, e.g. {mmlu: {path: ../shared/data/evalsuites/mmlu, "
        "n: 300}}; a condition no suite feeds uses the small built-in probes.",
    )


class TrackConfig(Section):
    tensorboard: bool = Field(
        False, description="Write TensorBoard event files into the run's `tensorboard/` folder."
    )
    mlflow: str | None = Field(
        None,
        description="MLflow tracking URI: a server (http://127.0.0.1:5000), a folder "
        "(file:./mlruns; MLflow 3 opens one only with MLFLOW_ALLOW_FILE_STORE=true) or a "
        "database (sqlite:///mlflow.db; needs the full mlflow package). Unset: no MLflow.",
    )

    def store_against(self, base: Path) -> str | None:
        """`mlflow` with a folder made absolute against `base` (the recipe's folder), so that
        training, evaluation and the gate find the same store wherever they are started:
        `file:./mlruns` -> `file:///abs/mlruns`; servers and absolute URIs as given."""
        uri = self.mlflow
        if uri is None or uri == "databricks":  # MLflow's one URI without a scheme
            return uri
        scheme, colon, rest = uri.partition(":")
        if colon and len(scheme) > 1 and scheme != "file":  # http:, sqlite:, databricks ...
            return uri
        path = rest if colon and len(scheme) > 1 else uri
        if path.startswith("//"):  # file://host/path or file:///path
            return uri
        folder = Path(path).expanduser()
        return (folder if folder.is_absolute() else base / folder).resolve().as_uri()


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
    gate: GateConfig = GateConfig()
    track: TrackConfig = TrackConfig()

    @model_validator(mode="after")
    def _csv_needs_mapping(self) -> Recipe:
        is_csv = self.data.format == "csv" or str(self.data.train).endswith(".csv")
        if is_csv and self.data.csv is None:
            self.data.csv = CsvConfig()
        return self

    def rung_names(self) -> list[str]:
        """Every rung this recipe can score before training: the base model's prompting rungs
        (`rag` only with task.knowledge), then each endpoint's and recorded answers' rungs."""
        base = ["zero-shot", "few-shot", "retrieval-few-shot"]
        base += ["rag"] if self.task.knowledge else []
        base += ["constrained"] if self.task.constrainable else []
        endpoints = [
            e.name if p == "zero-shot" else f"{e.name}+{p}"
            for e in self.eval.endpoints
            for p in e.prompts
        ]
        return base + endpoints + [r.name for r in self.eval.recorded]

    def rung_problems(self) -> list[tuple[tuple, str, str]]:
        """Rung names that clash or are unknown, and `rag` asked without documents."""
        found = []
        known = self.rung_names()
        reserved = {"zero-shot", "few-shot", "retrieval-few-shot", "rag", "constrained", "tuned"}
        seen: set[str] = set()
        named = [("endpoints", i, e.name) for i, e in enumerate(self.eval.endpoints)]
        named += [("recorded", i, r.name) for i, r in enumerate(self.eval.recorded)]
        for where, i, name in named:
            if name in reserved or name in seen:
                found.append((
                    ("eval", where, i, "name"),
                    f"the rung name `{name}` is "
                    + ("taken by a base-model rung" if name in reserved else "used twice"),
                    "give each endpoint and recorded rung its own name",
                ))  # fmt: skip
            seen.add(name)
        needs = {  # a way of asking an endpoint, and what it needs of the task
            "constrained": (self.task.constrainable, "this is not a JSON task",
                            "set task.kind: json (and task.json_schema for a schema), or drop it"),
            "rag": (bool(self.task.knowledge), "task.knowledge is not set",
                    "set task.knowledge to the documents' folder, or drop `rag`"),
        }  # fmt: skip
        for i, e in enumerate(self.eval.endpoints):
            for prompting, (available, why, fix) in needs.items():
                if prompting in e.prompts and not available:
                    found.append((
                        ("eval", "endpoints", i, "prompts"),
                        f"endpoint `{e.name}` is asked with `{prompting}`, but {why}",
                        fix,
                    ))  # fmt: skip
        for i, rung in enumerate(self.gate.rungs):
            if rung not in known:
                found.append((
                    ("gate", "rungs", i),
                    f"`{rung}` is not a rung of this recipe",
                    f"choose from: {', '.join(known)}",
                ))  # fmt: skip
        if self.gate.match and self.gate.match.rung not in known:
            found.append((
                ("gate", "match", "rung"),
                f"`{self.gate.match.rung}` is not a rung of this recipe",
                f"choose from: {', '.join(known)}",
            ))  # fmt: skip
        return found

    def resolved(self, base: Path) -> Recipe:
        """The same recipe with every path made absolute against `base` (the recipe's folder)."""
        out = self.model_copy(deep=True)

        def absolute(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p)).resolve()

        out.workspace = absolute(out.workspace)
        out.data.train = absolute(out.data.train)
        out.data.heldout = absolute(out.data.heldout)
        out.train.distill.teacher_adapter = absolute(out.train.distill.teacher_adapter)
        if isinstance(out.task.metric, GraderConfig):
            for _, part in out.task.metric.parts():
                part.reward_model = absolute(part.reward_model)
        for suite in out.gate.suites.values():
            suite.path = absolute(suite.path)
        for recorded in out.eval.recorded:
            recorded.path = absolute(recorded.path)
        if knowledge := out.task.knowledge:
            knowledge.paths = [absolute(p) for p in knowledge.paths]
            if knowledge.embedder and (base / knowledge.embedder).exists():
                knowledge.embedder = str((base / knowledge.embedder).resolve())
        template = out.model.chat_template
        if template and (base / template).is_file():
            out.model.chat_template = str((base / template).resolve())
        teacher = out.train.distill.teacher
        if teacher and not Path(teacher).is_absolute() and (base / teacher).exists():
            out.train.distill.teacher = str((base / teacher).resolve())
        model_path = Path(out.model.name).expanduser()
        if not model_path.is_absolute() and (base / model_path).exists():
            out.model.name = str((base / model_path).resolve())
        out.track.mlflow = out.track.store_against(base)
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
    for section in ("model", "task", "train", "eval", "gate", "track"):
        if section in raw and raw[section] is None:  # `train:` with nothing under it: defaults
            raw[section] = {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return validate_recipe(raw, source=path, node=node).resolved(path.parent)


def validate_recipe(raw: dict, source: Path | str = "recipe", node: Any = None) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(err, source, node) for err in exc.errors()]
        raise UserError.many(
            problems, title=f"{source}: {len(problems)} problem(s) in the recipe"
        ) from None
    problems = []
    found = recipe.train.conflicts() + recipe.task.problems(judge=recipe.eval.judge is not None)
    found += recipe.rung_problems()
    for loc, what, fix in found:
        line = _line_of(node, loc)
        field = _field_of(loc)
        problems.append(
            Problem(what, f"{source}:{line} ({field})" if line else f"{source} ({field})", fix)
        )
    if problems:
        raise UserError.many(problems, title=f"{source}: {len(problems)} problem(s) in the recipe")
    return recipe


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
    if "fix" in ctx:  # an error that carries its own fix (a grader's, `GraderConfig.parse`)
        return Problem(err["msg"], where, ctx["fix"])
    if kind == "literal_error":
        fix = f"set `{field}` to one of: {ctx.get('expected', '')}"
    elif limits:
        fix = f"set `{field}` to a number {' and '.join(limits)}{example}"
    else:
        fix = f"set `{field}` to a valid value{example}"
    return Problem(f"{err['msg']}; got {value!r}", where, fix)


def _field_of(loc: tuple) -> str:
    """The recipe field a location is in: `task.json_schema` for a key deep inside the schema
    (the location itself still finds that key's line)."""
    model: Any = Recipe
    parts = []
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or str(part) not in fields:
            break
        parts.append(str(part))
        annotation = fields[str(part)].annotation
        model = next((c for c in (annotation, *get_args(annotation)) if isinstance(c, type)), None)
    return ".".join(parts)


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
