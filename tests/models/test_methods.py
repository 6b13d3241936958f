"""Every training method on a tiny model: the loss falls, frozen weights stay bit-identical,
every trainable weight moves, and what is saved reloads to the same logits."""

import hashlib

import pytest
import torch

from conftest import support_items
from tuneloop.config import TrainConfig
from tuneloop.models.adapters import apply_method, load_base, load_trained, save_trained
from tuneloop.models.load import ModelSource
from tuneloop.train.batching import collate
from tuneloop.train.checkpoint import LoopState
from tuneloop.train.loop import LoopConfig, MetricsLog, MicroBatches, run_loop
from tuneloop.train.schedule import make_scheduler
from tuneloop.train.sft import sft_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

METHODS = {
    # method: (recipe section, learning rate)
    "full": ({}, 1e-2),
    "lora": ({"lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ALL}}, 5e-2),
    "qlora": ({"lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ALL}}, 5e-2),
    "dora": ({"lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ALL}}, 5e-2),
    "ia3": ({}, 1e-1),
    "prefix": ({"prefix": {"num_virtual_tokens": 4}}, 0.5),
    "prompt": ({"prompt": {"num_virtual_tokens": 4}}, 1e-1),
}


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def logits_of(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_its_weights_only_and_reloads(
    method, tmp_path, tiny_tokenizer, tiny_model_dir
):

    section, lr = METHODS[method]
    cfg = TrainConfig(method=method, **section)
    source = ModelSource("tiny", tiny_model_dir, "folder")
    torch.manual_seed(0)
    model = apply_method(load_base(source, cfg, "fp32"), cfg, tiny_model_dir)

    named = list(model.named_parameters())
    trainable = {n: p.detach().clone() for n, p in named if p.requires_grad}
    frozen = [p for _, p in named if not p.requires_grad]
    assert trainable
    if method == "full":
        assert not frozen
    else:
        assert frozen and sum(t.numel() for t in trainable.values()) < sum(
            p.numel() for p in frozen
        )
    if method == "qlora":  # the frozen base really is 4-bit
        assert any(p.dtype == torch.uint8 for p in frozen)
    frozen_before = digest(frozen)

    data = support_items(tiny_tokenizer)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = 40
    loop = LoopConfig(steps, 1, 1.0, "fp32", checkpoint_every=10**6, keep_checkpoints=1)
    batches = MicroBatches(data, 4, 0, lambda xs: collate(xs, tiny_tokenizer.pad_token_id))
    log = MetricsLog(tmp_path / "metrics.jsonl")
    run_loop(model, opt, make_scheduler(opt, steps, 0, "constant"), batches, sft_loss, loop,
             LoopState(), tmp_path / "ckpt", log, torch.device("cpu"), progress=False)  # fmt: skip
    losses = [r["loss"] for r in log.read()]
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses

    assert digest(frozen) == frozen_before, "frozen weights changed"
    moved = [n for n, p in model.named_parameters() if p.requires_grad
             and not torch.equal(p.detach(), trainable[n])]  # fmt: skip
    assert sorted(moved) == sorted(trainable), set(trainable) - set(moved)

    probe = collate(support_items(tiny_tokenizer, 3), tiny_tokenizer.pad_token_id)
    want = logits_of(model, probe)
    save_trained(model, tiny_tokenizer, tmp_path / "out")
    base = None if method == "full" else load_base(source, cfg, "fp32")
    again = load_trained(base, tmp_path / "out")
    assert torch.allclose(logits_of(again, probe), want, atol=1e-5)
