"""Distillation: the KL loss by hand, a student learning a teacher, and teachers writing data."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
import torch.nn.functional as F

from tuneloop.config import DistillConfig
from tuneloop.data.formats import read_examples
from tuneloop.errors import UserError
from tuneloop.train.distill import DistillLoss, distill_loss
from tuneloop.train.teacher import (
    EndpointTeacher,
    LocalTeacher,
    generate_dataset,
    provenance_path,
    read_prompts,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


def test_kl_with_temperature_by_hand():
    student = torch.tensor([[1.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0]])
    t = 2.0
    p = F.softmax(teacher / t, dim=-1)
    q = F.softmax(student / t, dim=-1)
    kl = float((p * (p.log() - q.log())).sum())
    ce = float(F.cross_entropy(student, torch.tensor([1])))
    loss, got_kl, got_ce = distill_loss(student, teacher, torch.tensor([1]), t, alpha=0.3)
    assert float(got_kl) == pytest.approx(kl, abs=1e-6)
    assert float(got_ce) == pytest.approx(ce, abs=1e-6)
    assert float(loss) == pytest.approx(0.3 * t**2 * kl + 0.7 * ce, abs=1e-6)


def test_alpha_zero_is_plain_sft():
    student, teacher = torch.randn(5, 7), torch.randn(5, 7)
    targets = torch.randint(0, 7, (5,))
    loss, _, _ = distill_loss(student, teacher, targets, 3.0, alpha=0.0)
    assert float(loss) == pytest.approx(float(F.cross_entropy(student, targets, reduction="sum")))


def test_student_moves_towards_the_teacher(tiny_tokenizer):
    from conftest import build_tiny_model
    from tuneloop.data.records import Example
    from tuneloop.data.templates import tokenize_example
    from tuneloop.train.batching import collate

    teacher, student = (
        build_tiny_model(len(tiny_tokenizer), seed=1),
        build_tiny_model(len(tiny_tokenizer), seed=2),
    )
    chats = [[{"role": "user", "content": f"message {i}"},
              {"role": "assistant", "content": "reset_password"}] for i in range(4)]  # fmt: skip
    batch = collate([tokenize_example(tiny_tokenizer, Example(c)) for c in chats], 2)
    loss_fn = DistillLoss(teacher.eval().requires_grad_(False), DistillConfig(alpha=1.0))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    kls = []
    for _ in range(15):
        loss, extras = loss_fn(student, batch)
        (loss / batch["n"]).backward()
        opt.step()
        opt.zero_grad()
        kls.append(extras["kl"])
    assert kls[-1] < 0.5 * kls[0], kls


def test_different_tokenizers_are_refused_before_weights(tmp_path, tiny_model_dir, monkeypatch):
    from transformers import AutoTokenizer

    from tuneloop.config import validate_recipe
    from tuneloop.train import distill

    other = tmp_path / "teacher"
    other.mkdir()
    (other / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_tokens(["<extra_token>"])
    tok.save_pretrained(other)
    recipe = validate_recipe({"model": {"name": str(tiny_model_dir)}, "data": {"train": "x"},
                              "train": {"objective": "distill",
                                        "distill": {"teacher": str(other)}}})  # fmt: skip
    with pytest.raises(UserError, match="different tokenizers"):
        distill.check_teacher(recipe, AutoTokenizer.from_pretrained(tiny_model_dir))


def write_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "I forgot my password", "label": "reset_password"},
            {"messages": [{"role": "user", "content": "Where is my order?"}]}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_files_read_with_file_and_line(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n")
    prompts = read_prompts(tmp_path / "p.txt", instruction="Be brief.")
    assert [p.source.rsplit(":", 1)[1] for p in prompts] == ["1", "3"]
    assert prompts[0].messages[0] == {"role": "system", "content": "Be brief."}
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"text": 1}\n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        read_prompts(tmp_path / "bad.jsonl")


def test_local_teacher_writes_a_dataset_with_provenance(tmp_path, tiny_model_dir):
    out = tmp_path / "distilled.jsonl"
    teacher = LocalTeacher(str(tiny_model_dir))
    generate_dataset(teacher, write_prompts(tmp_path), out, max_new_tokens=6)
    examples = read_examples(out)  # a plain SFT dataset the readers (and lint) accept
    assert len(examples) == 2 and examples[0].meta["label"] == "reset_password"
    provenance = json.loads(provenance_path(out).read_text())
    assert provenance["teacher"]["kind"] == "local" and provenance["prompts"]["count"] == 2
    assert provenance["parameters"]["max_new_tokens"] == 6 and provenance["finished"]


class FakeOpenAI(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 (the http.server spelling)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.seen.append((self.path, body, self.headers.get("Authorization")))
        answer = f"answer to: {body['messages'][-1]['content']}"
        reply = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_endpoint_teacher_over_plain_http(tmp_path, monkeypatch):
    monkeypatch.setenv("TEACHER_TEST_KEY", "k")
    server = HTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        out = tmp_path / "distilled.jsonl"
        teacher = EndpointTeacher(url, model="big-teacher", api_key_env="TEACHER_TEST_KEY")
        provenance = generate_dataset(teacher, write_prompts(tmp_path), out, 32, 0.7, "Be kind.")
    finally:
        server.shutdown()
        server.server_close()
    path, body, auth = FakeOpenAI.seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "big-teacher"
    assert body["temperature"] == 0.7 and body["max_tokens"] == 32 and auth == "Bearer k"
    assert body["messages"][0] == {"role": "system", "content": "Be kind."}
    examples = read_examples(out)
    assert examples[1].reference == "answer to: Where is my order?"
    assert provenance["teacher"] == {"kind": "endpoint", "url": f"{url}/chat/completions",
                                     "model": "big-teacher"}  # fmt: skip


def test_endpoint_that_is_down_is_a_user_error(tmp_path):
    teacher = EndpointTeacher("http://127.0.0.1:9/v1", retries=0, timeout=2)
    with pytest.raises(UserError, match="did not answer"):
        generate_dataset(teacher, write_prompts(tmp_path), tmp_path / "out.jsonl")
