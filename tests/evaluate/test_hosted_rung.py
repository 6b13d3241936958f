"""A real `tuneloop serve` on 127.0.0.1 stands in for the hosted model a team pays for: `advise`
scores it as a rung of the ladder with its token usage, latency and cost, and a second `advise`
answers it from the cache without sending a request."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from conftest import TOPICS, Server
from tuneloop.cli.main import app


def test_advise_scores_a_served_model_as_a_hosted_rung_and_caches_it(
    tmp_path, tiny_model_dir, monkeypatch
):
    monkeypatch.delenv("TUNELOOP_NO_CACHE", raising=False)  # the cache is what is tested
    monkeypatch.setenv("TUNELOOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTED_TEST_KEY", "k3y")
    rows = [
        {"messages": [{"role": "user", "content": f"item {i} about {TOPICS[i % 3]} things"},
                      {"role": "assistant", "content": TOPICS[i % 3]}]}
        for i in range(40)
    ]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp_path / "requests.jsonl"
    args = ("--model", str(tiny_model_dir), "--precision", "fp32", "--log", str(log),
            "--log-sample", "1")  # fmt: skip
    with Server(*args, env={"TUNELOOP_API_KEY": "k3y"}) as server:
        recipe = {
            "name": "hosted",
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": "train.jsonl"},
            "task": {"instruction": "Name the topic.", "kind": "label"},
            "eval": {
                "max_new_tokens": 4,
                "price_per_hour": 3.6,
                "endpoints": [
                    {
                        "name": "hosted",
                        "url": server.url,
                        "model": "__base__",
                        "api_key_env": "HOSTED_TEST_KEY",
                        "price_in": 0.15,
                        "price_out": 0.6,
                        "prompts": ["zero-shot", "few-shot"],
                        "concurrency": 4,
                    }
                ],  # fmt: skip
            },
        }
        path = tmp_path / "tuneloop.yaml"
        path.write_text(yaml.safe_dump(recipe))
        runner = CliRunner()
        first = runner.invoke(app, ["advise", str(path), "--steps", "0", "--quiet"])
        assert first.exit_code == 0, first.output
        asked = len(log.read_text().splitlines())
        second = runner.invoke(app, ["advise", str(path), "--steps", "0", "--quiet"])
        assert second.exit_code == 0, second.output
        assert len(log.read_text().splitlines()) == asked  # no request reached the server

    saved = sorted(
        (tmp_path / ".tuneloop" / "advice").glob("*.json"), key=lambda p: p.stat().st_mtime_ns
    )
    advice = [json.loads(p.read_text()) for p in saved]  # the first advice, then the second
    n = advice[0]["n_heldout"]
    assert asked == 2 * n  # the zero-shot and the few-shot rung, each item once
    for name in ("hosted", "hosted+few-shot"):
        rung = advice[0]["rungs"][name]
        assert rung["asks"] == "endpoint" and rung["n"] == n and "__base__" in rung["answered_by"]
        cost = rung["cost"]
        assert cost["cached"] == 0 and cost["prompt_tokens_mean"] > 0
        assert cost["latency_p50_s"] > 0 and cost["latency_p95_s"] >= cost["latency_p50_s"]
        expected = (cost["prompt_tokens_mean"] * 0.15 + cost["completion_tokens_mean"] * 0.6) / 1e3
        assert abs(cost["cost_per_1k"] - expected) < 1e-9
        again = advice[1]["rungs"][name]
        assert again["cost"]["cached"] == n and again[again["metric"]] == rung[rung["metric"]]
        assert again["cost"]["cost_per_1k"] == cost["cost_per_1k"]  # the usage was kept too
    few = advice[0]["rungs"]["hosted+few-shot"]["cost"]["prompt_tokens_mean"]
    assert few > advice[0]["rungs"]["hosted"]["cost"]["prompt_tokens_mean"]  # the shots
    local = advice[0]["rungs"]["zero-shot"]["cost"]
    assert local["cost_per_1k"] > 0 and local["cost_basis"].startswith("machine time")
    assert "hosted+few-shot" in first.output and "$/1k req" in first.output
    assert any("hosted (__base__ at" in r for r in advice[0]["reasons"])
