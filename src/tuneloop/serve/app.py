"""The OpenAI-compatible HTTP API over an `Engine` (FastAPI; run it with uvicorn).

    GET  /health                 liveness, the models served, requests waiting
    GET  /metrics                Prometheus metrics
    GET  /v1/models              the base model (`__base__`) and every registered adapter
    POST /v1/chat/completions    chat, rendered with the adapter's training chat template;
                                 `"stream": true` answers with server-sent events
    POST /v1/completions         raw text prompt, also streamed

With an API key set, the /v1 routes want `Authorization: Bearer KEY`; /health and /metrics stay
open for probes and scrapers. A mistake in a request gets a 4xx answer with an OpenAI-style error
body (see protocol.py) and the server carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneloop.serve.engine import Completion, Engine, Job
from tuneloop.serve.protocol import ChatRequest, CompletionRequest, RequestError, parse_body
from tuneloop.serve.requestlog import RequestLog


def create_app(
    engine: Engine,
    api_key: str | None = None,
    log: RequestLog | None = None,
    manage_engine: bool = True,
) -> FastAPI:
    """The app; with `manage_engine` it starts the engine's worker on startup, stops it on exit."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage_engine:
            engine.start()
        try:
            yield
        finally:
            if manage_engine:
                engine.stop()

    app = FastAPI(
        title="tuneloop", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.engine = engine
    created = int(time.time())

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if err.status_code == 404 else "method_not_allowed"
        body = RequestError(
            err.status_code, f"{request.method} {request.url.path}: {err.detail}", None, code
        ).body()
        return JSONResponse(body, status_code=err.status_code)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise RequestError(
                401,
                "incorrect or missing API key (Authorization: Bearer KEY)",
                None,
                "invalid_api_key",
                "authentication_error",
            )

    async def read_body(request: Request) -> bytes:
        limit = engine.options.max_body_bytes
        too_big = RequestError(
            413, f"the request body exceeds {limit} bytes", None, "body_too_large"
        )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    def label(model: str) -> str:
        """Model names from users are not metric labels unless served (bounded cardinality)."""
        return model if model in engine.tokenizers else "unknown"

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": engine.models(), "pending": engine.pending()}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        authorize(request)
        return {"object": "list", "data": [model_card(m) for m in engine.models()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict:
        authorize(request)
        if model_id not in engine.tokenizers:
            raise RequestError(
                404, f"model `{model_id}` is not served here", "model", "model_not_found"
            )
        return model_card(model_id)

    def model_card(name: str) -> dict:
        spec = engine.specs.get(name)
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "tuneloop",
            "root": engine.base_name,
            "parent": None if spec is None else "__base__",
            "run": None if spec is None else spec.run_id,
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await answer(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, "completion")

    async def answer(request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        model = "unknown"
        try:
            authorize(request)
            raw = await read_body(request)
            body = parse_body(ChatRequest if endpoint == "chat" else CompletionRequest, raw)
            model = body.model
            if endpoint == "chat":
                make_job, prompt = engine.chat_job, body.chat()
                logged = {"messages": [m.model_dump() for m in body.messages]}
            else:
                make_job, prompt = engine.completion_job, body.text()
                logged = {"prompt": prompt}
            job = make_job(
                model, prompt, body.limit, body.temperature, body.top_p, body.stops, body.stream
            )
            events = submit(job)
        except RequestError as err:
            engine.metrics.requests.labels(endpoint, label(model), str(err.status)).inc()
            raise
        exchange = _Exchange(engine, log, endpoint, job, logged, started)
        if body.stream:
            return StreamingResponse(
                exchange.stream(events, body.include_usage), media_type="text/event-stream"
            )
        kind, value = await events.get()
        if kind == "error":
            exchange.failed(value)
            err = value if isinstance(value, RequestError) else _server_error(value)
            return JSONResponse(err.body(), status_code=err.status)
        return JSONResponse(exchange.finished(value))

    def submit(job: Job) -> asyncio.Queue:
        """Queue `job` and return the queue its events arrive on (from the worker thread)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(event) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a late event
                loop.call_soon_threadsafe(events.put_nowait, event)

        job.emit = emit
        engine.submit(job)
        return events

    return app


def _server_error(exc: Exception) -> RequestError:
    return RequestError(
        500,
        f"generation failed: {type(exc).__name__}: {exc}",
        None,
        "generation_failed",
        "server_error",
    )


class _Exchange:
    """One answered request: its response bodies, its metrics and its log line."""

    def __init__(
        self,
        engine: Engine,
        log: RequestLog | None,
        endpoint: str,
        job: Job,
        logged: dict,
        started: float,
    ):
        self.engine, self.log, self.endpoint, self.job = engine, log, endpoint, job
        self.logged, self.started = logged, started
        prefix = "chatcmpl" if endpoint == "chat" else "cmpl"
        self.id = f"{prefix}-{job.id}"
        self.created = int(time.time())
        self.object = "chat.completion" if endpoint == "chat" else "text_completion"

    def finished(self, c: Completion) -> dict:
        self._record(c, "200")
        if self.endpoint == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
            }
        else:
            choice = {
                "index": 0,
                "text": c.text,
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
        return {**self._head(self.object), "choices": [choice], "usage": _usage(c)}

    def failed(self, exc: Exception) -> None:
        status = str(exc.status) if isinstance(exc, RequestError) else "500"
        self.engine.metrics.requests.labels(self.endpoint, self.job.model, status).inc()

    async def stream(self, events: asyncio.Queue, include_usage: bool) -> AsyncIterator[str]:
        try:
            if self.endpoint == "chat":
                yield self._chunk({"role": "assistant", "content": ""}, None)
            while True:
                kind, value = await events.get()
                if kind == "delta":
                    yield self._chunk(value, None)
                elif kind == "done":
                    self._record(value, "200")
                    yield self._chunk(None, value.finish_reason)
                    if include_usage:
                        usage = {
                            **self._head(self.object + ".chunk"),
                            "choices": [],
                            "usage": _usage(value),
                        }
                        yield _sse(usage)
                    yield "data: [DONE]\n\n"
                    return
                else:
                    self.failed(value)
                    err = value if isinstance(value, RequestError) else _server_error(value)
                    yield _sse(err.body())
                    return
        finally:
            if not self.job.done:
                self.job.cancelled = True  # the client went away: free the row

    def _chunk(self, content, finish_reason: str | None) -> str:
        if self.endpoint == "chat":
            if isinstance(content, dict):
                delta = content
            else:
                delta = {} if content is None else {"content": content}
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            obj = "chat.completion.chunk"
        else:
            choice = {
                "index": 0,
                "text": content or "",
                "finish_reason": finish_reason,
                "logprobs": None,
            }
            obj = "text_completion"
        return _sse({**self._head(obj), "choices": [choice]})

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.job.model}

    def _record(self, c: Completion, status: str) -> None:
        m, job = self.engine.metrics, self.job
        seconds = time.perf_counter() - self.started
        m.requests.labels(self.endpoint, job.model, status).inc()
        m.latency.labels(self.endpoint).observe(seconds)
        if job.first_token_at is not None:
            m.first_token.observe(job.first_token_at - job.created)
        m.prompt_tokens.labels(job.model).inc(c.prompt_tokens)
        m.completion_tokens.labels(job.model).inc(c.completion_tokens)
        if self.log is not None:
            self.log.maybe_write(
                {
                    "id": self.id,
                    "endpoint": self.endpoint,
                    "model": job.model,
                    **self.logged,
                    "answer": c.text,
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "seconds": round(seconds, 4),
                }
            )


def _usage(c: Completion) -> dict:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
