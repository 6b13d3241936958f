"""The real commands: `tuneloop serve RUN` as a subprocess on a free loopback port (stopped at
the end), then `tuneloop monitor` on the request log it wrote."""

from __future__ import annotations

import http.client
import json

import pytest
from typer.testing import CliRunner

from conftest import Server, train_tiny_run
from tuneloop.cli.main import app


def call(port: int, method: str, path: str, body=None, key: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    return train_tiny_run(tmp_path_factory.mktemp("cli-run"), tiny_model_dir)


def test_serve_a_run_then_monitor_its_log(run, tmp_path):
    log = tmp_path / "requests.jsonl"
    args = (f"tiny={run.path}", "--precision", "fp32", "--log", str(log), "--log-sample", "1")
    with Server(*args, env={"TUNELOOP_API_KEY": "k3y"}) as server:
        port = server.port
        status, models = call(port, "GET", "/v1/models", key="k3y")
        assert status == 200 and [m["id"] for m in models["data"]] == ["__base__", "tiny"]
        assert call(port, "GET", "/v1/models", key="wrong")[0] == 401
        items = [
            json.loads(line)["messages"][0]["content"]
            for line in (run.path.parent.parent.parent / "train.jsonl").read_text().splitlines()
        ]
        for text in items:
            body = {"model": "tiny", "messages": [{"role": "user", "content": text}]}
            status, out = call(port, "POST", "/v1/chat/completions", body, key="k3y")
            assert status == 200, out
            assert out["usage"]["completion_tokens"] <= 6  # the run's eval.max_new_tokens
    assert len(log.read_text().splitlines()) == len(items)

    runner = CliRunner()
    same = runner.invoke(app, ["monitor", str(log), "--run", str(run.path), "--json"])
    assert same.exit_code == 0, same.output
    report = json.loads(same.output)
    flags = {s["name"]: s["drifted"] for s in report["signals"]}
    assert report["n_live"] == 24 and report["model"] == "tiny"
    # the prompts are the training prompts; the barely trained tiny model answers no label
    assert not flags["prompt length"] and not flags["vocabulary"] and not flags["unseen words"]
    assert flags["answers outside the label set"]

    records = [json.loads(line) for line in log.read_text().splitlines()]
    for r in records:
        r["messages"][0]["content"] = "wallet seed phrase recovery " * 8
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    drifted = runner.invoke(app, ["monitor", str(log), "--run", str(run.path), "--strict"])
    assert drifted.exit_code == 1, drifted.output
    assert "drift: prompt length, vocabulary, unseen words" in drifted.output
    assert "wallet (" in drifted.output  # the unseen words, counted


def test_serve_says_what_each_adapter_runs_on_and_refuses_multitask_prompts_honestly(
    tiny_model_dir, tiny_tokenizer, tmp_path
):
    from peft import MultitaskPromptTuningConfig, PromptTuningConfig, get_peft_model
    from tiny_adapters import make_adapter

    from conftest import build_tiny_model
    from tuneloop.serve.adapters import read_spec

    lora = make_adapter(tmp_path / "q", tiny_tokenizer, tiny_model_dir, ["q_proj"], 2, seed=1)
    meta = json.loads((lora / "tuneloop.json").read_text())
    meta["recipe"]["train"] = {"method": "qlora"}
    (lora / "tuneloop.json").write_text(json.dumps(meta))
    assert "4-bit NF4 base" in read_spec("q", lora).served_on  # not "as evaluated"

    folder = tmp_path / "prompt"
    get_peft_model(
        build_tiny_model(len(tiny_tokenizer)),
        PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    ).save_pretrained(folder)
    assert "virtual tokens" in read_spec("p", folder).served_on  # served (test_engine.py)

    folder = tmp_path / "multitask"
    get_peft_model(
        build_tiny_model(len(tiny_tokenizer)),
        MultitaskPromptTuningConfig(num_virtual_tokens=4, num_tasks=2, task_type="CAUSAL_LM"),
    ).save_pretrained(folder)
    (folder / "tuneloop.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    out = CliRunner().invoke(app, ["serve", f"p={folder}"])
    assert out.exit_code == 2
    assert "MULTITASK_PROMPT_TUNING adapter" in out.output and "task id" in out.output
    assert "--merge" not in out.output  # export refuses it too: no pointing back and forth
