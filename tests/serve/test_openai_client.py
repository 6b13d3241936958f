"""The server as the official `openai` client sees it, on the tiny model: every choice of `n`,
seeds, logit bias, log-probabilities that add up to the sequence log-likelihood training and
eval compute, JSON schemas that always validate, a tool call round trip, prompt lists and
token-id prompts; and under stress: back-pressure, timeouts, streams aborted mid-answer.

Every call has a timeout; waits poll with a generous deadline and never judge speed."""

from __future__ import annotations

import copy
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tiny_adapters import make_adapter

from tuneloop.serve.adapters import parse_adapter_arg
from tuneloop.serve.app import create_app
from tuneloop.serve.engine import Engine
from tuneloop.serve.options import ServeOptions
from tuneloop.serve.server import BackgroundServer

openai = pytest.importorskip("openai")
ROOT = Path(__file__).resolve().parents[2]
CHAT = [{"role": "user", "content": "Where is my order? It has not arrived."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city today.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 16}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
OPTIONS = ServeOptions(precision="fp32", max_tokens=256, max_prompt_tokens=2048, max_batch=8,
                       max_pending=8)  # fmt: skip


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """The tiny model with a 4096-token context: a tool-calling prompt (the template's tool
    instructions and the schemas) takes about 600 tokens of the tiny tokenizer."""
    from conftest import build_tiny_model

    path = tmp_path_factory.mktemp("long-tiny")
    model = build_tiny_model(len(tiny_tokenizer))
    model.config.max_position_embeddings = 4096
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_tokenizer, base_dir):
    from tuneloop.data.chat_templates import CHATML_TOOLS

    tiny_model_dir = base_dir
    root = tmp_path_factory.mktemp("openai")
    tools_tokenizer = copy.deepcopy(tiny_tokenizer)
    tools_tokenizer.chat_template = CHATML_TOOLS
    dirs = {
        "alpha": make_adapter(root / "alpha", tiny_tokenizer, tiny_model_dir, ["q_proj"], 4, 3),
        "tools": make_adapter(root / "tools", tools_tokenizer, tiny_model_dir, ["v_proj"], 4, 4),
    }
    specs = [parse_adapter_arg(f"{name}={path}") for name, path in dirs.items()]
    engine = Engine.load(str(tiny_model_dir), specs, copy.deepcopy(OPTIONS))
    with BackgroundServer(create_app(engine)) as srv:
        srv.engine = engine
        srv.client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0,
                                   timeout=120)  # fmt: skip
        yield srv


def test_n_choices_with_seeds(server):
    client = server.client
    ask = dict(model="alpha", messages=CHAT, max_tokens=8, temperature=1.0, n=3)
    first = client.chat.completions.create(**ask, seed=7)
    assert [c.index for c in first.choices] == [0, 1, 2]
    again = client.chat.completions.create(**ask, seed=7)
    other = client.chat.completions.create(**ask, seed=8)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]  # a seed repeats itself
    assert texts != [c.message.content for c in other.choices]
    assert len(set(texts)) > 1  # each choice samples with its own seed
    single = client.chat.completions.create(model="alpha", messages=CHAT, max_tokens=8)
    assert first.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counted once
    assert first.usage.completion_tokens >= 3  # every choice's answer
    greedy = client.chat.completions.create(model="alpha", messages=CHAT, max_tokens=8, n=2)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


def test_logprobs_sum_to_the_sequence_log_likelihood(server, base_dir):
    """The served log-probabilities of a greedy answer add up to the log-likelihood of that
    answer given the prompt, as training's forward computes it (`token_logprobs`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tuneloop.data.templates import render_prompt
    from tuneloop.train.forward import token_logprobs

    reply = server.client.chat.completions.create(
        model="__base__", messages=CHAT, max_tokens=10, logprobs=True, top_logprobs=3
    )
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    for e in entries:  # greedy: the chosen token is the most likely one
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token or "\ufffd" in e.token

    tok = server.engine.tokenizers["__base__"]
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    prompt = tok(render_prompt(tok, CHAT), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                             eos_token_id=server.engine.all_stops)  # fmt: skip
        answer = [t for t in out[0, len(prompt) :].tolist() if t not in server.engine.all_stops]
        ids = torch.tensor([prompt + answer])
        logits = model(ids).logits[0, len(prompt) - 1 : -1]  # predicts each answer token
        expected = float(token_logprobs(logits, torch.tensor(answer)).sum())
    assert sum(e.logprob for e in entries) == pytest.approx(expected, abs=1e-3)

    text = server.client.completions.create(model="__base__", prompt=prompt, max_tokens=5,
                                            logprobs=2)  # fmt: skip
    lp = text.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert lp.text_offset[0] == 0 and "".join(lp.tokens) == text.choices[0].text


def test_json_schema_answers_always_validate(server):
    """100 generated schemas (every field bounded; bench/structured/schemas.py), asked through
    the official client with `response_format: json_schema`: every answer parses, validates
    and ends. (The prompts are short: the tiny model's context is 512 tokens.)"""
    import jsonschema

    sys.path.insert(0, str(ROOT / "bench" / "structured"))
    from schemas import schema_set

    items = schema_set(100, seed=0, bounded=True)

    def ask(item):
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": item["topic"], "schema": item["schema"], "strict": True},
        }
        reply = server.client.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": f"A {item['topic']}, as JSON."}],
            max_tokens=256, response_format=fmt,
        )  # fmt: skip
        choice = reply.choices[0]
        jsonschema.validate(json.loads(choice.message.content), item["schema"])
        return choice.finish_reason

    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(ask, items))
    assert reasons == ["stop"] * 100


def test_a_tool_call_round_trip(server):
    client = server.client
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    reply = client.chat.completions.create(
        model="tools",
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=200,
        parallel_tool_calls=False,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city"} and len(arguments["city"]) <= 16
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 4, "sky": "rain"}'},
    ]
    final = client.chat.completions.create(model="tools", messages=messages, tools=[WEATHER],
                                           max_tokens=16)  # fmt: skip
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls")
    streamed = client.chat.completions.create(
        model="tools", messages=messages[:1], tools=[WEATHER], tool_choice="required",
        max_tokens=200, parallel_tool_calls=False, stream=True,
    )  # fmt: skip
    calls = [c.choices[0].delta.tool_calls for c in streamed if c.choices and
             c.choices[0].delta.tool_calls]  # fmt: skip
    assert calls[0][0].function.name == "get_weather"
    assert calls[0][0].function.arguments == call.function.arguments
    with pytest.raises(openai.BadRequestError) as err:  # the base's template has no tools
        client.chat.completions.create(model="alpha", messages=messages[:1], tools=[WEATHER])
    assert "tools" in str(err.value)


def test_logit_bias_prompt_lists_and_token_ids(server):
    client, tok = server.client, server.engine.tokenizers["alpha"]
    forced = tok.convert_tokens_to_ids("a")
    reply = client.chat.completions.create(model="alpha", messages=CHAT, max_tokens=5,
                                           logit_bias={str(forced): 100})  # fmt: skip
    assert reply.choices[0].message.content == "aaaaa"
    prompts = ["hello there", "the lazy dog"]
    listed = client.completions.create(model="alpha", prompt=prompts, max_tokens=6, n=2)
    assert [c.index for c in listed.choices] == [0, 1, 2, 3]
    for i, prompt in enumerate(prompts):
        alone = client.completions.create(model="alpha", prompt=prompt, max_tokens=6)
        ids = client.completions.create(model="alpha", prompt=tok(prompt)["input_ids"],
                                        max_tokens=6)  # fmt: skip
        assert listed.choices[2 * i].text == listed.choices[2 * i + 1].text == alone.choices[0].text
        assert ids.choices[0].text == alone.choices[0].text
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="alpha", prompt=[10**7], max_tokens=2)


def wait_until(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def test_twenty_streams_aborted_mid_answer_free_their_rows(server, monkeypatch):
    engine = server.engine
    monkeypatch.setattr(engine.options, "max_pending", 64)  # 8 rows run, 12 wait
    body = {"model": "alpha", "messages": CHAT, "max_tokens": 250, "stream": True,
            "logit_bias": {str(engine.all_stops[0]): -100}}  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=60) as http:
        streams = [http.stream("POST", "/v1/chat/completions", json=body) for _ in range(20)]
        for s in streams:
            response = s.__enter__()
            assert response.status_code == 200
            lines = response.iter_lines()
            while not next(lines).startswith('data: {"id"'):
                pass
        assert engine.pending() > 0
        for s in streams:
            s.__exit__(None, None, None)  # the client goes away mid-answer
        wait_until(lambda: engine.pending() == 0)
        status = http.get("/health").json()
        assert status["pending"] == 0
        reply = http.post("/v1/chat/completions",
                          json={"model": "alpha", "messages": CHAT, "max_tokens": 4})  # fmt: skip
        assert reply.status_code == 200


def test_a_full_queue_answers_429_with_retry_after(server):
    engine = server.engine
    engine.pause()
    try:
        with ThreadPoolExecutor(8) as pool:
            waiting = [pool.submit(server.client.chat.completions.create, model="alpha",
                                   messages=CHAT, max_tokens=3) for _ in range(8)]  # fmt: skip
            wait_until(lambda: engine.pending() == 8)
            with httpx.Client(base_url=server.url, timeout=60) as http:
                full = http.post(
                    "/v1/chat/completions",
                    json={"model": "alpha", "messages": CHAT, "max_tokens": 3},
                )
            assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
            assert full.json()["error"]["code"] == "overloaded"
            engine.resume()
            assert all(f.result(timeout=120).choices[0].message.content for f in waiting)
    finally:
        engine.resume()


def test_a_request_past_its_timeout_gets_504_and_frees_its_row(server):
    engine = server.engine
    engine.options.request_timeout_s = 0.05
    engine.pause()
    try:
        with ThreadPoolExecutor(1) as pool:
            late = pool.submit(server.client.chat.completions.create, model="alpha",
                               messages=CHAT, max_tokens=3)  # fmt: skip
            wait_until(lambda: engine.pending() == 1)
            time.sleep(0.2)
            engine.resume()
            with pytest.raises(openai.APIStatusError) as err:
                late.result(timeout=120)
        assert err.value.status_code == 504 and "timeout" in str(err.value)
    finally:
        engine.options.request_timeout_s = OPTIONS.request_timeout_s
        engine.resume()
    wait_until(lambda: engine.pending() == 0)


def test_adapters_load_and_unload_at_run_time_from_the_roots_only(
    tmp_path, tiny_tokenizer, base_dir
):
    from tiny_adapters import make_every_kind

    root, outside = tmp_path / "root", tmp_path / "outside"
    alpha = make_adapter(root / "alpha", tiny_tokenizer, base_dir, ["q_proj"], 4, 3)
    prompt = make_every_kind(root, tiny_tokenizer, base_dir)["prompt"]
    stray = make_adapter(outside / "stray", tiny_tokenizer, base_dir, ["q_proj"], 4, 9)
    (root / "link").symlink_to(stray)
    engine = Engine.load(str(base_dir), [], copy.deepcopy(OPTIONS))
    with (
        BackgroundServer(create_app(engine, adapter_roots=[root])) as srv,
        httpx.Client(base_url=srv.url, timeout=120) as http,
    ):

        def load(name, path):
            return http.post("/v1/load_lora_adapter", json={"lora_name": name,
                                                            "lora_path": str(path)})  # fmt: skip

        def ask(model):
            return http.post("/v1/chat/completions",
                             json={"model": model, "messages": CHAT, "max_tokens": 6})  # fmt: skip

        for path in (stray, root / "link", root / ".." / "outside" / "stray"):
            refused = load("stray", path)
            assert refused.status_code == 403, path
            assert refused.json()["error"]["code"] == "outside_adapter_roots"
        assert ask("alpha").status_code == 404
        assert load("alpha", alpha).status_code == 200
        assert load("alpha", alpha).json()["error"]["code"] == "adapter_exists"
        assert load("p", root / "prompt").status_code == 200
        assert load("bad", root).json()["error"]["code"] == "invalid_adapter"
        models = [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert models == ["__base__", "alpha", "p"]
        answers = {m: ask(m).json()["choices"][0]["message"]["content"]
                   for m in ("__base__", "alpha", "p")}  # fmt: skip
        assert len(set(answers.values())) == 3
        assert http.post("/v1/unload_lora_adapter", json={"lora_name": "alpha"}).status_code == 200
        assert ask("alpha").status_code == 404
        gone = http.post("/v1/unload_lora_adapter", json={"lora_name": "alpha"})
        assert gone.status_code == 404
        wait_until(lambda: "alpha" not in engine.pool.loaded)
        assert ask("p").json()["choices"][0]["message"]["content"] == answers["p"]
        assert load("alpha", alpha).status_code == 200  # loaded again, same answer
        assert ask("alpha").json()["choices"][0]["message"]["content"] == answers["alpha"]
    del prompt
    closed = create_app(Engine.load(str(base_dir), [], copy.deepcopy(OPTIONS)))
    with BackgroundServer(closed) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        off = http.post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": str(alpha)})
        assert off.status_code == 403 and off.json()["error"]["code"] == "runtime_adapters_off"


def test_a_client_that_leaves_before_a_plain_answer_frees_its_row(server):
    engine = server.engine
    engine.pause()
    try:
        with (
            httpx.Client(base_url=server.url, timeout=0.5) as http,
            pytest.raises(httpx.ReadTimeout),
        ):
            http.post("/v1/chat/completions",
                      json={"model": "alpha", "messages": CHAT, "max_tokens": 200})  # fmt: skip
        with engine._cond:
            waiting = list(engine._pending)
        assert len(waiting) == 1
        wait_until(lambda: waiting[0].cancelled)  # noticed within a second
    finally:
        engine.resume()
    wait_until(lambda: engine.pending() == 0)
    assert waiting[0].tokens == []  # never generated: dropped from the queue
