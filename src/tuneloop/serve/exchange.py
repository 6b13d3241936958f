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
import functools
import json
import time
from collections.abc import AsyncIterator

from tuneloop.serve.engine import Completion, Engine, Job
from tuneloop.serve.protocol import RequestError
from tuneloop.serve.requestlog import RequestLog


def submit(engine: Engine, jobs: list[Job]) -> asyncio.Queue:
    """Queue a request's jobs (one per choice) and return the queue their events arrive on
    (from the worker thread), each tagged with its job's choice index."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emitter(index: int):
        def emit(event) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a late event
                loop.call_soon_threadsafe(events.put_nowait, (event[0], index, event[1]))

        return emit

    for job in jobs:
        job.emit = emitter(job.index)
    engine.submit_all(jobs)
    return events


class Exchange:
    """A queued request of the chat or completion endpoint (its jobs, one per choice), as the
    client and the operator see it. `tools` (chat): answers are parsed for tool calls."""

    def __init__(
        self,
        engine: Engine,
        log: RequestLog | None,
        endpoint: str,
        jobs: list[Job],
        logged: dict,
        started: float,
        tools: bool = False,
    ):
        self.engine, self.log, self.endpoint, self.jobs = engine, log, endpoint, jobs
        self.logged, self.started, self.tools = logged, started, tools
        self.job = jobs[0]
        prefix = "chatcmpl" if endpoint == "chat" else "cmpl"
        self.id = f"{prefix}-{self.job.id}"
        self.created = int(time.time())
        self.object = "chat.completion" if endpoint == "chat" else "text_completion"
        self._logprobs_sent = [0] * len(jobs)

    async def answers(self, events: asyncio.Queue, gone=None) -> list[Completion]:
        """Every choice's completion, in order; the first failure is raised. `gone`, an async
        function (Starlette's `request.is_disconnected`), is asked every second: a client that
        left without waiting for its answer has its rows cancelled."""
        done: dict[int, Completion] = {}
        while len(done) < len(self.jobs):
            try:
                kind, index, value = await asyncio.wait_for(events.get(), timeout=1.0)
            except TimeoutError:
                if gone is not None and await gone():
                    self.cancel()
                    raise RequestError(499, "the client closed the request", None,
                                       "client_closed") from None  # fmt: skip
                continue
            if kind == "error":
                self.cancel()
                raise self.failed(value)
            if kind == "done":
                done[index] = value
        return [done[i] for i in range(len(self.jobs))]

    def cancel(self) -> None:
        """The client went away (or another choice failed): free the rows at the next step."""
        for job in self.jobs:
            if not job.done:
                job.cancelled = True

    def body(self, completions: list[Completion]) -> dict:
        """The whole answer, for a request that did not ask to stream."""
        choices = []
        for c in completions:
            job = self.jobs[c.index]
            logprobs = self._logprobs(job, c.logprobs) if c.logprobs is not None else None
            if self.endpoint == "chat":
                message, reason = self._message(c)
                choices.append({"index": c.index, "message": message, "logprobs": logprobs,
                                "finish_reason": reason})  # fmt: skip
            else:
                choices.append({"index": c.index, "text": c.text, "logprobs": logprobs,
                                "finish_reason": c.finish_reason})  # fmt: skip
        return {**self._head(self.object), "choices": choices, "usage": self._usage(completions)}

    def _message(self, c: Completion) -> tuple[dict, str]:
        """A chat choice's message and finish reason; with tools, calls parsed from the text."""
        if self.tools:
            from tuneloop.serve.tools import parse_tool_calls

            content, calls = parse_tool_calls(c.text)
            if calls:
                message = {"role": "assistant", "content": content, "tool_calls": calls}
                return message, "tool_calls"
        return {"role": "assistant", "content": c.text}, c.finish_reason

    def chunk(self, index: int, content: str | dict | None, finish_reason: str | None) -> str:
        """One streamed event of choice `index`: new text, a chat's opening role or a delta
        (a dict), or the finish reason; with the log-probabilities of the tokens since the last
        event, when asked."""
        job = self.jobs[index]
        logprobs = None
        if job.logprobs:
            fresh = job.token_logprobs[self._logprobs_sent[index] :]
            self._logprobs_sent[index] += len(fresh)
            logprobs = self._logprobs(job, fresh) if fresh else None
        if self.endpoint == "chat":
            if isinstance(content, dict):
                delta = content
            else:
                delta = {} if content is None else {"content": content}
            choice = {"index": index, "delta": delta, "logprobs": logprobs,
                      "finish_reason": finish_reason}  # fmt: skip
            obj = "chat.completion.chunk"
        else:
            choice = {"index": index, "text": content or "", "logprobs": logprobs,
                      "finish_reason": finish_reason}  # fmt: skip
            obj = "text_completion"
        return sse({**self._head(obj), "choices": [choice]})

    def usage_chunk(self, completions: list[Completion]) -> str:
        """The streamed usage event (`stream_options.include_usage`): no choices, only usage."""
        usage = self._usage(completions)
        return sse({**self._head(self.object + ".chunk"), "choices": [], "usage": usage})

    def failed(self, exc: Exception) -> RequestError:
        """Count a request the engine failed; the error to answer with (anything unforeseen:
        500)."""
        err = exc if isinstance(exc, RequestError) else _server_error(exc)
        self.engine.metrics.requests.labels(self.endpoint, self.job.model, str(err.status)).inc()
        return err

    def record(self, completions: list[Completion]) -> None:
        """Metrics and (sampled) log line of an answered request."""
        m, job = self.engine.metrics, self.job
        seconds = time.perf_counter() - self.started
        self.engine.observe_answer(seconds)
        m.requests.labels(self.endpoint, job.model, "200").inc()
        m.latency.labels(self.endpoint).observe(seconds)
        if job.first_token_at is not None:
            m.first_token.observe(job.first_token_at - job.created)
        usage = self._usage(completions)
        m.prompt_tokens.labels(job.model).inc(usage["prompt_tokens"])
        m.completion_tokens.labels(job.model).inc(usage["completion_tokens"])
        if self.log is not None:
            first = completions[0]
            more = {"answers": [c.text for c in completions]} if len(completions) > 1 else {}
            self.log.maybe_write(
                {
                    "id": self.id,
                    "endpoint": self.endpoint,
                    "model": job.model,
                    **self.logged,
                    "answer": first.text,
                    **more,
                    "finish_reason": first.finish_reason,
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": usage["completion_tokens"],
                    "seconds": round(seconds, 4),
                }
            )

    def _usage(self, completions: list[Completion]) -> dict:
        """Tokens of the request: each distinct prompt once (n choices share it), every
        choice's answer."""
        prompts = {id(j.prompt_ids): len(j.prompt_ids) for j in self.jobs}
        prompt = sum(prompts.values())
        completion = sum(c.completion_tokens for c in completions)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}  # fmt: skip

    def _logprobs(self, job: Job, entries: list[dict]) -> dict:
        """Log-probabilities in the endpoint's OpenAI shape."""
        tokenizer = job.tokenizer
        if self.endpoint == "chat":
            return {"content": [_chat_logprob(tokenizer, e) for e in entries]}
        tokens = [token_text(tokenizer, e["token_id"]) for e in entries]
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        top = [{token_text(tokenizer, t): lp for t, lp in e["top"]} if "top" in e else None
               for e in entries]  # fmt: skip
        return {"tokens": tokens, "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": top if any(x is not None for x in top) else None,
                "text_offset": offsets}  # fmt: skip

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.job.model}


async def stream_events(
    exchange: Exchange, events: asyncio.Queue, include_usage: bool
) -> AsyncIterator[str]:
    """The server-sent events of a streamed answer: each chat choice's opening role, a chunk
    per delta, each choice's finish reason, the usage if asked, then `[DONE]`. With tools, a
    choice's text is held until it is complete, then sent as content and parsed tool calls. A
    failure after the 200 status line is sent as one event holding the error body. A client
    that goes away frees the rows of its choices."""
    done: dict[int, Completion] = {}
    try:
        if exchange.endpoint == "chat":
            for job in exchange.jobs:
                yield exchange.chunk(job.index, {"role": "assistant", "content": ""}, None)
        while len(done) < len(exchange.jobs):
            kind, index, value = await events.get()
            if kind == "delta":
                if not exchange.tools:
                    yield exchange.chunk(index, value, None)
            elif kind == "done":
                done[index] = value
                if exchange.tools:
                    message, reason = exchange._message(value)
                    delta = {k: v for k, v in message.items() if k != "role" and v is not None}
                    if "tool_calls" in delta:
                        delta["tool_calls"] = [{"index": i, **call} for i, call in
                                               enumerate(delta["tool_calls"])]  # fmt: skip
                    yield exchange.chunk(index, delta, None)
                    yield exchange.chunk(index, None, reason)
                else:
                    yield exchange.chunk(index, None, value.finish_reason)
            else:
                yield sse(exchange.failed(value).body())
                return
        completions = [done[i] for i in range(len(exchange.jobs))]
        exchange.record(completions)
        if include_usage:
            yield exchange.usage_chunk(completions)
        yield "data: [DONE]\n\n"
    finally:
        exchange.cancel()  # a client gone, or an error: free every unfinished row


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


def token_text(tokenizer, token: int) -> str:
    """A token as text, as OpenAI reports it (a piece of a multi-byte character decodes to
    U+FFFD; its `bytes` are exact)."""
    return tokenizer.decode([token], skip_special_tokens=False)


def token_bytes(tokenizer, token: int) -> list[int]:
    """The token's exact bytes: byte-level BPE pieces mapped back through GPT-2's byte
    alphabet, other tokenizers' text encoded as UTF-8."""
    piece = tokenizer.convert_ids_to_tokens(token)
    alphabet = _byte_alphabet()
    if isinstance(piece, str) and piece and all(c in alphabet for c in piece):
        return [alphabet[c] for c in piece]
    return list(token_text(tokenizer, token).encode())


@functools.cache
def _byte_alphabet() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _chat_logprob(tokenizer, entry: dict) -> dict:
    def one(token: int, logprob: float) -> dict:
        text = token_text(tokenizer, token)
        return {"token": text, "logprob": logprob, "bytes": token_bytes(tokenizer, token)}

    top = [one(t, lp) for t, lp in entry.get("top", [])]
    return {**one(entry["token_id"], entry["logprob"]), "top_logprobs": top}
