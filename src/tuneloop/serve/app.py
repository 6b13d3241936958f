"""The OpenAI-compatible HTTP API over an `Engine` (FastAPI; run it with uvicorn).

    GET  /health                 liveness, the models served, requests waiting
    GET  /metrics                Prometheus metrics
    GET  /v1/models              the base model (`__base__`) and every registered adapter
    POST /v1/chat/completions    chat, rendered with the adapter's training chat template;
                                 `"stream": true` answers with server-sent events
    POST /v1/completions         raw text prompt, also streamed
    POST /v1/load_lora_adapter   serve one more adapter, from inside the allowed roots
    POST /v1/unload_lora_adapter stop serving one (vLLM's routes and bodies)

With an API key set, the /v1 routes want `Authorization: Bearer KEY`; /health and /metrics stay
open for probes and scrapers. A mistake in a request gets a 4xx answer with an OpenAI-style error
body (see protocol.py) and the server carries on.

The routes are plain functions on one `APIRouter`; they find the engine, the API key and the
request log on `request.app.state`, set once by `create_app`. Every refusal is a `RequestError`
raised where it is found and rendered by the one exception handler, `_error_answer`. What an
answer looks like, and how it is streamed, counted and logged, is in exchange.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneloop.serve.engine import Engine, Job
from tuneloop.serve.exchange import Exchange, stream_events, submit
from tuneloop.serve.protocol import (
    ChatRequest,
    CompletionRequest,
    LoadAdapterRequest,
    RequestError,
    UnloadAdapterRequest,
    parse_body,
)
from tuneloop.serve.requestlog import RequestLog

router = APIRouter()


def create_app(
    engine: Engine,
    api_key: str | None = None,
    log: RequestLog | None = None,
    manage_engine: bool = True,
    adapter_roots: list[Path] | None = None,
) -> FastAPI:
    """The app; with `manage_engine` it starts the engine's worker on startup, stops it on exit.
    `adapter_roots`: the folders adapters may be loaded from at run time (None: no loading)."""
    app = FastAPI(
        title="tuneloop",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers={RequestError: _error_answer, StarletteHTTPException: _error_answer},
    )
    app.state.engine, app.state.api_key, app.state.log = engine, api_key, log
    app.state.manage_engine = manage_engine
    app.state.adapter_roots = [Path(r).resolve() for r in adapter_roots or []]
    app.state.created = int(time.time())
    app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    if app.state.manage_engine:
        app.state.engine.start()
    try:
        yield
    finally:
        if app.state.manage_engine:
            app.state.engine.stop()


async def _error_answer(request: Request, err: Exception) -> JSONResponse:
    """Every error answer: a refused request, or a route that does not exist (404) or does not
    take the method (405), as an OpenAI-style body."""
    if isinstance(err, StarletteHTTPException):
        code = "not_found" if err.status_code == 404 else "method_not_allowed"
        message = f"{request.method} {request.url.path}: {err.detail}"
        err = RequestError(err.status_code, message, None, code)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@router.get("/health")
async def health(request: Request) -> dict:
    engine = request.app.state.engine
    return {"status": "ok", "models": engine.models(), "pending": engine.pending()}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(request: Request) -> dict:
    _authorize(request)
    names = request.app.state.engine.models()
    return {"object": "list", "data": [_model_card(request, m) for m in names]}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, request: Request) -> dict:
    _authorize(request)
    if model_id not in request.app.state.engine.tokenizers:
        raise RequestError(
            404, f"model `{model_id}` is not served here", "model", "model_not_found"
        )
    return _model_card(request, model_id)


@router.post("/v1/chat/completions")
async def chat(request: Request) -> Response:
    return await _answer(request, "chat")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _answer(request, "completion")


async def _answer(request: Request, endpoint: str) -> Response:
    """Parse the body, queue its jobs (one per prompt and choice), and answer whole or as
    server-sent events. A request refused before it is queued is counted here, under its model
    if that is served."""
    engine, started, model = request.app.state.engine, time.perf_counter(), "unknown"
    try:
        _authorize(request)
        raw = await _read_body(request)
        body = parse_body(ChatRequest if endpoint == "chat" else CompletionRequest, raw)
        model = body.model
        jobs, logged, tools = _jobs(engine, endpoint, body)
        events = submit(engine, jobs)
    except RequestError as err:
        engine.metrics.requests.labels(endpoint, _label(engine, model), str(err.status)).inc()
        raise
    exchange = Exchange(engine, request.app.state.log, endpoint, jobs, logged, started, tools)
    if body.stream:
        return StreamingResponse(
            stream_events(exchange, events, body.include_usage), media_type="text/event-stream"
        )
    try:
        completions = await exchange.answers(events, request.is_disconnected)
    finally:
        exchange.cancel()  # the client went away while waiting: free the rows
    exchange.record(completions)
    return JSONResponse(exchange.body(completions))


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(request: Request) -> Response:
    """Serve one more adapter: `{"lora_name", "lora_path"}`, the path an adapter folder or a
    run folder inside one of the allowed roots (symbolic links resolved first)."""
    from tuneloop.errors import UserError
    from tuneloop.serve.adapters import adapter_folder, read_spec

    _authorize(request)
    roots = request.app.state.adapter_roots
    if not roots:
        raise RequestError(
            403,
            "loading adapters at run time is off: start tuneloop serve with "
            "--allow-runtime-adapters (and --adapter-root DIR)",
            None, "runtime_adapters_off", "permission_error",
        )  # fmt: skip
    body = parse_body(LoadAdapterRequest, await _read_body(request))
    path = Path(body.lora_path).expanduser().resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise RequestError(
            403,
            f"{body.lora_path} is outside the adapter roots ({', '.join(map(str, roots))})",
            "lora_path", "outside_adapter_roots", "permission_error",
        )  # fmt: skip
    try:
        spec = read_spec(body.lora_name, adapter_folder(path, roots[0]))
        await asyncio.to_thread(request.app.state.engine.add_adapter, spec)
    except UserError as err:
        problem = err.problems[0]
        message = f"{problem.what}; {problem.fix}" if problem.fix else problem.what
        raise RequestError(400, message, "lora_path", "invalid_adapter") from None
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(request: Request) -> Response:
    """Stop serving an adapter: `{"lora_name"}`. Rows being generated for it finish first."""
    _authorize(request)
    if not request.app.state.adapter_roots:
        raise RequestError(
            403, "unloading adapters at run time is off: start with --allow-runtime-adapters",
            None, "runtime_adapters_off", "permission_error",
        )  # fmt: skip
    body = parse_body(UnloadAdapterRequest, await _read_body(request))
    request.app.state.engine.remove_adapter(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


def _jobs(
    engine: Engine, endpoint: str, body: ChatRequest | CompletionRequest
) -> tuple[list[Job], dict, bool]:
    """The engine's jobs for a parsed body (a chat's `n` choices; each prompt's `n` choices on
    /v1/completions, numbered prompt by prompt), what the request log keeps of the prompt, and
    whether answers are parsed for tool calls."""
    common = (body.limit, body.temperature, body.top_p, body.stops, body.stream)
    if endpoint == "completion":
        prompts = body.prompts()
        jobs = []
        for i, prompt in enumerate(prompts):
            job = engine.completion_job(body.model, prompt, *common, **body.settings())
            job.index = i * body.n
            jobs.extend(engine.choices(job, body.n))
        logged = {"prompt": prompts[0] if len(prompts) == 1 else prompts}
        return jobs, logged, False
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    tools = None
    if body.tools:
        from tuneloop.serve.tools import check_tool_choice, check_tools, tool_constraint

        tools = check_tools(body.tools)
        choice = check_tool_choice(body.tool_choice, tools)
        tokenizer = engine.tokenizer_of(body.model)
        constraint = (
            None if choice == "none"
            else tool_constraint(tokenizer, tools, choice, body.parallel_tool_calls)
        )  # fmt: skip
    job = engine.chat_job(
        body.model,
        _chat_messages(messages),
        *common,
        response_format=body.response_format,
        tools=tools if tools and choice != "none" else None,
        constraint=constraint if tools else None,
        **body.settings(),
    )
    return engine.choices(job, body.n), {"messages": messages}, bool(tools) and choice != "none"


def _chat_messages(messages: list[dict]) -> list[dict]:
    """OpenAI chat messages in the form the chat template renders as in training (tool calls
    and tool results included)."""
    from tuneloop.serve.tools import template_messages

    return template_messages(messages)


def _authorize(request: Request) -> None:
    api_key = request.app.state.api_key
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


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `--max-body-bytes`."""
    limit = request.app.state.engine.options.max_body_bytes
    too_big = RequestError(413, f"the request body exceeds {limit} bytes", None, "body_too_large")
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


def _label(engine: Engine, model: str) -> str:
    """Model names from users are not metric labels unless served (bounded cardinality)."""
    return model if model in engine.tokenizers else "unknown"


def _model_card(request: Request, name: str) -> dict:
    engine = request.app.state.engine
    spec = engine.specs.get(name)
    return {
        "id": name,
        "object": "model",
        "created": request.app.state.created,
        "owned_by": "tuneloop",
        "root": engine.base_name,
        "parent": None if spec is None else "__base__",
        "run": None if spec is None else spec.run_id,
    }
