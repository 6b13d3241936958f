"""Training progress from the files a training run writes as it goes: `metrics.jsonl` (one line
per logged optimizer step: step, loss, lr, tokens, tokens_per_s) and `run.json` (status,
total_steps). The runs page and a run's page follow it as server-sent events, so a loss curve
grows and the ETA counts down without a reload.

    event: progress
    data: {"run": "20260101-000000-demo", "status": "training", "step": 12, "total_steps": 40,
           "loss": 0.81, "lr": 0.0009, "tokens_per_s": 812.5, "eta_s": 31.0,
           "points": [[11, 0.84], [12, 0.81]]}
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator

from tuneloop.ui.store import PageError, Workspace

LIVE = ("created", "training")
POLL_S = 0.5
MAX_STREAM_S = 600  # a browser's EventSource reconnects by itself after this


def eta_seconds(info: dict, last: dict) -> float | None:
    """Seconds left: steps to go times tokens per step, at the measured tokens/s."""
    total, step = info.get("total_steps"), last.get("step")
    tokens, speed = last.get("tokens"), last.get("tokens_per_s")
    if not (total and step and tokens and speed):
        return None
    return max(0.0, (total - step) * (tokens / step) / speed)


def summary(run_id: str, info: dict, records: list[dict]) -> dict:
    last = records[-1] if records else {}
    return {
        "run": run_id,
        "status": info.get("status"),
        "step": last.get("step"),
        "total_steps": info.get("total_steps"),
        "loss": last.get("loss"),
        "lr": last.get("lr"),
        "tokens_per_s": last.get("tokens_per_s"),
        "eta_s": eta_seconds(info, last) if info.get("status") in LIVE else None,
    }


def process_gone(row: dict | None) -> bool:
    """A registry row of a live run whose training process (on this host) no longer exists."""
    from tuneloop.registry.store import _alive

    if not row or row.get("status") not in LIVE:
        return False
    return row.get("host") == socket.gethostname() and not _alive(row.get("pid"))


class Follower:
    """Reads what was appended to each run's metrics.jsonl since the last look."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.offsets: dict[str, int] = {}
        self.seen: dict[str, tuple] = {}

    def poll(self, only: str | None = None) -> list[dict]:
        """One event per run whose metrics or status changed; new (step, loss) points with it."""
        events = []
        for run_id in [only] if only else self.ws.run_ids():
            try:
                run = self.ws.run(run_id)
                info = self.ws.info(run)
            except PageError:
                continue
            fresh = self._new_records(run_id, run.metrics_path)
            state = (
                info.get("status"),
                os.path.getsize(run.metrics_path) if run.metrics_path.is_file() else 0,
            )
            if not fresh and self.seen.get(run_id) == state:
                continue
            first_look = run_id not in self.seen
            self.seen[run_id] = state
            if first_look and info.get("status") not in LIVE:
                continue  # a finished run: its page already shows everything
            event = summary(run_id, info, fresh)
            if not fresh:  # a status change alone: keep the last known numbers out
                event = {k: v for k, v in event.items() if v is not None}
            event["points"] = [[r["step"], r["loss"]] for r in fresh if "loss" in r]
            events.append(event)
        return events

    def _new_records(self, run_id: str, path) -> list[dict]:
        if not path.is_file():
            return []
        start = self.offsets.get(run_id, 0)
        with open(path, "rb") as f:
            f.seek(start)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next look
        self.offsets[run_id] = start + end
        out = []
        for line in chunk[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


async def progress_events(
    ws: Workspace, request, only: str | None = None, limit: int | None = None
) -> AsyncIterator[str]:
    """Server-sent events of training progress until the client goes away (or `limit`)."""
    follower = Follower(ws)
    follower.poll(only)  # the page was rendered with what is there now: send only what is new
    sent, waited = 0, 0.0
    yield "retry: 2000\n\n"
    while waited < MAX_STREAM_S and (limit is None or sent < limit):
        if await request.is_disconnected():
            return
        for event in await asyncio.to_thread(follower.poll, only):
            yield f"event: progress\ndata: {json.dumps(event)}\n\n"
            sent += 1
        await asyncio.sleep(POLL_S)
        waited += POLL_S
