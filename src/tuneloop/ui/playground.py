"""The playground: one prompt sent to the base model and to one or more runs' adapters through
the engine of `tuneloop serve` (`serve.engine.Engine`: the same chat templates, the run's task
instruction as the system prompt, the same batching), the answers streamed side by side.

The engine is loaded on the first prompt (per base model) and kept; adapters join it as they
are asked for (`Engine.add_adapter`). Nothing is written.

    event: delta
    data: {"model": "20261202-025251-quickstart", "text": "refund"}
    event: done
    data: {"model": "__base__", "text": "...", "completion_tokens": 12, "finish_reason": "stop"}
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator

from tuneloop.errors import UserError
from tuneloop.ui.layout import esc, page
from tuneloop.ui.store import PageError, Workspace

MAX_TOKENS = 128


def adapter_runs(ws: Workspace) -> list[tuple[str, str]]:
    """(run id, base model) of every run with a finished adapter or model, newest first."""
    out = []
    for run_id in reversed(ws.run_ids()):
        run = ws.run(run_id)
        ready = (run.adapter_dir / "adapter_config.json").is_file() or (
            run.path / "model" / "tuneloop.json"
        ).is_file()
        if ready:
            try:
                info = ws.info(run)
            except PageError:
                continue
            out.append((run_id, (info.get("model") or {}).get("name") or "-"))
    return out


class Engines:
    """One serving engine per base model, loaded when first asked for."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.engines: dict = {}
        self.lock = threading.Lock()

    def for_runs(self, run_ids: list[str]):
        """The engine serving the base these runs were trained on, with their adapters."""
        from tuneloop.serve.adapters import base_model_of, read_spec
        from tuneloop.serve.engine import Engine

        specs = []
        for run_id in run_ids:
            run = self.ws.run(run_id)
            folder = run.adapter_dir if run.adapter_dir.is_dir() else run.path / "model"
            specs.append(read_spec(run_id, self.ws.inside(folder)))
        base = base_model_of(None, specs)
        with self.lock:
            engine = self.engines.get(base)
            if engine is None:
                engine = Engine.load(base, specs)
                engine.start()
                self.engines[base] = engine
            for spec in specs:
                if spec.name not in engine.specs:
                    engine.add_adapter(spec)
            return engine

    def close(self) -> None:
        with self.lock:
            for engine in self.engines.values():
                engine.stop()
            self.engines.clear()


def playground_page(ws: Workspace) -> str:
    runs = adapter_runs(ws)
    if not runs:
        body = "<p>No run has a finished adapter yet.</p>"
        return page("Playground", body, str(ws.root))
    boxes = "".join(
        f'<label><input type="checkbox" name="run" value="{esc(r)}"'
        f'{" checked" if i == 0 else ""}> {esc(r)} <span class="muted">({esc(base)})</span>'
        "</label><br>"
        for i, (r, base) in enumerate(runs)
    )
    body = (
        "<p>One prompt, answered by the base model and by each chosen run's adapter through "
        "the engine of <code>tuneloop serve</code> (greedy; a run's task instruction is its "
        "system prompt, as in training). The first prompt loads the base model.</p>"
        '<form id="playground" class="controls" style="display:block">'
        f"<div>{boxes}</div>"
        '<p><textarea name="prompt" rows="3" cols="90" required '
        'placeholder="a message to send"></textarea></p>'
        f'<label>max tokens <input name="max_tokens" type="number" value="48" min="1" '
        f'max="{MAX_TOKENS}"></label> <button type="submit" id="send">send</button> '
        '<span id="playground-status" class="muted"></span></form>'
        '<div id="answers" class="side"></div>'
    )
    return page("Playground", body, str(ws.root))


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def answer_events(
    engines: Engines, run_ids: list[str], prompt: str, max_tokens: int, request
) -> AsyncIterator[str]:
    """The base's and each adapter's answer to `prompt`, streamed as they are generated."""
    from tuneloop.serve.adapters import BASE
    from tuneloop.serve.exchange import submit
    from tuneloop.serve.protocol import RequestError

    if not prompt.strip() or not run_ids:
        yield _sse("failed", {"message": "write a prompt and choose at least one run"})
        return
    yield _sse("status", {"message": "loading the models (first prompt only)..."})
    try:
        engine = await asyncio.to_thread(engines.for_runs, run_ids)
        models = [BASE, *run_ids]
        jobs = []
        for i, model in enumerate(models):
            job = engine.chat_job(
                model,
                [{"role": "user", "content": prompt}],
                max_tokens=min(max_tokens, MAX_TOKENS),
                stream=True,
            )
            job.index = i
            jobs.append(job)
        events = submit(engine, jobs)
    except PageError as err:
        yield _sse("failed", {"message": err.message})
        return
    except (UserError, RequestError) as err:
        yield _sse("failed", {"message": str(err)})
        return
    yield _sse("status", {"message": "generating"})
    done = 0
    while done < len(jobs):
        try:
            kind, index, value = await asyncio.wait_for(events.get(), timeout=1.0)
        except TimeoutError:
            if await request.is_disconnected():
                for job in jobs:
                    job.cancelled = True
                return
            continue
        model = models[index]
        if kind == "delta":
            yield _sse("delta", {"model": model, "text": value})
        elif kind == "done":
            done += 1
            yield _sse(
                "done",
                {
                    "model": model,
                    "text": value.text,
                    "completion_tokens": value.completion_tokens,
                    "finish_reason": value.finish_reason,
                },
            )
        else:
            done += 1
            yield _sse("failed", {"model": model, "message": str(value)})
    yield _sse("end", {})
