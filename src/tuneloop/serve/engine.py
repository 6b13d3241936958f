"""The serving engine: one base model in memory, adapters by name, and a worker thread that
generates for every request in flight together in one batch.

Requests for different LoRA adapters (and for the base model, `__base__`) share a batch through
PEFT's mixed-adapter batches: `model.generate(..., adapter_names=["support", "__base__", ...])`
applies each row's adapter to that row only. A batch holds requests with the same sampling
settings and no more distinct adapters than the cache holds.

Prompts are rendered and generation runs exactly as `tuneloop eval` does it (same template,
left padding, greedy by default, the same stop tokens), so a greedy answer here equals the one
eval scored. Each row stops on its own: a `StoppingCriteria` sees every new token, streams the
new text of that row, and reports the row done at a stop token, a stop string or its token limit.

    engine = Engine.load(None, [parse_adapter_arg("support=.tuneloop/runs/<quickstart run>")])
    engine.start()
    chat = [{"role": "user", "content": "Why did my monthly price go up to €226.99?"}]
    engine.complete(engine.chat_job("support", chat)).text
    'billing_question'
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tuneloop.data.templates import render_prompt, with_instruction
from tuneloop.models.generate import stop_token_ids
from tuneloop.models.precision import autocast, resolve_precision
from tuneloop.serve.adapters import BASE, AdapterPool, AdapterSpec, base_model_of
from tuneloop.serve.metrics import ServeMetrics
from tuneloop.serve.options import ServeOptions
from tuneloop.serve.protocol import RequestError


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Job:
    """One request on its way through the engine. `emit` receives ("delta", str) events while
    streaming, then ("done", Completion) or ("error", Exception); it is called from the worker
    thread."""

    model: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    tokenizer: object
    stop_ids: frozenset[int]
    stream: bool = False
    strip: bool = True  # chat answers are stripped of surrounding blanks, as eval strips them
    emit: Callable[[tuple[str, object]], None] | None = None
    constraint: object = None  # a models.constrain.JsonConstraint (response_format), or None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    finish_reason: str | None = None
    cancelled: bool = False
    first_token_at: float | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled

    def sampling_key(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.temperature == 0 else (self.temperature, self.top_p)

    def push(self, token: int) -> None:
        """Take the row's next token: stream new text, and finish at a stop or the limit."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if token in self.stop_ids:
            self.finish("stop")
            return
        self.tokens.append(token)
        text, stopped = self._visible(final=False) if self.stream or self.stop else ("", False)
        if stopped:
            self.finish("stop")
        elif len(self.tokens) >= self.max_tokens:
            self.finish("length")
        elif self.stream and len(text) > len(self.sent) and text.startswith(self.sent):
            self._send(("delta", text[len(self.sent) :]))
            self.sent = text

    def finish(self, reason: str) -> None:
        if self.finish_reason is not None:
            return
        self.finish_reason = reason
        text, _ = self._visible(final=True)
        if self.stream and len(text) > len(self.sent) and text.startswith(self.sent):
            self._send(("delta", text[len(self.sent) :]))
            self.sent = text
        self._send(("done", Completion(text, reason, len(self.prompt_ids), len(self.tokens))))

    def fail(self, error: Exception) -> None:
        if self.finish_reason is None:
            self.finish_reason = "error"
            self._send(("error", error))

    def _send(self, event: tuple[str, object]) -> None:
        if self.emit is not None:
            self.emit(event)

    def _visible(self, final: bool) -> tuple[str, bool]:
        """The answer so far, and whether a stop string ended it.

        Like `tuneloop eval`, the answer is the decoded text stripped of surrounding blanks. While
        streaming, what could still change is held back: trailing blanks, a partly decoded
        character, and an ending that may be the start of a stop string.
        """
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        text = text.lstrip() if self.strip else text
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            text = text[: min(cuts)]
            return (text.rstrip() if self.strip else text), True
        text = text.rstrip() if self.strip else text
        if final:
            return text, False
        text = text.rstrip("\ufffd")
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    text = text[:-k]
                    break
        return text, False


class _RowStops(StoppingCriteria):
    """A `StoppingCriteria` that feeds each row's new token to its job and stops finished rows
    (one boolean per row: transformers keeps generating for the others)."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        last = input_ids[:, -1].tolist()  # (B,)
        for job, token in zip(self.jobs, last, strict=True):
            if not job.done:
                job.push(token)
        return torch.tensor([job.done for job in self.jobs], device=input_ids.device)


def _constraint(tokenizer, response_format: dict | None):
    """The grammar constraint a request's `response_format` asks for (None for text); a
    malformed format or an invalid schema is a 400 naming the field."""
    if not response_format or response_format.get("type") == "text":
        return None
    from tuneloop.errors import UserError
    from tuneloop.models.constrain import from_response_format

    try:
        return from_response_format(tokenizer, response_format)
    except UserError as err:
        problem = err.problems[0]
        message = f"{problem.what}; {problem.fix}" if problem.fix else problem.what
        raise RequestError(400, message, problem.where, "invalid_response_format") from None


class Engine:
    def __init__(
        self,
        model,
        tokenizer,
        specs: dict[str, AdapterSpec],
        tokenizers: dict,
        options: ServeOptions | None = None,
        metrics: ServeMetrics | None = None,
        base_name: str = "base",
    ):
        self.options = options or ServeOptions()
        if self.options.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.options.max_batch}")
        self.metrics = metrics or ServeMetrics()
        self.base_name = base_name
        self.specs = specs
        self.tokenizers = {BASE: tokenizer, **tokenizers}
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(self.options.precision, self.device)
        self.context = getattr(model.config, "max_position_embeddings", None)
        self.pad_id = tokenizer.pad_token_id
        self.stops = {name: frozenset(stop_token_ids(t)) for name, t in self.tokenizers.items()}
        self.all_stops = sorted(set().union(*self.stops.values()))
        model.eval()
        self.pool = AdapterPool(
            model,
            specs,
            self.options.cache_size,
            on_load=self._loaded,
            on_evict=self._evicted,
        )
        self._pending: list[Job] = []
        self._cond = threading.Condition()
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---- building --------------------------------------------------------------------------

    @classmethod
    def load(
        cls, base: str | None, adapters: list[AdapterSpec], options: ServeOptions | None = None
    ) -> Engine:
        """Load the base model once and check every adapter against it."""
        from transformers import AutoTokenizer

        from tuneloop.errors import UserError
        from tuneloop.models.load import load

        names = [a.name for a in adapters]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(
                f"adapter name(s) {twice} given twice",
                "--adapter",
                "name each adapter once: NAME=RUN",
            )
        base = base_model_of(base, adapters)
        model, tokenizer, _ = load(base)
        model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizers = {}
        for a in adapters:
            has_tokenizer = (a.path / "tokenizer_config.json").is_file()
            tok = AutoTokenizer.from_pretrained(a.path) if has_tokenizer else tokenizer
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            if len(tok) != len(tokenizer):
                raise UserError(
                    f"adapter `{a.name}` has a tokenizer of {len(tok)} tokens; the base model's "
                    f"has {len(tokenizer)}",
                    str(a.path),
                    "serve it with the base model it was trained on (--model)",
                )
            tokenizers[a.name] = tok
        specs = {a.name: a for a in adapters}
        return cls(model, tokenizer, specs, tokenizers, options, base_name=base)

    def models(self) -> list[str]:
        return [BASE, *self.specs]

    # ---- requests --------------------------------------------------------------------------

    def chat_job(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        stream: bool = False,
        response_format: dict | None = None,
    ) -> Job:
        """A job for a chat, rendered with the adapter's own chat template; a chat without a
        system message gets the run's task instruction, as in training and evaluation. A JSON
        `response_format` is enforced by grammar-constrained decoding (`models.constrain`)."""
        tokenizer = self._tokenizer(model)
        spec = self.specs.get(model)
        messages = with_instruction(messages, spec.instruction if spec else None)
        try:
            text = render_prompt(tokenizer, messages)
        except Exception as exc:  # the template itself refuses (role order, ...)
            raise RequestError(
                400,
                f"the chat template refused these messages: {exc}",
                "messages",
                "invalid_messages",
            ) from None
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        job = self._job(model, ids, max_tokens, temperature, top_p, stop, stream)
        job.constraint = _constraint(tokenizer, response_format)
        return job

    def completion_job(
        self,
        model: str,
        prompt: str,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        stream: bool = False,
    ) -> Job:
        """A job for a raw text prompt (no chat template); the answer is not stripped."""
        ids = self._tokenizer(model)(prompt)["input_ids"]
        job = self._job(model, ids, max_tokens, temperature, top_p, stop, stream)
        job.strip = False
        return job

    def _tokenizer(self, model: str):
        if model not in self.tokenizers:
            raise RequestError(
                404,
                f"model `{model}` is not served here; served: {', '.join(self.models())}",
                "model",
                "model_not_found",
            )
        return self.tokenizers[model]

    def _job(self, model, ids, max_tokens, temperature, top_p, stop, stream) -> Job:
        limit = self.options.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise RequestError(
                400,
                f"max_tokens is {max_tokens}; this server allows at most {limit}",
                "max_tokens",
                "max_tokens_too_large",
            )
        if max_tokens is None:
            spec = self.specs.get(model)
            max_tokens = min(
                limit, (spec and spec.max_new_tokens) or self.options.default_max_tokens
            )
        if not ids:
            raise RequestError(400, "the prompt is empty", "prompt", "empty_prompt")
        if len(ids) > self.options.max_prompt_tokens:
            raise RequestError(
                400,
                f"the prompt has {len(ids)} tokens; this server allows at most "
                f"{self.options.max_prompt_tokens}",
                "messages",
                "context_length_exceeded",
            )
        if self.context and len(ids) + max_tokens > self.context:
            raise RequestError(
                400,
                f"the prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"model's context of {self.context} tokens",
                "max_tokens",
                "context_length_exceeded",
            )
        return Job(
            model,
            list(ids),
            max_tokens,
            temperature,
            top_p,
            list(stop or []),
            self.tokenizers[model],
            self.stops[model],
            stream,
        )

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise RequestError(
                    503, "the server is shutting down", None, "unavailable", "server_error"
                )
            if len(self._pending) >= self.options.max_pending:
                raise RequestError(
                    503,
                    f"{len(self._pending)} requests are waiting; try again shortly",
                    None,
                    "overloaded",
                    "server_error",
                )
            self._pending.append(job)
            self.metrics.queue_depth.set(len(self._pending))
            self._cond.notify()

    def complete(self, job: Job, timeout: float | None = 300) -> Completion:
        """Submit `job` and wait for its answer (for library callers; the app streams events)."""
        done = threading.Event()
        box: dict = {}

        def emit(event):
            if event[0] in ("done", "error"):
                box["event"] = event
                done.set()

        job.emit = emit
        self.submit(job)
        if not done.wait(timeout):
            job.cancelled = True
            raise TimeoutError(f"no answer within {timeout} s")
        kind, value = box["event"]
        if kind == "error":
            raise value
        return value

    # ---- the worker ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="tuneloop-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._paused = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        for job in self._pending:
            job.fail(
                RequestError(
                    503, "the server is shutting down", None, "unavailable", "server_error"
                )
            )
        self._pending.clear()

    def pause(self) -> None:
        """Hold the worker between batches (tests use it to queue requests deterministically)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (self._paused or not self._pending):
                    self._cond.wait()
                if self._stopping:
                    return
            time.sleep(self.options.batch_wait_ms / 1000)  # let a burst of requests arrive
            with self._cond:
                jobs = self._take_batch()
                self.metrics.queue_depth.set(len(self._pending))
            if not jobs:
                continue
            try:
                self._generate(jobs)
            except Exception as exc:  # a failing batch fails its requests, not the server
                for job in jobs:
                    job.fail(exc)

    def _group(self, job: Job) -> tuple:
        spec = self.specs.get(job.model)
        alone = job.model if spec is not None and not spec.mixable else None
        return (job.sampling_key(), alone)

    def _take_batch(self) -> list[Job]:
        """The oldest live request and the requests that can share its batch, in order."""
        self._pending = [j for j in self._pending if not j.cancelled]
        if not self._pending:
            return []
        group = self._group(self._pending[0])
        chosen: list[Job] = []
        adapters: set[str] = set()
        for job in self._pending:
            if len(chosen) == self.options.max_batch:
                break
            if self._group(job) != group:
                continue
            if job.model != BASE and job.model not in adapters:
                if len(adapters) == self.pool.capacity:
                    continue
                adapters.add(job.model)
            chosen.append(job)
        taken = set(map(id, chosen))
        self._pending = [j for j in self._pending if id(j) not in taken]
        return chosen

    @torch.no_grad()
    def _generate(self, jobs: list[Job]) -> None:
        names = [j.model for j in jobs]
        self.pool.ensure(set(names))
        model = self.pool.model
        extra: dict = {}
        if self.pool.is_peft:
            spec = self.specs.get(names[0])
            if spec is not None and not spec.mixable:  # a batch of this one adapter only
                model.set_adapter(spec.name)
            else:
                extra["adapter_names"] = names
        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):  # left padding: every row's next token at position T
            n = len(job.prompt_ids)
            ids[row, width - n :] = torch.tensor(job.prompt_ids)
            mask[row, width - n :] = 1
        temperature, top_p = jobs[0].sampling_key()
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            if temperature > 0
            else {"do_sample": False}
        )
        self.metrics.batch_size.observe(len(jobs))
        self.metrics.batch_models.observe(len(set(names)))

        constraints = [j.constraint for j in jobs]
        if any(constraints):  # each row under its own response_format, or free
            from tuneloop.models.constrain import rows_processor

            extra["logits_processor"] = [rows_processor(constraints)]
        with autocast(self.precision, self.device):
            model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max(j.max_tokens for j in jobs),
                eos_token_id=self.all_stops,
                pad_token_id=self.pad_id,
                stopping_criteria=StoppingCriteriaList([_RowStops(jobs)]),
                **sampling,
                **extra,
            )
        for job in jobs:
            job.finish("length")  # rows the criteria did not finish ran out of new tokens

    def _loaded(self, name: str) -> None:
        self.metrics.adapter_loads.labels(name).inc()
        self.metrics.adapters_loaded.set(len(self.pool.loaded))

    def _evicted(self, name: str) -> None:
        self.metrics.adapter_evictions.labels(name).inc()
        self.metrics.adapters_loaded.set(len(self.pool.loaded))
