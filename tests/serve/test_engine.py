"""The engine without HTTP: equal to `tuneloop eval`, a bounded adapter cache, DoRA batches of
their own, and adapters refused with reasons."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tiny_adapters import make_adapter, make_adapters, make_every_kind

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
    options = {"precision": "fp32", **options}
    engine = Engine.load(str(model_dir), specs, ServeOptions(**options))
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


def test_requests_join_and_leave_a_running_batch_without_cross_talk(
    tmp_path, tiny_tokenizer, tiny_model_dir
):
    """Continuous batching: 40 requests over every kind of adapter and the base, with answer
    lengths from 2 to 14 tokens, through a batch of at most 5 rows, so rows leave as they end
    and waiting requests join between steps. Every answer equals the one the same request
    gets alone."""
    dirs = {**make_adapters(tmp_path, tiny_tokenizer, tiny_model_dir),
            **make_every_kind(tmp_path, tiny_tokenizer, tiny_model_dir)}  # fmt: skip
    models = ["__base__", *dirs]
    cases = [(models[i % len(models)], PROMPTS[i % len(PROMPTS)], 2 + (i * 5) % 13)
             for i in range(40)]  # fmt: skip
    engine = engine_for(tiny_model_dir, dirs, cache_size=3, max_batch=5)
    try:

        def ask(model, prompt, n):
            job = engine.chat_job(model, [{"role": "user", "content": prompt}], max_tokens=n)
            return engine.complete(job, timeout=120).text

        alone_answers = [ask(*case) for case in cases]
        assert (
            len({a for a, (m, _, _) in zip(alone_answers, cases, strict=True) if m != "__base__"})
            > 5
        )  # fmt: skip  (the adapters answer differently)
        joined = engine.metrics.batch_size.collect()[0]
        before = sum(s.value for s in joined.samples if s.name.endswith("_count"))
        import threading

        got: list[str | None] = [None] * len(cases)

        def go(i):
            got[i] = ask(*cases[i])

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(cases))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert got == alone_answers
        after = sum(s.value for s in engine.metrics.batch_size.collect()[0].samples
                    if s.name.endswith("_count"))  # fmt: skip
        assert after - before > 8  # requests joined running batches many times
        assert engine.pending() == 0
    finally:
        engine.stop()


@pytest.mark.parametrize(
    ("method", "lr"),
    [("lora", 0.01), ("prompt", 0.3), ("prefix", 0.3), ("ia3", 0.05), ("qlora", 0.01),
     ("full", 0.001)],
)  # fmt: skip
def test_greedy_answers_equal_tuneloop_eval(tmp_path, tiny_model_dir, method, lr):
    """Every training method, served: the answer eval scored, item by item. Prompt-learning
    adapters run in our decode loop with their virtual tokens; QLoRA on a 4-bit base of its
    own, IA3 on a copy of the base, a full run on its own weights."""
    from tuneloop.evaluate.run import evaluate_run

    run = train_tiny_run(tmp_path, tiny_model_dir, method=method, lr=lr)
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
    from peft import LoHaConfig, get_peft_model

    from conftest import build_tiny_model

    loha = get_peft_model(
        build_tiny_model(len(tiny_tokenizer)),
        LoHaConfig(target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    loha.save_pretrained(tmp_path / "loha")
    with pytest.raises(UserError, match="LOHA adapter, which tuneloop serve does not") as err:
        parse_adapter_arg(f"x={tmp_path / 'loha'}")
    assert "IA3" in err.value.problems[0].fix

    other = make_adapter(
        tmp_path / "other", tiny_tokenizer, Path("/elsewhere/model"), ["q_proj"], 2, seed=1
    )
    with pytest.raises(UserError, match="trained on `/elsewhere/model`"):
        Engine.load(str(tiny_model_dir), [parse_adapter_arg(f"o={other}")])
    with pytest.raises(UserError, match="not allowed"):
        parse_adapter_arg(f"__base__={other}")
    with pytest.raises(UserError, match="no run"):
        parse_adapter_arg(str(tmp_path / "missing"), workspace=tmp_path)


def test_bf16_weights_give_the_answers_of_bf16_autocast(tiny_model_dir, adapters):
    """Under bf16 the base's linear weights are stored in bf16 once (the operand autocast
    would make of them at every step): the answers are those of float32 weights under
    autocast, as eval computes them."""
    cases = [(m, p) for p in PROMPTS for m in ("alpha", "__base__")]
    answers = []
    for stored in (False, True):
        engine = engine_for(tiny_model_dir, {"alpha": adapters["alpha"]}, precision="bf16",
                            bf16_weights=stored)  # fmt: skip
        try:
            answers.append(run_together(engine, cases))
        finally:
            engine.stop()
    assert answers[0] == answers[1]
