"""LLM-as-judge: another model scores each answer against a rubric, over any OpenAI-compatible
endpoint (`POST {url}/chat/completions`), with plain HTTP from the standard library.

The judge sees the question, the reference and the answer, and must reply with an integer from
1 to 5; the per-item score is that integer rescaled to 0-1, so it can be paired and compared like
any other metric. A reply without such an integer is an error, not a silent zero.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence

from tuneloop.config import JudgeConfig
from tuneloop.errors import UserError

SYSTEM = (
    "You are a strict grader. Read the rubric, the question, the reference answer and the "
    "candidate answer. Reply with one line: `score: N` where N is an integer from 1 to 5."
)
_SCORE = re.compile(r"score\s*[:=]?\s*([1-5])\b|^\s*([1-5])\s*$", re.IGNORECASE | re.MULTILINE)


def judge_prompt(rubric: str, question: str, reference: str, answer: str) -> str:
    return (
        f"Rubric: {rubric}\n\nQuestion:\n{question}\n\nReference answer:\n{reference}\n\n"
        f"Candidate answer:\n{answer}\n\nReply with `score: N` (1-5)."
    )


def parse_score(reply: str) -> int | None:
    """The 1-5 score in a judge's reply, or None.

    >>> parse_score("The answer is close. score: 4"), parse_score("5"), parse_score("great")
    (4, 5, None)
    """
    m = _SCORE.search(reply)
    return int(m.group(1) or m.group(2)) if m else None


def _post(cfg: JudgeConfig, payload: dict) -> dict:
    headers = {"Content-Type": "application/json"}
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise UserError(
                f"the judge's API key variable ${cfg.api_key_env} is not set",
                "eval.judge.api_key_env",
                f"export {cfg.api_key_env}=..., or remove api_key_env for an open endpoint",
            )
        headers["Authorization"] = f"Bearer {key}"
    url = cfg.url.rstrip("/") + "/chat/completions"
    request = urllib.request.Request(url, json.dumps(payload).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
        raise UserError(
            f"the judge endpoint {url} failed: {exc}",
            "eval.judge.url",
            "check that an OpenAI-compatible server is running there and serves eval.judge.model",
        ) from None


def judge_scores(
    cfg: JudgeConfig, questions: Sequence[str], refs: Sequence[str], answers: Sequence[str]
) -> list[float]:
    """One 0-1 score per answer: (judge's 1-5 score - 1) / 4, with greedy decoding."""
    scores = []
    for i, (q, r, a) in enumerate(zip(questions, refs, answers, strict=True)):
        payload = {
            "model": cfg.model,
            "temperature": 0,
            "max_tokens": 16,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": judge_prompt(cfg.rubric, q, r, a)},
            ],
        }
        reply = _post(cfg, payload)
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise UserError(
                f"the judge's reply for item {i} is not a chat completion: {str(reply)[:120]}",
                "eval.judge.url",
                "point eval.judge.url at an OpenAI-compatible /v1 base URL",
            ) from None
        score = parse_score(text or "")
        if score is None:
            raise UserError(
                f"the judge gave no 1-5 score for item {i}: {text!r}",
                "eval.judge.rubric",
                "make the rubric ask for `score: N`, or use a stronger judge model",
            )
        scores.append((score - 1) / 4)
    return scores
