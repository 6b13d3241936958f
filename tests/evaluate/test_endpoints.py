"""Hosted and recorded rungs: the endpoint client (retries, errors, rate limit, cache), recorded
answers, what a rung costs, the recipe's checks of rung names, and the gate's match condition."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tuneloop.config import validate_recipe
from tuneloop.data.records import Example
from tuneloop.errors import DataError, UserError
from tuneloop.evaluate.cost import usage_summary
from tuneloop.evaluate.ladder import rung_of
from tuneloop.evaluate.recorded import recorded_answers
from tuneloop.models.remote import ChatEndpoint, ReplyCache

PROMPTS = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]


def completion(text: str, prompt_tokens: int = 7, completion_tokens: int = 2) -> dict:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def echo_server(fail_first: dict[str, int] | None = None, status: int = 503):
    """A MockTransport answering `echo: <prompt>`; each prompt in `fail_first` first fails
    that many times with `status`. Returns the transport and the list of requests seen."""
    seen: list[dict] = []
    left = dict(fail_first or {})
    lock = threading.Lock()

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        text = body["messages"][-1]["content"]
        with lock:
            seen.append({"body": body, "auth": request.headers.get("authorization"),
                         "at": time.monotonic()})  # fmt: skip
            if left.get(text, 0) > 0:
                left[text] -= 1
                return httpx.Response(status, json={"error": "busy"})
        return httpx.Response(200, json=completion(f"echo: {text}"))

    return httpx.MockTransport(handle), seen


def test_replies_come_back_in_order_with_usage_and_the_key_from_the_environment(monkeypatch):
    transport, seen = echo_server()
    monkeypatch.setenv("HOSTED_KEY", "s3cret")
    endpoint = ChatEndpoint("http://hosted/v1", "big", "HOSTED_KEY", transport=transport)
    replies = endpoint.chat(PROMPTS, max_tokens=8)
    assert [r.text for r in replies] == [f"echo: question {i}" for i in range(6)]
    assert all(r.usage["prompt_tokens"] == 7 and r.usage["completion_tokens"] == 2 for r in replies)
    assert all(r.usage["latency_s"] >= 0 and r.usage["cached"] is False for r in replies)
    assert {s["auth"] for s in seen} == {"Bearer s3cret"}
    assert seen[0]["body"]["model"] == "big" and seen[0]["body"]["max_tokens"] == 8


def test_a_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HOSTED_KEY", raising=False)
    endpoint = ChatEndpoint("http://hosted/v1", "big", "HOSTED_KEY", where="eval.endpoints[0]")
    with pytest.raises(UserError) as err:
        endpoint.chat(PROMPTS, max_tokens=8)
    assert "$HOSTED_KEY is not set" in str(err.value)
    assert err.value.problems[0].where == "eval.endpoints[0].api_key_env"


def test_busy_answers_are_retried_and_other_errors_name_the_setting():
    transport, seen = echo_server({"question 2": 2}, status=503)
    endpoint = ChatEndpoint("http://h/v1", "m", retries=2, backoff_s=0.001, transport=transport)
    assert endpoint.chat(PROMPTS, max_tokens=4)[2].text == "echo: question 2"
    assert len(seen) == 8 and endpoint.sent == 8  # 6 prompts + 2 retries

    transport, _ = echo_server({"question 0": 5}, status=429)
    endpoint = ChatEndpoint("http://h/v1", "m", retries=1, backoff_s=0.001, transport=transport)
    with pytest.raises(UserError) as err:
        endpoint.chat(PROMPTS[:1], max_tokens=4)
    assert "answered 429 to prompt 1" in str(err.value) and "after 2 tries" in str(err.value)
    assert err.value.problems[0].where.endswith(".rate_limit")

    transport, _ = echo_server({"question 0": 1}, status=404)
    endpoint = ChatEndpoint("http://h/v1", "m", transport=transport)
    with pytest.raises(UserError) as err:
        endpoint.chat(PROMPTS[:1], max_tokens=4)
    assert err.value.problems[0].where == "eval.endpoints.model"


def test_a_server_that_is_not_there_fails_after_its_retries():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    endpoint = ChatEndpoint("http://127.0.0.1:9/v1", "m", retries=1, backoff_s=0.001,
                            transport=httpx.MockTransport(refuse))  # fmt: skip
    with pytest.raises(UserError) as err:
        endpoint.chat(PROMPTS[:1], max_tokens=4)
    assert "did not answer prompt 1 after 2 tries" in str(err.value)
    assert endpoint.sent == 2


def test_the_rate_limit_spaces_the_starts_of_requests():
    transport, seen = echo_server()
    endpoint = ChatEndpoint("http://h/v1", "m", concurrency=6, rate_limit=20, transport=transport)
    endpoint.chat(PROMPTS, max_tokens=4)
    starts = sorted(s["at"] for s in seen)
    # 20 per second: starts at least 50 ms apart (a loaded machine only spaces them more)
    assert all(b - a >= 0.045 for a, b in zip(starts, starts[1:], strict=False))


def test_the_cache_answers_a_second_run_without_a_request(tmp_path):
    transport, seen = echo_server()
    cache = ReplyCache(tmp_path)
    first = ChatEndpoint("http://h/v1", "m", cache=cache, transport=transport)
    first.chat(PROMPTS, max_tokens=4)
    again = ChatEndpoint("http://h/v1", "m", cache=cache, transport=transport)
    replies = again.chat(PROMPTS, max_tokens=4)
    assert again.sent == 0 and len(seen) == 6
    assert all(r.usage["cached"] and r.usage["prompt_tokens"] == 7 for r in replies)
    other_model = ChatEndpoint("http://h/v1", "other", cache=cache, transport=transport)
    other_model.chat(PROMPTS[:1], max_tokens=4)
    assert other_model.sent == 1  # another model is another key


def test_replies_received_before_a_failure_are_kept(tmp_path):
    transport, _ = echo_server({"question 5": 9}, status=400)
    cache = ReplyCache(tmp_path)
    endpoint = ChatEndpoint("http://h/v1", "m", concurrency=1, cache=cache, transport=transport)
    with pytest.raises(UserError):
        endpoint.chat(PROMPTS, max_tokens=4)
    keys = [endpoint.key({"model": "m", "messages": p, "max_tokens": 4, "temperature": 0.0})
            for p in PROMPTS]  # fmt: skip
    assert len(cache.get(keys)) == 5  # paid for, never asked again


def test_cost_of_tokens_and_of_machine_time():
    hosted = usage_summary([{"prompt_tokens": 1000, "completion_tokens": 100, "latency_s": 1.0}],
                           price_in=0.15, price_out=0.6)  # fmt: skip
    assert hosted["cost_per_1k"] == pytest.approx((1000 * 0.15 + 100 * 0.6) / 1e6 * 1000)
    local = [{"machine_s": 0.5, "latency_s": 4.0}, {"machine_s": 1.5, "latency_s": 4.0}]
    priced = usage_summary(local, price_per_hour=3.6)
    assert priced["cost_per_1k"] == pytest.approx(1.0) and priced["latency_p95_s"] == 4.0
    unpriced = usage_summary(local)
    assert unpriced["cost_per_1k"] is None and "eval.price_per_hour" in unpriced["cost_note"]
    untold = usage_summary([{"latency_s": 1.0}], price_in=1, price_out=1)
    assert untold["cost_per_1k"] is None and "token counts" in untold["cost_note"]


def item(i: int, text: str, answer: str, **meta) -> Example:
    return Example([{"role": "user", "content": text}, {"role": "assistant", "content": answer}],
                   meta, f"heldout.jsonl:{i}")  # fmt: skip


def test_recorded_answers_match_by_id_or_prompt(tmp_path):
    from tuneloop.config import RecordedConfig

    path = tmp_path / "last_year.jsonl"
    path.write_text(
        '{"id": 7, "answer": "card_arrival", "latency_s": 0.8, "prompt_tokens": 20, '
        '"completion_tokens": 3}\n'
        '{"prompt": "  Where is   my refund?", "answer": "refund"}\n'
    )
    items = [item(1, "card never came", "card_arrival", id=7), item(2, "Where is my refund?", "r")]
    answers, usage = recorded_answers(RecordedConfig(name="old", path=path), items)
    assert answers == ["card_arrival", "refund"]
    assert usage[0] == {"latency_s": 0.8, "prompt_tokens": 20, "completion_tokens": 3,
                        "cached": True}  # fmt: skip
    with pytest.raises(UserError) as err:
        recorded_answers(RecordedConfig(name="old", path=path), [*items, item(3, "new?", "x")])
    assert "no answer for 1 of 3 held-out items: heldout.jsonl:3" in str(err.value)
    path.write_text('{"id": 7, "answer": "a"}\n{"id": 7, "answer": "b"}\n')
    with pytest.raises(DataError) as err:
        recorded_answers(RecordedConfig(name="old", path=path), items)
    assert err.value.problems[0].where == f"{path}:2" and "first is on line 1" in str(err.value)
    path.write_text('{"id": 7, "reply": "a"}\n')
    with pytest.raises(DataError, match="needs a string `answer`"):
        recorded_answers(RecordedConfig(name="old", path=path), items)


def test_the_recipe_names_every_rung_and_refuses_clashes():
    raw = {
        "data": {"train": "t.jsonl"},
        "task": {"knowledge": "docs"},
        "eval": {
            "endpoints": [
                {
                    "name": "gpt-4o-mini",
                    "url": "http://x/v1",
                    "model": "gpt-4o-mini",
                    "prompts": ["zero-shot", "rag"],
                }
            ],  # fmt: skip
            "recorded": [{"name": "v1-prod", "path": "v1.jsonl"}],
        },
        "gate": {"match": {"rung": "gpt-4o-mini", "tolerance": 0.02}},
    }
    recipe = validate_recipe(raw)
    assert recipe.rung_names() == ["zero-shot", "few-shot", "retrieval-few-shot", "rag",
                                   "gpt-4o-mini", "gpt-4o-mini+rag", "v1-prod"]  # fmt: skip
    assert rung_of("v1-prod", recipe).asks == "recorded"
    assert rung_of("gpt-4o-mini+rag", recipe).prompting == "rag"
    assert rung_of("rag", recipe).asks == "base"
    with pytest.raises(UserError, match="`gpt-4o` is not a rung"):
        rung_of("gpt-4o", recipe)

    bad = json.loads(json.dumps(raw))
    bad["task"].pop("knowledge")
    bad["eval"]["recorded"][0]["name"] = "gpt-4o-mini"
    bad["gate"] = {"rungs": ["zero-shot", "gpt-5"], "match": {"rung": "nope"}}
    with pytest.raises(UserError) as err:
        validate_recipe(bad)
    text = str(err.value)
    assert "`gpt-4o-mini` is used twice" in text
    assert "asked with `rag`, but task.knowledge is not set" in text
    assert "`gpt-5` is not a rung of this recipe" in text and "`nope` is not a rung" in text
    with pytest.raises(UserError, match="tolerance"):
        validate_recipe({**raw, "gate": {"match": {"rung": "gpt-4o-mini", "tolerance": 2}}})
