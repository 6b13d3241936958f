"""Chat models behind an OpenAI-compatible API (`POST {url}/chat/completions`), asked many
prompts at once: the hosted model a team uses today, a judge, a distillation teacher.

    endpoint = ChatEndpoint("https://api.openai.com/v1", "gpt-4o-mini", api_key_env="OPENAI_KEY",
                            concurrency=8, rate_limit=5, cache=ReplyCache(folder))
    replies = endpoint.chat([[{"role": "user", "content": "Hi"}]], max_tokens=16)
    replies[0].text, replies[0].usage  # 'Hello!', {'prompt_tokens': 9, 'completion_tokens': 2,
                                       #            'latency_s': 0.41, 'cached': False}

- `concurrency` requests are in flight at once, and no more than `rate_limit` start per second;
- a connection error, a timeout, 429 or a 5xx is retried `retries` times with exponential
  backoff (a `Retry-After` header is obeyed); any other answer is a `UserError` naming the
  setting to fix (`where`);
- every reply is kept in `ReplyCache` (SQLite) as soon as it arrives, keyed by the endpoint, the
  model, the messages and the decoding settings: a re-run, or a run that failed half-way,
  never pays twice for an answer. The cache is the generation cache's folder (`--no-cache` and
  `TUNELOOP_NO_CACHE` switch both off);
- the key is read from the environment variable named, never from a recipe or the registry.

`usage` has the keys `generate`'s usage has, so a hosted rung and a local one are costed alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.errors import UserError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass
class Reply:
    text: str
    usage: dict = field(default_factory=dict)  # prompt/completion tokens, latency_s, cached


class ReplyCache:
    """Replies on disk (`endpoints.sqlite` in `folder`), by request key.

    >>> import tempfile
    >>> cache = ReplyCache(Path(tempfile.mkdtemp()))
    >>> cache.put("k", Reply("hi", {"prompt_tokens": 3}))
    >>> cache.get(["k", "other"])["k"].text
    'hi'
    """

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.folder / "endpoints.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT)")
        return con

    def get(self, keys: list[str]) -> dict[str, Reply]:
        from tuneloop.models.generate import rows_by_key

        if not self.path.exists():
            return {}
        with closing(self._connect()) as con:
            rows = rows_by_key(con, "replies", "reply", keys)
        saved = {key: json.loads(blob) for key, blob in rows}
        return {k: Reply(s["text"], {**s["usage"], "cached": True}) for k, s in saved.items()}

    def put(self, key: str, reply: Reply) -> None:
        blob = json.dumps({"text": reply.text, "usage": {**reply.usage, "cached": False}})
        with self._lock, closing(self._connect()) as con, con:
            con.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, blob))


class RateLimit:
    """At most `per_second` starts per second across threads (None: no limit)."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class ChatEndpoint:
    """One model behind an OpenAI-compatible API; `where` names the setting in error messages."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str | None = None,
        *,
        concurrency: int = 8,
        rate_limit: float | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        cache: ReplyCache | None = None,
        where: str = "eval.endpoints",
        backoff_s: float = 0.5,
        transport=None,
    ):
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else f"{base}/chat/completions"
        self.model, self.api_key_env, self.where = model, api_key_env, where
        self.concurrency, self.timeout_s, self.retries = concurrency, timeout_s, retries
        self.cache, self.backoff_s = cache, backoff_s
        self.transport = transport  # an httpx transport (tests use httpx.MockTransport)
        self._limit = RateLimit(rate_limit)
        self.sent = 0  # requests that reached the network, retries included

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UserError(
                    f"the API key variable ${self.api_key_env} is not set",
                    f"{self.where}.api_key_env",
                    f"export {self.api_key_env}=..., or remove api_key_env for an open endpoint",
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def key(self, body: dict) -> str:
        """The cache key: the endpoint, and everything in the request that decides the reply."""
        blob = json.dumps([self.url, body], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def chat(
        self,
        prompts: list[list[dict]],
        max_tokens: int,
        temperature: float = 0.0,
        progress: bool = False,
        extra: dict | None = None,
    ) -> list[Reply]:
        """One reply per prompt, in order; cached replies are not asked again."""
        import httpx
        from tqdm.auto import tqdm

        bodies = [
            {"model": self.model, "messages": p, "max_tokens": max_tokens,
             "temperature": temperature, **(extra or {})}
            for p in prompts
        ]  # fmt: skip
        keys = [self.key(b) for b in bodies]
        found = self.cache.get(keys) if self.cache else {}
        todo = [i for i, k in enumerate(keys) if k not in found]
        replies: list[Reply | None] = [found.get(k) for k in keys]
        if not todo:
            return [r for r in replies if r is not None]
        headers = self.headers()
        bar = tqdm(total=len(todo), desc=f"ask {self.model}", disable=not progress)
        client = httpx.Client(timeout=self.timeout_s, headers=headers, transport=self.transport)
        with client:

            def one(i: int) -> Reply:
                reply = self._ask(client, bodies[i], i)
                if self.cache:
                    self.cache.put(keys[i], reply)
                bar.update(1)
                return reply

            for i, reply in zip(todo, _each(one, todo, self.concurrency), strict=True):
                replies[i] = reply
        bar.close()
        return [r for r in replies if r is not None]

    def _ask(self, client, body: dict, i: int) -> Reply:
        import httpx

        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            self._limit.wait()
            started = time.perf_counter()
            self.sent += 1
            try:
                response = client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                if last:
                    raise UserError(
                        f"{self.url} did not answer prompt {i + 1} after {self.retries + 1} "
                        f"tries ({type(exc).__name__}: {exc})",
                        f"{self.where}.url",
                        "check that the server is running and the URL is its /v1 base; raise "
                        "timeout_s or retries for a slow one",
                    ) from None
                time.sleep(self.backoff_s * 2**attempt)
                continue
            latency = time.perf_counter() - started
            if response.status_code in RETRY_STATUS and not last:
                time.sleep(_retry_after(response) or self.backoff_s * 2**attempt)
                continue
            if response.status_code != 200:
                raise UserError(*self._refusal(response, i))
            return self._reply(response, latency)
        raise AssertionError("unreachable")

    def _refusal(self, response, i: int) -> tuple[str, str, str]:
        code, text = response.status_code, response.text[:200]
        what = f"{self.url} answered {code} to prompt {i + 1}: {text}"
        if code in (401, 403):
            return what, f"{self.where}.api_key_env", "check the API key and its permissions"
        if code == 404:
            return what, f"{self.where}.model", "check the model name and the URL's /v1 base"
        if code in RETRY_STATUS:
            return (
                what + f" (after {self.retries + 1} tries)",
                f"{self.where}.rate_limit",
                "lower rate_limit or concurrency, or raise retries",
            )
        return what, self.where, "check the request settings against the endpoint's API"

    def _reply(self, response, latency: float) -> Reply:
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise UserError(
                f"{self.url}'s reply is not an OpenAI chat completion: {response.text[:200]}",
                f"{self.where}.url",
                "point the URL at an OpenAI-compatible /v1 base",
            ) from None
        used = data.get("usage") or {}
        usage = {
            "prompt_tokens": used.get("prompt_tokens"),
            "completion_tokens": used.get("completion_tokens"),
            "latency_s": latency,
            "cached": False,
        }
        return Reply(text, usage)


def _retry_after(response) -> float | None:
    try:
        return min(60.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _each(fn: Callable[[int], Reply], indices: list[int], concurrency: int) -> list[Reply]:
    """[fn(i) for i in indices] with up to `concurrency` calls in flight. The first failure
    (in order) is raised and calls not yet started are cancelled; replies already received
    stay in the cache."""
    pool = ThreadPoolExecutor(max_workers=min(concurrency, max(1, len(indices))))
    futures = [pool.submit(fn, i) for i in indices]
    try:
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def active_reply_cache() -> ReplyCache | None:
    """The reply cache beside the active generation cache (none when that is off)."""
    from tuneloop.models.generate import active_cache

    cache = active_cache()
    return ReplyCache(cache.folder) if cache is not None else None
