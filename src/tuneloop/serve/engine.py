"""The serving engine: one base model in memory, adapters by name, and a worker thread that
decodes every request in flight, one token per row per step, with requests joining and leaving
the running batch between steps (continuous batching, `serve/batch.py`).

Requests for different LoRA adapters (and for the base model, `__base__`) share a batch through
PEFT's mixed-adapter batches: each forward pass gets `adapter_names=["support", "__base__", ...]`
and applies each row's adapter to that row only. An adapter PEFT cannot mix (DoRA) runs in a
batch of its own, stepped in turn with the others. Each row chooses its token by its own
settings (`serve/job.py`): temperature, seed, penalties, logit bias, a JSON schema.

Prompts are rendered as `tuneloop eval` renders them (same template, same stop tokens, greedy by
default, positions counted as `transformers`' generate counts them), so a greedy answer here
equals the one eval scored. Each row stops on its own: at a stop token, a stop string or its
token limit, on cancellation (a client that went away), or when it runs past
`--request-timeout`. When more requests wait than `--max-pending`, new ones get a 429 with
Retry-After (back-pressure), never an unbounded queue.

    engine = Engine.load(None, [parse_adapter_arg("support=.tuneloop/runs/<quickstart run>")])
    engine.start()
    chat = [{"role": "user", "content": "Why did my monthly price go up to €226.99?"}]
    engine.complete(engine.chat_job("support", chat)).text
    'billing_question'
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import torch

from tuneloop.data.templates import render_prompt, with_instruction
from tuneloop.models.generate import stop_token_ids
from tuneloop.models.precision import autocast, resolve_precision
from tuneloop.models.virtual import read_virtual_tokens
from tuneloop.serve.adapters import BASE, AdapterPool, AdapterSpec, base_model_of
from tuneloop.serve.batch import RunningBatch
from tuneloop.serve.job import Completion, Job
from tuneloop.serve.metrics import ServeMetrics
from tuneloop.serve.options import ServeOptions
from tuneloop.serve.protocol import RequestError

__all__ = ["Completion", "Engine", "Job"]


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
        own: dict | None = None,
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
        # prompt-learning adapters: their virtual tokens, read once (small; no PEFT wrapper)
        self.virtual = {
            name: read_virtual_tokens(spec.path, model)
            for name, spec in specs.items()
            if spec.virtual
        }
        self.own = own or {}  # adapters on models of their own (QLoRA, IA3, full runs), by name
        for m in self.own.values():
            m.eval()
        self._pending: list[Job] = []
        # running batches: BASE (mixed), and by name a DoRA adapter or a model of its own
        self._lanes: dict[str, RunningBatch] = {}
        self._answer_seconds = 1.0
        self._unloading: set[str] = set()  # unloaded adapters still generating for some rows
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
        tokenizers = {a.name: _adapter_tokenizer(a, tokenizer) for a in adapters}
        specs = {a.name: a for a in adapters}
        options = options or ServeOptions()
        precision = resolve_precision(options.precision, model.device)
        if precision == "bf16" and options.bf16_weights:
            # Under bf16 autocast every matrix product rounds a float32 weight to bf16 anew;
            # stored in bf16 once, the operand is the same and the per-step cast is gone.
            from tuneloop.models.adapters import store_frozen_in_bf16

            model.requires_grad_(False)
            store_frozen_in_bf16(model, "lora")
        own = {a.name: _own_model(a, base, precision, model.device) for a in adapters
               if a.own_model}  # fmt: skip
        return cls(model, tokenizer, specs, tokenizers, options, base_name=base, own=own)

    def add_adapter(self, spec: AdapterSpec) -> None:
        """Serve one more adapter while serving (`POST /v1/load_lora_adapter`), checked as at
        start-up: the same base model, a tokenizer of the same vocabulary. Loads it now for a
        model of its own or virtual tokens; into the adapter cache on first use otherwise."""
        with self._cond:
            if spec.name in self.tokenizers:
                raise RequestError(
                    400, f"`{spec.name}` is already served; unload it first", "lora_name",
                    "adapter_exists",
                )  # fmt: skip
        base_model_of(self.base_name, [spec])
        tokenizer = _adapter_tokenizer(spec, self.tokenizers[BASE])
        model = self.pool.model
        own = (
            _own_model(spec, self.base_name, self.precision, self.device)
            if spec.own_model
            else None
        )
        virtual = read_virtual_tokens(spec.path, model) if spec.virtual else None
        with self._cond:
            self._unloading.discard(spec.name)
            self.specs[spec.name] = spec
            self.tokenizers[spec.name] = tokenizer
            self.stops[spec.name] = frozenset(stop_token_ids(tokenizer))
            if own is not None:
                self.own[spec.name] = own.eval()
            if virtual is not None:
                self.virtual[spec.name] = virtual

    def remove_adapter(self, name: str) -> None:
        """Stop serving an adapter (`POST /v1/unload_lora_adapter`): new requests to it get a
        404, waiting ones a 404 too; rows being generated finish, then it leaves memory."""
        gone = RequestError(404, f"model `{name}` was unloaded", "model", "model_not_found")
        with self._cond:
            if name not in self.specs:
                raise RequestError(
                    404, f"no adapter `{name}` is served", "lora_name", "model_not_found"
                )
            del self.specs[name], self.tokenizers[name]
            for job in self._pending:
                if job.model == name:
                    job.fail(gone)
            self._pending = [j for j in self._pending if not j.done]
            self._unloading.add(name)
            self._cond.notify()

    def _release_unloaded(self) -> None:
        """Free the unloaded adapters no running row uses any more (worker thread)."""
        running = {j.model for b in self._lanes.values() for j in b.jobs}
        for name in [n for n in self._unloading if n not in running]:
            self.own.pop(name, None)
            self.virtual.pop(name, None)
            self.pool.forget(name)
            self._unloading.discard(name)

    def models(self) -> list[str]:
        with self._cond:
            return [BASE, *self.specs]

    # ---- requests --------------------------------------------------------------------------

    def chat_job(
        self,
        model: str,
        messages: list[dict],
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        stream: bool = False,
        response_format: dict | None = None,
        tools: list[dict] | None = None,
        constraint=None,
        **settings,
    ) -> Job:
        """A job for a chat, rendered with the adapter's own chat template; a chat without a
        system message gets the run's task instruction, as in training and evaluation. A JSON
        `response_format` is enforced by grammar-constrained decoding (`models.constrain`);
        `constraint` is one made by the caller (tool calls). `settings` are `Job` fields
        (seed, penalties, logit_bias, logprobs, top_logprobs)."""
        tokenizer = self._tokenizer(model)
        spec = self.specs.get(model)
        messages = with_instruction(messages, spec.instruction if spec else None)
        try:
            text = render_prompt(tokenizer, messages, tools)
        except Exception as exc:  # the template itself refuses (role order, ...)
            raise RequestError(
                400,
                f"the chat template refused these messages: {exc}",
                "messages",
                "invalid_messages",
            ) from None
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        job = self._job(model, ids, max_tokens, temperature, top_p, stop, stream, settings)
        job.constraint = constraint or _constraint(tokenizer, response_format)
        return job

    def completion_job(
        self,
        model: str,
        prompt: str | list[int],
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        stream: bool = False,
        **settings,
    ) -> Job:
        """A job for a raw prompt, text or token ids (no chat template); the answer is not
        stripped."""
        tokenizer = self._tokenizer(model)
        if isinstance(prompt, str):
            ids = tokenizer(prompt)["input_ids"]
        else:
            ids = list(prompt)
            vocab = len(tokenizer)
            if any(not 0 <= t < vocab for t in ids):
                raise RequestError(
                    400,
                    f"the prompt holds token ids outside this model's vocabulary (0-{vocab - 1})",
                    "prompt",
                    "invalid_value",
                )
        job = self._job(model, ids, max_tokens, temperature, top_p, stop, stream, settings)
        job.strip = False
        return job

    def tokenizer_of(self, model: str):
        """The tokenizer requests to `model` are rendered with (404 for a model not served)."""
        return self._tokenizer(model)

    def _tokenizer(self, model: str):
        if model not in self.tokenizers:
            raise RequestError(
                404,
                f"model `{model}` is not served here; served: {', '.join(self.models())}",
                "model",
                "model_not_found",
            )
        return self.tokenizers[model]

    def _job(self, model, ids, max_tokens, temperature, top_p, stop, stream, settings) -> Job:
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
        virtual = self.virtual.get(model)
        if self.context and len(ids) + (virtual.n if virtual else 0) + max_tokens > self.context:
            raise RequestError(
                400,
                f"the prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"model's context of {self.context} tokens",
                "max_tokens",
                "context_length_exceeded",
            )
        if virtual is not None:
            settings = {**settings, "virtual": virtual, "peft_name": BASE}
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
            timeout_s=self.options.request_timeout_s,
            **settings,
        )

    @staticmethod
    def choices(job: Job, n: int) -> list[Job]:
        """`n` jobs for one prompt (a request's `n`): choice i samples with `seed + i`."""
        jobs = [job]
        for i in range(1, n):
            seed = None if job.seed is None else job.seed + i
            jobs.append(dataclasses.replace(job, index=job.index + i, seed=seed, tokens=[],
                                            token_logprobs=[]))  # fmt: skip
        return jobs

    def submit(self, job: Job) -> None:
        self.submit_all([job])

    def submit_all(self, jobs: list[Job]) -> None:
        """Queue the jobs of one request together, or refuse them all: 503 while shutting
        down, 429 with a Retry-After estimate while `max_pending` requests wait."""
        with self._cond:
            if self._stopping:
                raise RequestError(
                    503, "the server is shutting down", None, "unavailable", "server_error"
                )
            if len(self._pending) + len(jobs) > self.options.max_pending:
                wait = self._retry_after()
                raise RequestError(
                    429,
                    f"{len(self._pending)} requests are waiting; try again in {wait} s",
                    None,
                    "overloaded",
                    "server_error",
                    headers={"Retry-After": str(wait)},
                )
            self._pending.extend(jobs)
            self.metrics.queue_depth.set(len(self._pending))
            self._cond.notify()

    def _retry_after(self) -> int:
        """Seconds until the queue has room, from the recent time per answer: the waiting
        requests go through `max_batch` at a time."""
        rounds = len(self._pending) / self.options.max_batch
        return max(1, min(60, math.ceil(self._answer_seconds * rounds)))

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
        gone = RequestError(503, "the server is shutting down", None, "unavailable", "server_error")
        for job in self._pending:
            job.fail(gone)
        self._pending.clear()
        for batch in self._lanes.values():
            batch.fail_all(gone)

    def pause(self) -> None:
        """Hold the worker between steps (tests use it to queue requests deterministically)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def pending(self) -> int:
        """Requests not answered yet: waiting, and being generated."""
        with self._cond:
            return len(self._pending) + self.running()

    def running(self) -> int:
        """Rows being generated (a row that just ended is not, though it leaves the batch at
        the end of the step)."""
        return sum(not j.done for b in list(self._lanes.values()) for j in list(b.jobs))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (
                    self._paused or not (self._pending or self._lanes or self._unloading)
                ):
                    self._cond.wait()
                if self._stopping:
                    return
                idle = not self._lanes
            if idle:  # let a burst of requests arrive before the first prefill
                time.sleep(self.options.batch_wait_ms / 1000)
            with self._cond:
                admitted = self._admit()
                self.metrics.queue_depth.set(len(self._pending))
            for key in admitted:
                if key not in self._lanes:
                    self._lanes[key] = RunningBatch(
                        self._forward_for(key), self._model_for(key), self.pad_id,
                        hold=self.options.batching == "static",
                    )  # fmt: skip
            if admitted:
                needed = self._pinned() | {
                    j.adapter for js in admitted.values() for j in js if self._pooled(j)
                }
                try:
                    self.pool.ensure(needed)
                except Exception as exc:  # an adapter that fails to load fails its requests
                    for job in (j for js in admitted.values() for j in js):
                        job.fail(exc)
                    admitted = {}
            for key, batch in list(self._lanes.items()):
                self._advance(batch, admitted.get(key, []))
                if not batch.jobs:
                    del self._lanes[key]
            self.metrics.running.set(self.running())

    def _advance(self, batch: RunningBatch, newcomers: list[Job]) -> None:
        """Admit the newcomers (their first token), then step the rows already running, so each
        row gets one token per round; a failure fails the rows of this batch only."""
        try:
            batch.drop_finished()  # rows cancelled since the last step leave before it
            running = len(batch)
            if newcomers:
                self.metrics.batch_size.observe(running + len(newcomers))
                self.metrics.batch_models.observe(len({j.model for j in [*batch.jobs, *newcomers]}))
            if running:
                batch.step()
            if newcomers:
                batch.admit(newcomers)
        except Exception as exc:  # a failing step fails its requests, not the server
            batch.fail_all(exc)
            for job in newcomers:
                job.fail(exc)
        now = time.perf_counter()
        for job in batch.jobs:
            if job.expired(now):
                job.fail(_timeout(job))
        batch.drop_finished()

    def _lane(self, job: Job) -> str:
        """Which running batch a job joins: the mixed one, or its adapter's own (DoRA, or an
        adapter on a model of its own)."""
        spec = self.specs.get(job.model)
        return job.model if spec is not None and not spec.mixable else BASE

    def _pinned(self) -> set[str]:
        return {j.adapter for b in self._lanes.values() for j in b.jobs if self._pooled(j)}

    def _pooled(self, job: Job) -> bool:
        """Whether the job's adapter lives in the adapter cache (not the base, not a model of
        its own)."""
        return job.adapter != BASE and job.model not in self.own

    def _admit(self) -> dict[str, list[Job]]:
        """The waiting jobs that join a running batch now, oldest first, by lane: as many as
        the batch has room for, within the adapter cache (adapters of running rows stay) and
        `max_prefill_tokens` of prompt per batch. With `batching="static"` a batch is formed
        only when none is running, and runs until its last row ends, finished rows computed
        along (the design before continuous batching, `model.generate` on a batch, kept for the
        benchmark)."""
        if self._unloading:
            self._release_unloaded()
        now = time.perf_counter()
        for job in self._pending:
            if job.expired(now):
                job.fail(_timeout(job))
        self._pending = [j for j in self._pending if not j.done]
        static = self.options.batching == "static"
        if not self._pending or (static and self._lanes):
            return {}
        pinned = self._pinned()
        first = self._lane(self._pending[0])
        taken: dict[str, list[Job]] = {}
        prefill: dict[str, int] = {}
        for job in self._pending:
            lane = self._lane(job)
            if static and lane != first:
                continue
            batch = self._lanes.get(lane)
            if (len(batch) if batch else 0) + len(taken.get(lane, [])) >= self.options.max_batch:
                continue
            if taken.get(lane) and prefill[lane] + len(job.prompt_ids) > (
                self.options.max_prefill_tokens
            ):
                continue
            if self._pooled(job) and job.adapter not in pinned:
                if len(pinned) == self.pool.capacity:
                    continue
                pinned.add(job.adapter)
            taken.setdefault(lane, []).append(job)
            prefill[lane] = prefill.get(lane, 0) + len(job.prompt_ids)
        chosen = {id(j) for jobs in taken.values() for j in jobs}
        self._pending = [j for j in self._pending if id(j) not in chosen]
        return taken

    def _model_for(self, lane: str):
        """The model a lane runs on, as a function: the adapter cache's model changes when
        its first adapter wraps the base."""
        return (lambda: self.own[lane]) if lane in self.own else (lambda: self.pool.model)

    def _forward_for(self, lane: str):
        """The model call of a lane: every row under its own adapter, or one DoRA adapter."""

        def forward(names: list[str], **inputs):
            model = self.own.get(lane, self.pool.model)
            extra: dict = {}
            if lane in self.own:
                pass  # its adapter is the only one on its model, and active
            elif self.pool.is_peft:
                if lane == BASE:
                    extra["adapter_names"] = names
                else:
                    model.set_adapter(lane)
            inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
            with autocast(self.precision, self.device):
                return model(**inputs, **extra)

        return forward

    def observe_answer(self, seconds: float) -> None:
        """A finished request's time, for the Retry-After estimate (a moving average)."""
        self._answer_seconds = 0.9 * self._answer_seconds + 0.1 * seconds

    def _loaded(self, name: str) -> None:
        self.metrics.adapter_loads.labels(name).inc()
        self.metrics.adapters_loaded.set(len(self.pool.loaded))

    def _evicted(self, name: str) -> None:
        self.metrics.adapter_evictions.labels(name).inc()
        self.metrics.adapters_loaded.set(len(self.pool.loaded))


def _timeout(job: Job) -> RequestError:
    return RequestError(
        504,
        f"no answer within {job.timeout_s:g} s (--request-timeout)",
        None,
        "timeout",
        "server_error",
    )


def _own_model(spec: AdapterSpec, base: str, precision: str, device):
    """The model an adapter that cannot share the base runs on, loaded as `tuneloop eval` loads
    its run (`models.adapters.load_as_trained`): QLoRA on a fresh 4-bit base, IA3 on a fresh
    copy of the base, a full run's own weights."""
    from tuneloop.config import TrainConfig
    from tuneloop.models.adapters import load_as_trained
    from tuneloop.models.load import load_model, resolve

    method = spec.method or ("full" if spec.peft_type == "FULL" else "ia3")
    cfg = TrainConfig.model_validate({**spec.train, "method": method})
    source = resolve(base)
    fresh = None if method in ("full", "qlora") else load_model(source)
    model = load_as_trained(spec.path, cfg, source, fresh, precision)
    return model if method == "qlora" else model.to(device)  # bitsandbytes placed the 4-bit one


def _adapter_tokenizer(spec: AdapterSpec, base_tokenizer):
    """The tokenizer an adapter was trained with (saved beside it), else the base model's; one
    of another vocabulary size belongs to another base model."""
    from transformers import AutoTokenizer

    from tuneloop.errors import UserError

    saved = (spec.path / "tokenizer_config.json").is_file()
    tok = AutoTokenizer.from_pretrained(spec.path) if saved else base_tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if len(tok) != len(base_tokenizer):
        raise UserError(
            f"adapter `{spec.name}` has a tokenizer of {len(tok)} tokens; the base model's "
            f"has {len(base_tokenizer)}",
            str(spec.path),
            "serve it with the base model it was trained on (--model)",
        )
    return tok
