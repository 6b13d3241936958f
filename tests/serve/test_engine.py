"""The engine without HTTP: equal to `tuneloop eval`, a bounded adapter cache, DoRA batches of
their own, and adapters refused with reasons."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tiny_adapters import make_adapter, make_adapters

from conftest import train_tiny_run
from tuneloop.errors import UserError
from tuneloop.serve.adapters import parse_adapter_arg
from tuneloop.serve.engine import Engine
from tuneloop.serve.options import ServeOptions

PROMPTS = ["I forgot my password", "Where is my order?", "cancel my subscription", "refund"]


def run_together(engine: Engine, cases: list[tuple[str, str]]) -> list[str]:
    """Queue every case while the worker is held, then let it batch them."""
    import threading

    answers: list[str | None] = [None] * len(cases)
    engine.pause()
    threads = []
    for i, (model, prompt) in enumerate(cases):
        job = engine.chat_job(model, [{"role": "user", "content": prompt}], max_tokens=6)

        def go(i=i, job=job):
            answers[i] = engine.complete(job, timeout=120).text

        threads.append(threading.Thread(target=go))
        threads[-1].start()
    deadline = time.monotonic() + 30
    while engine.pending() < len(cases) and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.resume()
    for t in threads:
        t.join(timeout=120)
    return answers


def alone(engine: Engine, model: str, prompt: str) -> str:
    job = engine.chat_job(model, [{"role": "user", "content": prompt}], max_tokens=6)
    return engine.complete(job, timeout=120).text


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_tokenizer, tiny_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine-adapters")
    dirs = make_adapters(root, tiny_tokenizer, tiny_model_dir)
    dirs["dora"] = make_adapter(
        root / "dora",
        tiny_tokenizer,
        tiny_model_dir,
        ["q_proj", "v_proj"],
        4,
        seed=99,
        use_dora=True,
    )
    return dirs


def engine_for(model_dir: Path, adapters: dict[str, Path], **options) -> Engine:
    specs = [parse_adapter_arg(f"{name}={path}") for name, path in adapters.items()]
    engine = Engine.load(str(model_dir), specs, ServeOptions(precision="fp32", **options))
    engine.start()
    return engine


def test_a_bounded_cache_evicts_and_answers_the_same(tiny_model_dir, adapters):
    cases = [(m, p) for p in PROMPTS for m in ("alpha", "beta", "gamma", "dora", "__base__")]
    roomy = engine_for(tiny_model_dir, adapters, cache_size=4)
    small = engine_for(tiny_model_dir, adapters, cache_size=1)
    try:
        want = [alone(roomy, m, p) for m, p in cases]
        assert run_together(roomy, cases) == want  # DoRA rows in batches of their own
        assert [alone(small, m, p) for m, p in cases] == want
        assert run_together(small, cases) == want
        assert len(small.pool.loaded) == 1
        evictions = small.metrics.adapter_evictions.collect()[0].samples
        assert sum(s.value for s in evictions if s.name.endswith("_total")) > 4
    finally:
        roomy.stop()
        small.stop()


def test_greedy_answers_equal_tuneloop_eval(tmp_path, tiny_model_dir):
    from tuneloop.evaluate.run import evaluate_run

    run = train_tiny_run(tmp_path, tiny_model_dir)
    evaluate_run(run, ("tuned",), progress=False)
    items = [json.loads(line) for line in (run.eval_dir / "tuned.jsonl").read_text().splitlines()]

    spec = parse_adapter_arg(str(run.path))  # a run folder: named after the run id
    assert spec.name == run.id and spec.instruction == "Name the topic of the item."
    engine = Engine.load(None, [spec], ServeOptions(precision="fp32"))  # base from the run
    engine.start()
    try:
        for item in items:  # the user message alone: the server adds the run's instruction
            job = engine.chat_job(run.id, [{"role": "user", "content": item["prompt"]}])
            assert job.max_tokens == 6  # the run's eval.max_new_tokens
            assert engine.complete(job, timeout=60).text == item["prediction"]
    finally:
        engine.stop()


def test_adapters_the_server_cannot_serve_are_refused(tmp_path, tiny_tokenizer, tiny_model_dir):
    from peft import IA3Config, get_peft_model

    from conftest import build_tiny_model

    ia3 = get_peft_model(
        build_tiny_model(len(tiny_tokenizer)),
        IA3Config(
            target_modules=["k_proj", "v_proj", "down_proj"],
            feedforward_modules=["down_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    ia3.save_pretrained(tmp_path / "ia3")
    with pytest.raises(UserError, match="IA3 adapter") as err:
        parse_adapter_arg(f"x={tmp_path / 'ia3'}")
    assert "--merge" in err.value.problems[0].fix

    other = make_adapter(
        tmp_path / "other", tiny_tokenizer, Path("/elsewhere/model"), ["q_proj"], 2, seed=1
    )
    with pytest.raises(UserError, match="trained on `/elsewhere/model`"):
        Engine.load(str(tiny_model_dir), [parse_adapter_arg(f"o={other}")])
    with pytest.raises(UserError, match="not allowed"):
        parse_adapter_arg(f"__base__={other}")
    with pytest.raises(UserError, match="no run"):
        parse_adapter_arg(str(tmp_path / "missing"), workspace=tmp_path)
