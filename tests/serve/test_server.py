"""A live server on a free loopback port over the tiny model and three tiny LoRA adapters.

Every request goes through real HTTP (uvicorn in a thread, 127.0.0.1 only) and every call has a
timeout, so a hung server fails the test instead of hanging it.
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tiny_adapters import make_adapters

from tuneloop.serve.adapters import parse_adapter_arg
from tuneloop.serve.app import create_app
from tuneloop.serve.engine import Engine
from tuneloop.serve.options import ServeOptions
from tuneloop.serve.requestlog import RequestLog, read_log
from tuneloop.serve.server import BackgroundServer

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
MODELS = ["__base__", "alpha", "beta", "gamma"]
PROMPTS = [
    "I forgot my password and cannot log in.",
    "Please cancel my subscription today.",
    "Where is my order? It has not arrived.",
    "refund_request please",
    "The quick brown fox jumps over the lazy dog",
    "classify the support message",
    "0123456789",
    "Where is my refund?",
    "log in",
    "cancel",
    "shipping status of my order",
    "I cannot log in today",
    "subscription refund",
    "the lazy dog",
    "password reset please",
    "order 42 has not arrived",
]
OPTIONS = ServeOptions(
    precision="fp32",
    max_tokens=64,
    max_prompt_tokens=64,
    max_body_bytes=20_000,
    max_batch=32,
    cache_size=4,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_tokenizer, tiny_model_dir):
    root = tmp_path_factory.mktemp("serve")
    dirs = make_adapters(root / "adapters", tiny_tokenizer, tiny_model_dir)
    specs = [parse_adapter_arg(f"{name}={path}") for name, path in dirs.items()]
    engine = Engine.load(str(tiny_model_dir), specs, OPTIONS)
    log = RequestLog(root / "requests.jsonl", rate=1.0)
    with BackgroundServer(create_app(engine, api_key=KEY, log=log)) as srv:
        srv.engine, srv.log = engine, log
        yield srv


def request(srv, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    """(status, parsed JSON or text) of one HTTP request to the live server."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=AUTH if headers is None else headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        kind = resp.getheader("content-type", "")
        return resp.status, json.loads(text) if kind.startswith("application/json") else text
    finally:
        conn.close()


def chat(srv, model: str, content: str, **extra) -> tuple[int, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return request(srv, "POST", "/v1/chat/completions", body)


def answer(srv, model: str, content: str) -> str:
    status, body = chat(srv, model, content, max_tokens=8)
    assert status == 200, body
    return body["choices"][0]["message"]["content"]


def metric(srv, name: str) -> float:
    """The sum of a metric's samples named exactly `name` on /metrics."""
    status, text = request(srv, "GET", "/metrics", headers={})
    assert status == 200
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.split("{")[0].split(" ")[0] == name
    ]
    return sum(values)


def test_three_adapters_and_the_base_answer_differently(server):
    status, body = request(server, "GET", "/v1/models")
    assert status == 200
    assert [m["id"] for m in body["data"]] == MODELS
    answers = {m: answer(server, m, PROMPTS[0]) for m in MODELS}
    assert len(set(answers.values())) == 4, answers  # each adapter really changes the model


def test_64_concurrent_requests_equal_their_answers_alone(server):
    cases = [(MODELS[i % 4], PROMPTS[i // 4]) for i in range(64)]
    batches_before = metric(server, "tuneloop_batch_size_count")
    models_before = metric(server, "tuneloop_batch_models_sum")
    server.engine.pause()  # queue all 64 first, so they are batched together for certain
    try:
        with ThreadPoolExecutor(max_workers=64) as pool:
            futures = [pool.submit(chat, server, m, p, max_tokens=8) for m, p in cases]
            deadline = time.monotonic() + 60
            while server.engine.pending() < 64 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.engine.pending() == 64
            server.engine.resume()
            together = [f.result(timeout=120) for f in futures]
    finally:
        server.engine.resume()
    assert all(status == 200 for status, _ in together), together
    batches = metric(server, "tuneloop_batch_size_count") - batches_before
    assert batches == 2  # 64 requests in batches of at most 32
    assert metric(server, "tuneloop_batch_models_sum") - models_before == 8  # 4 models in each
    alone = [answer(server, m, p) for m, p in cases]
    got = [body["choices"][0]["message"]["content"] for _, body in together]
    assert got == alone
    assert metric(server, "tuneloop_adapter_evictions_total") == 0  # all three stayed loaded


def test_streamed_chat_equals_the_plain_answer(server):
    for model in MODELS:
        status, text = chat(
            server,
            model,
            PROMPTS[2],
            stream=True,
            max_tokens=8,
            stream_options={"include_usage": True},
        )
        assert status == 200
        events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        streamed = "".join(
            c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"]
        )
        assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
        assert chunks[-1]["usage"]["completion_tokens"] > 0
        assert streamed == answer(server, model, PROMPTS[2])


def test_completions_endpoint(server):
    body = {"model": "beta", "prompt": "Where is my order?", "max_tokens": 5}
    status, out = request(server, "POST", "/v1/completions", body)
    assert status == 200, out
    assert out["object"] == "text_completion"
    assert out["usage"]["completion_tokens"] == 5 and out["choices"][0]["finish_reason"] == "length"


def test_stop_strings_cut_the_answer(server):
    full = answer(server, "alpha", PROMPTS[1])
    stop = full[3:5]
    status, body = chat(server, "alpha", PROMPTS[1], max_tokens=8, stop=[stop])
    assert status == 200
    cut = body["choices"][0]["message"]["content"]
    assert cut == full[: full.index(stop)].rstrip()
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"model": "alpha", "messages": "hello"}', 400, "invalid_value"),
        (b'{"model": "alpha", "messages": []}', 400, "invalid_value"),
        (
            b'{"model": "alpha", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "invalid_value",
        ),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}',
            404,
            "model_not_found",
        ),
        (
            b'{"model": "alpha", "max_tokens": 65, '
            b'"messages": [{"role": "user", "content": "hi"}]}',
            400,
            "max_tokens_too_large",
        ),
        (
            b'{"model": "alpha", "n": 17, "messages": [{"role": "user", "content": "hi"}]}',
            400,
            "invalid_value",
        ),
        (
            json.dumps(
                {"model": "alpha", "messages": [{"role": "user", "content": "log in " * 60}]}
            ).encode(),
            400,
            "context_length_exceeded",
        ),
        (
            json.dumps(
                {"model": "alpha", "messages": [{"role": "user", "content": "x" * 30_000}]}
            ).encode(),
            413,
            "body_too_large",
        ),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, raw, status, code):
    got, body = request(server, "POST", "/v1/chat/completions", raw=raw)
    assert got == status, body
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert answer(server, "alpha", PROMPTS[0])  # still serving


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "schema": {"type": "object", "properties": {"n": {"type": "int"}}}
                    },
                }
            },
            "response_format",
        ),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"logit_bias": {"hello": 5}}, "logit_bias"),
        ({"logit_bias": {"42": 101}}, "logit_bias"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"best_of": 3}, "best_of"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_fields_that_would_change_the_answer_are_refused_not_ignored(server, extra, param):
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], **extra}
    got, out = request(server, "POST", "/v1/chat/completions", body)
    assert got == 400 and out["error"]["param"] == param, out
    assert out["error"]["code"] in ("unsupported_parameter", "invalid_response_format",
                                    "invalid_value")  # fmt: skip
    harmless = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "text"}, "presence_penalty": 0, "seed": 7}  # fmt: skip
    assert request(server, "POST", "/v1/chat/completions", harmless)[0] == 200
    suffix = {"model": "alpha", "prompt": "hi", "suffix": "bye"}
    got, out = request(server, "POST", "/v1/completions", suffix)
    assert got == 400 and out["error"]["param"] == "suffix"


LABEL_SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["alpha", "beta", "gamma"]}, "urgent": {"type": "boolean"}},
    "required": ["label", "urgent"],
    "additionalProperties": False,
}


def test_a_json_schema_response_format_is_enforced_without_cross_talk(server):
    """The tiny random model writes no JSON by itself; under `json_schema` every answer parses
    and validates, and an unconstrained request batched beside constrained ones answers as it
    does alone."""
    import threading

    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": LABEL_SCHEMA}}
    alone = answer(server, "beta", PROMPTS[2])
    results: dict = {}

    def ask(key, model, prompt, **extra):
        results[key] = chat(server, model, prompt, max_tokens=40, **extra)

    threads = [threading.Thread(target=ask, args=(i, m, PROMPTS[i % 3]),
                                kwargs={"response_format": fmt})
               for i, m in enumerate(["alpha", "__base__", "alpha", "beta"])]  # fmt: skip
    threads.append(threading.Thread(target=ask, args=("free", "beta", PROMPTS[2])))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in range(4):
        status, body = results[key]
        assert status == 200, body
        content = body["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(content), LABEL_SCHEMA)
        assert body["choices"][0]["finish_reason"] == "stop"
    status, body = results["free"]
    assert status == 200 and body["choices"][0]["message"]["content"][: len(alone)] == alone


@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", "Basic dGVzdC1rZXk="])
def test_a_wrong_or_missing_api_key_gets_401(server, auth):
    headers = {"Content-Type": "application/json"} | ({"Authorization": auth} if auth else {})
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]:
        status, out = request(server, method, path, body if method == "POST" else None, headers)
        assert status == 401
        assert out["error"]["code"] == "invalid_api_key"
    status, health = request(server, "GET", "/health", headers={})  # probes need no key
    assert status == 200 and health["status"] == "ok"
    assert answer(server, "alpha", PROMPTS[0])


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing-here", 404, "not_found"),
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
    ],
)
def test_unknown_route_or_method_is_an_openai_style_error(server, method, path, status, code):
    got, body = request(server, method, path)
    assert got == status and body["error"]["code"] == code


def test_a_failed_generation_is_a_500_whole_or_streamed(server, monkeypatch):
    def fail(names, **inputs):
        raise ValueError("boom")

    monkeypatch.setattr(server.engine, "_forward_for", lambda lane: fail)
    status, body = chat(server, "alpha", PROMPTS[0], max_tokens=4)
    assert status == 500 and body["error"]["code"] == "generation_failed"
    status, text = chat(server, "alpha", PROMPTS[0], max_tokens=4, stream=True)
    assert status == 200  # sent before the failure: the error is the last event
    last = json.loads(text.strip().splitlines()[-1][len("data: ") :])
    assert last["error"]["message"] == "generation failed: ValueError: boom"
    monkeypatch.undo()
    assert answer(server, "alpha", PROMPTS[0])  # still serving


def test_the_request_log_samples_requests_and_answers(server):
    answer(server, "gamma", "log this one")
    records = read_log(server.log.path)
    mine = [r for r in records if r.get("messages", [{}])[0].get("content") == "log this one"]
    assert mine and mine[-1]["model"] == "gamma"
    assert mine[-1]["answer"] == answer(server, "gamma", "log this one")
    assert {"prompt_tokens", "completion_tokens", "finish_reason", "seconds"} <= mine[-1].keys()


def test_the_openai_client_lists_completes_and_streams(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == MODELS
    messages = [{"role": "user", "content": PROMPTS[3]}]
    done = client.chat.completions.create(model="beta", messages=messages, max_tokens=8)
    assert done.choices[0].message.content == answer(server, "beta", PROMPTS[3])
    assert done.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="beta", messages=messages, max_tokens=8, stream=True
    )
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(parts) == done.choices[0].message.content
    text = client.completions.create(model="gamma", prompt="hello", max_tokens=4)
    assert text.usage.completion_tokens == 4
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=messages)


def test_metrics_count_requests_batches_and_tokens(server):
    answer(server, "alpha", PROMPTS[5])
    assert metric(server, "tuneloop_requests_total") > 0
    assert metric(server, "tuneloop_completion_tokens_total") > 0
    assert metric(server, "tuneloop_adapters_loaded") == 3


def test_request_log_sampling_is_seeded(tmp_path: Path):
    log = RequestLog(tmp_path / "log.jsonl", rate=0.25, seed=1)
    kept = [log.maybe_write({"n": i}) for i in range(400)]
    again = RequestLog(tmp_path / "again.jsonl", rate=0.25, seed=1)
    assert kept == [again.maybe_write({"n": i}) for i in range(400)]
    assert 60 < sum(kept) < 140
    assert [r["n"] for r in read_log(log.path)] == [i for i, k in enumerate(kept) if k]
