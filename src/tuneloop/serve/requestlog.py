"""A sampled log of requests and answers, one JSON object a line, for `tuneloop monitor` and for
the next dataset. Each answered request is kept with probability `rate` (seeded, so a test or a
replay samples the same requests):

    {"time": "2025-01-31T12:00:00+0000", "id": "chatcmpl-...", "endpoint": "chat",
     "model": "support", "messages": [{"role": "user", "content": "I lost my card"}],
     "answer": "lost_card", "finish_reason": "stop", "prompt_tokens": 31,
     "completion_tokens": 4, "seconds": 0.21}

Lines are appended and flushed one at a time; a reader skips a last line cut short by a crash
(`read_log`).
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path


class RequestLog:
    def __init__(self, path: str | Path, rate: float = 0.1, seed: int = 0):
        if not 0 <= rate <= 1:
            raise ValueError(f"sample rate must be within [0, 1], got {rate}")
        self.path, self.rate = Path(path), rate
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.written = 0

    def maybe_write(self, record: dict) -> bool:
        """Append `record` with probability `rate`; True when it was written."""
        with self._lock:
            if self.rate == 0 or self._rng.random() >= self.rate:
                return False
            line = json.dumps(
                {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}, ensure_ascii=False
            )
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
            self.written += 1
            return True


def read_log(path: str | Path) -> list[dict]:
    """The records of a request log; a torn last line (a crash mid-write) is skipped."""
    records = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                break
            from tuneloop.errors import DataError

            raise DataError(
                str(path),
                n,
                "not a JSON line of a request log",
                "remove the line, or pass the log tuneloop serve wrote",
            ) from None
    return records
