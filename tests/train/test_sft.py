"""The SFT loss, the shared loop and LoRA training on a tiny in-memory model."""

import hashlib

import pytest
import torch

from conftest import support_items
from tuneloop.config import LoraConfig
from tuneloop.models.adapters import attach_lora, load_adapter
from tuneloop.train.checkpoint import LoopState
from tuneloop.train.loop import LoopConfig, MetricsLog, MicroBatches, run_loop
from tuneloop.train.schedule import make_scheduler
from tuneloop.train.sft import collate, sft_loss

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_supervised_head_equals_full_logits_loss(tiny_tokenizer, tiny_model):
    batch = collate(support_items(tiny_tokenizer, 4), tiny_tokenizer.pad_token_id)
    ours, _ = sft_loss(tiny_model, batch)
    ours = ours / batch["n"]
    ours.backward()
    ours_grad = tiny_model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    tiny_model.zero_grad()
    # The reference: full logits at every position, the library's own shifted mean loss.
    out = tiny_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    )
    out.loss.backward()
    ref_grad = tiny_model.model.layers[0].self_attn.q_proj.weight.grad
    assert torch.allclose(ours, out.loss, atol=1e-6)
    assert torch.allclose(ours_grad, ref_grad, atol=1e-6)


def _train(model, items, batch_size, grad_accum, steps, seed=0, lr=5e-2, sgd=False):
    trainable = [p for p in model.parameters() if p.requires_grad]
    # SGD where updates are compared: Adam's first step is lr * sign(grad), which turns
    # rounding noise in a near-zero gradient into a full-size difference.
    opt = (torch.optim.SGD if sgd else torch.optim.AdamW)(trainable, lr=lr)
    sched = make_scheduler(opt, steps, 0, "constant")
    batches = MicroBatches(items, batch_size, seed, lambda xs: collate(xs, 2))
    cfg = LoopConfig(steps, grad_accum, 1.0, "fp32", checkpoint_every=10**6, keep_checkpoints=1)
    return opt, batches, cfg, sched


def _run(tmp_path, model, items, batch_size, grad_accum, steps, sgd=False):
    opt, batches, cfg, sched = _train(model, items, batch_size, grad_accum, steps, sgd=sgd)
    log = MetricsLog(tmp_path / "m.jsonl")
    run_loop(model, opt, sched, batches, sft_loss, cfg, LoopState(), tmp_path / "ck", log,
             torch.device("cpu"), progress=False)  # fmt: skip
    return [r["loss"] for r in log.read()]


def test_accumulation_equals_one_big_batch(tmp_path, tiny_tokenizer):
    from conftest import build_tiny_model

    items = support_items(tiny_tokenizer, 8)
    big = build_tiny_model(len(tiny_tokenizer))
    small = build_tiny_model(len(tiny_tokenizer))
    # One step over 8 examples at once vs 4 micro-batches of 2 accumulated: same data (the
    # stream is the same permutation), same token-normalised loss, same update.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    loss_big = _run(tmp_path / "a", big, items, 8, 1, 1, sgd=True)
    loss_small = _run(tmp_path / "b", small, items, 2, 4, 1, sgd=True)
    # equal to float32 summation order (about 1e-7 of the loss)
    assert loss_big[0] == pytest.approx(loss_small[0], rel=1e-6)
    for (name, p), q in zip(big.named_parameters(), small.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def _digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().numpy().tobytes())
    return h.hexdigest()


def test_lora_trains_adapter_only_and_reloads(tmp_path, tiny_tokenizer, tiny_model):
    torch.manual_seed(0)
    model = attach_lora(tiny_model, LoraConfig(r=8, alpha=16, dropout=0.0, target_modules=ALL))
    frozen = [p for n, p in model.named_parameters() if not p.requires_grad]
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before_frozen = _digest(frozen)

    losses = _run(tmp_path, model, support_items(tiny_tokenizer, 8), 4, 1, 40)
    # the last losses of a 4-example batch jump from step to step (rounding-order changes move
    # them by a point): their mean, not the last one, is what training lowered
    assert sum(losses[-10:]) / 10 < losses[0] * 0.6, losses
    assert _digest(frozen) == before_frozen, "base weights must not change"
    changed = [n for n, p in model.named_parameters() if p.requires_grad
               and not torch.equal(p, trainable[n])]  # fmt: skip
    assert len(changed) == len(trainable)

    model.save_pretrained(tmp_path / "adapter")
    batch = collate(support_items(tiny_tokenizer, 2), 2)
    model.eval()
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    from conftest import build_tiny_model

    fresh = load_adapter(build_tiny_model(len(tiny_tokenizer)), tmp_path / "adapter")
    fresh.eval()
    with torch.no_grad():
        got = fresh(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(want, got, atol=1e-6)


def test_micro_batch_stream_is_a_pure_function_of_seed_and_index(tiny_tokenizer):
    items = support_items(tiny_tokenizer, 8)
    a = MicroBatches(items, 3, 7, lambda xs: [x.source for x in xs])
    b = MicroBatches(items, 3, 7, lambda xs: [x.source for x in xs])
    forward = [a.batch(i) for i in range(9)]
    backward = [b.batch(i) for i in reversed(range(9))][::-1]
    assert forward == backward
    epoch0 = sorted(s for i in range(3) for s in forward[i])
    assert epoch0 == sorted(x.source for x in items)  # every example once per epoch
    assert forward[:3] != forward[3:6]  # reshuffled each epoch
