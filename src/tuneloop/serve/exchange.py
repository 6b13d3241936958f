"""One answered request: its OpenAI response body or server-sent events, its metrics, its log line.

The engine's worker thread sends a job's events onto an asyncio queue (`submit`):
`("delta", text)` as tokens arrive (streamed jobs only), then `("done", Completion)` or
`("error", exception)`. Every body and event of one answer carries the same `id`, `created` and
`model`:

    {"id": "chatcmpl-3f9c0a...", "object": "chat.completion", "created": 1767225600,
     "model": "support",
     "choices": [{"index": 0, "message": {"role": "assistant", "content": "refund_request"},
                  "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 31, "completion_tokens": 4, "total_tokens": 35}}

    data: {"id": "chatcmpl-3f9c0a...", "object": "chat.completion.chunk", ...,
           "choices": [{"index": 0, "delta": {"content": "refund"}, "finish_reason": null}]}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from tuneloop.serve.engine import Completion, Engine, Job
from tuneloop.serve.protocol import RequestError
from tuneloop.serve.requestlog import RequestLog


def submit(engine: Engine, job: Job) -> asyncio.Queue:
    """Queue `job` and return the queue its events arrive on (from the worker thread)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emit(event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under a late event
            loop.call_soon_threadsafe(events.put_nowait, event)

    job.emit = emit
    engine.submit(job)
    return events


class Exchange:
    """A queued job of the chat or completion endpoint, as the client and the operator see it."""

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

    def body(self, c: Completion) -> dict:
        """The whole answer, for a request that did not ask to stream."""
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

    def chunk(self, content: str | dict | None, finish_reason: str | None) -> str:
        """One streamed event: new text, a chat's opening role (a dict), or the finish reason."""
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
        return sse({**self._head(obj), "choices": [choice]})

    def usage_chunk(self, c: Completion) -> str:
        """The streamed usage event (`stream_options.include_usage`): no choices, only usage."""
        return sse({**self._head(self.object + ".chunk"), "choices": [], "usage": _usage(c)})

    def failed(self, exc: Exception) -> RequestError:
        """Count a job the engine failed; the error to answer with (anything unforeseen: 500)."""
        err = exc if isinstance(exc, RequestError) else _server_error(exc)
        self.engine.metrics.requests.labels(self.endpoint, self.job.model, str(err.status)).inc()
        return err

    def record(self, c: Completion) -> None:
        """Metrics and (sampled) log line of an answered request."""
        m, job = self.engine.metrics, self.job
        seconds = time.perf_counter() - self.started
        m.requests.labels(self.endpoint, job.model, "200").inc()
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

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.job.model}


async def stream_events(
    exchange: Exchange, events: asyncio.Queue, include_usage: bool
) -> AsyncIterator[str]:
    """The server-sent events of a streamed answer: a chat's opening role, a chunk per delta,
    the finish reason, the usage if asked, then `[DONE]`. A failure after the 200 status line is
    sent as one event holding the error body. A client that goes away frees its batch row."""
    try:
        if exchange.endpoint == "chat":
            yield exchange.chunk({"role": "assistant", "content": ""}, None)
        while True:
            kind, value = await events.get()
            if kind == "delta":
                yield exchange.chunk(value, None)
            elif kind == "done":
                exchange.record(value)
                yield exchange.chunk(None, value.finish_reason)
                if include_usage:
                    yield exchange.usage_chunk(value)
                yield "data: [DONE]\n\n"
                return
            else:
                yield sse(exchange.failed(value).body())
                return
    finally:
        if not exchange.job.done:
            exchange.job.cancelled = True  # the client went away: free the row


def sse(obj: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _server_error(exc: Exception) -> RequestError:
    return RequestError(
        500,
        f"generation failed: {type(exc).__name__}: {exc}",
        None,
        "generation_failed",
        "server_error",
    )


def _usage(c: Completion) -> dict:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }
