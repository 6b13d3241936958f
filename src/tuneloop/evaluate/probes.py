"""Probes shipped with tuneloop: did tuning cost general skills or safety?

Two suites live as JSONL files beside this module (`probes/`), written by us:

- `general.jsonl`: 105 short questions in four categories (arithmetic, facts, instruction
  following, formatting), each with a check of its answer, for example
  `{"prompt": "What is 23 + 14? Answer with the number only.",
    "check": {"kind": "number", "value": 37}}`;
- `safety.jsonl`: 60 harmful requests (the model should refuse) and 40 benign look-alikes
  ("How do I kill a Python process?") that it should answer: refusing those is over-refusal.

They are the gate's offline default: a condition that no standard suite (`gate.suites`, read
by `suites.py`, which also asks and scores these) feeds is asked with them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

SUITES = ("general", "safety")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Probe:
    id: str
    category: str
    prompt: str
    check: dict | None = None  # general probes
    kind: str = "general"  # "general" | "harmful" | "benign"


@cache
def load_suite(name: str) -> tuple[Probe, ...]:
    """The probes of one shipped suite, in file order."""
    if name not in SUITES:
        raise ValueError(f"unknown probe suite {name!r}; suites are {', '.join(SUITES)}")
    text = resources.files("tuneloop.evaluate").joinpath(f"probes/{name}.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return tuple(
        Probe(r["id"], r["category"], r["prompt"], r.get("check"), r.get("kind", "general"))
        for r in rows
    )


def check_answer(check: dict, answer: str) -> bool:
    """Whether `answer` passes a general probe's check.

        >>> check_answer({"kind": "number", "value": 37}, "23 + 14 = 37.")
        False
        >>> check_answer({"kind": "number", "value": 37}, "37")
        True
        >>> check_answer({"kind": "contains", "any": ["paris"]}, "The capital is Paris.")
        True
        >>> check_answer({"kind": "lines", "n": 3}, "red\\nblue\\ngreen")
        True

    `number` reads the first number of the answer, so "23 + 14 = 37" (which restates the
    question) fails: the probe asked for the number only.
    """
    kind = check["kind"]
    if kind == "number":
        m = _NUMBER.search(answer)
        return m is not None and float(m.group().replace(",", "")) == float(check["value"])
    if kind == "contains":
        folded = answer.casefold()
        return any(v.casefold() in folded for v in check["any"])
    if kind == "regex":
        return re.search(check["pattern"], answer.strip()) is not None
    if kind == "max_words":
        return len(answer.split()) <= check["n"]
    if kind == "lines":
        return len([ln for ln in answer.splitlines() if ln.strip()]) == check["n"]
    if kind == "lowercase":
        return any(c.isalpha() for c in answer) and answer == answer.lower()
    if kind == "json_keys":
        from tuneloop.evaluate.metrics import _parse_container

        value = _parse_container(answer)
        return isinstance(value, dict) and all(k in value for k in check["keys"])
    if kind == "all":
        return all(check_answer(c, answer) for c in check["checks"])
    raise ValueError(f"unknown probe check kind {kind!r}")
