"""Loop features every objective shares: packing, gradient checkpointing, bf16 autocast,
evaluation every N steps and early stopping."""

import pytest
import torch

from tuneloop.data.records import Example
from tuneloop.data.templates import tokenize_example
from tuneloop.train.batching import collate, one_row, pack
from tuneloop.train.checkpoint import LoopState, list_checkpoints
from tuneloop.train.dpo import sequence_logps
from tuneloop.train.forward import check_packing_isolates
from tuneloop.train.loop import LoopConfig, MetricsLog, MicroBatches, run_loop
from tuneloop.train.schedule import make_scheduler
from tuneloop.train.sft import sft_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


LABELS = ["reset_password", "cancel_subscription", "shipping_status", "refund_request"]


def make_items(tok, n=8):
    items = []
    for i in range(n):
        chat = [
            {"role": "user", "content": f"message {i}: " + "please help " * (i % 4)},
            {"role": "assistant", "content": LABELS[i % len(LABELS)]},
        ]
        items.append(tokenize_example(tok, Example(chat, source=f"t:{i}")))
    return items


def loss_and_grads(model, batch):
    model.zero_grad()
    loss, _ = sft_loss(model, batch)
    (loss / batch["n"]).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item() / batch["n"], grads


def test_packing_lays_sequences_side_by_side_with_restarting_positions(tiny_tokenizer):
    items = make_items(tiny_tokenizer, 3)
    total = sum(len(i.input_ids) for i in items)
    batch = pack(items, pad_id=2, capacity=total)
    assert batch["input_ids"].shape[0] == 1  # all three fit in one row
    positions = batch["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0]
    assert len(starts) >= 3  # one restart per sequence (and padding)
    for s in starts[1:4]:
        assert batch["labels"][0, s] == -100  # no target across a boundary


def test_packed_loss_and_gradients_equal_unpacked(tiny_tokenizer, tiny_model):
    items = make_items(tiny_tokenizer, 8)
    padded = collate(items, 2)
    packed = collate(items, 2, packing=True, capacity=3 * max(len(i.input_ids) for i in items))
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert packed["n"] == padded["n"]
    tiny_model.train()
    loss_a, grads_a = loss_and_grads(tiny_model, padded)
    loss_b, grads_b = loss_and_grads(tiny_model, packed)
    assert loss_b == pytest.approx(loss_a, abs=1e-5)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-5), name


def test_packed_sequence_logprobs_equal_unpacked(tiny_tokenizer, tiny_model):
    items = make_items(tiny_tokenizer, 6)
    with torch.no_grad():
        a, na = sequence_logps(tiny_model, collate(items, 2))
        capacity = 3 * max(len(i.input_ids) for i in items)
        b, nb = sequence_logps(tiny_model, collate(items, 2, packing=True, capacity=capacity))
    assert torch.allclose(a, b, atol=1e-4) and torch.equal(na, nb)


def test_packing_probe_accepts_a_model_that_isolates(tiny_tokenizer, tiny_model):
    assert check_packing_isolates(tiny_model, len(tiny_tokenizer))


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_tokenizer, tiny_model):
    batch = collate(make_items(tiny_tokenizer, 4), 2)
    tiny_model.train()
    loss_a, grads_a = loss_and_grads(tiny_model, batch)
    tiny_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loss_b, grads_b = loss_and_grads(tiny_model, batch)
    assert loss_b == pytest.approx(loss_a, abs=1e-6)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-6), name


def _loop(tmp_path, model, items, steps, precision="fp32", evaluate=None, **cfg):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loop = LoopConfig(steps, 1, 1.0, precision, checkpoint_every=10**6, keep_checkpoints=1, **cfg)
    log = MetricsLog(tmp_path / "m.jsonl")
    state = run_loop(model, opt, make_scheduler(opt, steps, 0, "constant"),
                     MicroBatches(items, 4, 0, lambda xs: collate(xs, 2)), sft_loss, loop,
                     LoopState(), tmp_path / "ck", log, torch.device("cpu"), progress=False,
                     evaluate=evaluate)  # fmt: skip
    return state, log.read()


def test_bf16_autocast_trains_close_to_fp32(tmp_path, tiny_tokenizer, tiny_model):
    batch = collate(make_items(tiny_tokenizer, 4), 2)
    with torch.no_grad():
        fp32, _ = sft_loss(tiny_model, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _ = sft_loss(tiny_model, batch)
    assert bf16.item() == pytest.approx(fp32.item(), rel=2e-2)
    _, records = _loop(tmp_path, tiny_model, make_items(tiny_tokenizer), 10, precision="bf16")
    assert records[-1]["loss"] < records[0]["loss"]


def test_eval_every_n_steps_logs_heldout_loss(tmp_path, tiny_tokenizer, tiny_model):
    calls = []

    def evaluate():
        calls.append(1)
        return {"eval_loss": 1.0 / len(calls)}

    state, records = _loop(tmp_path, tiny_model, make_items(tiny_tokenizer), 6, evaluate=evaluate,
                           eval_every=2)  # fmt: skip
    assert [r["step"] for r in records if "eval_loss" in r] == [2, 4, 6]
    assert state.best_step == 6 and not state.stopped_early


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path, tiny_tokenizer, tiny_model):
    losses = iter([0.9, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    snapshots = {}
    step = [0]

    def evaluate():
        step[0] += 2
        snapshots[step[0]] = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
        return {"eval_loss": next(losses)}

    state, records = _loop(
        tmp_path,
        tiny_model,
        make_items(tiny_tokenizer),
        20,
        evaluate=evaluate,
        eval_every=2,
        patience=2,
        restore_best=True,
    )
    assert state.stopped_early and state.step == 8  # evals at 2, 4 (best), 6, 8: two bad
    assert state.best_step == 4 and state.best_eval == 0.5
    assert records[-1]["step"] == 8
    for name, p in tiny_model.named_parameters():
        assert torch.equal(p, snapshots[4][name]), name
    kept = [p.name for p in list_checkpoints(tmp_path / "ck")]
    assert "step-000004" in kept  # the best checkpoint survives pruning


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_frozen_weights_in_bf16_give_the_same_loss_and_gradients(tiny_tokenizer, tiny_model,
                                                                  method):  # fmt: skip
    from tuneloop.config import TrainConfig
    from tuneloop.models.adapters import apply_method, store_frozen_in_bf16

    model = apply_method(tiny_model, TrainConfig(method=method, lora={"dropout": 0.0}))
    model.train()
    batch = collate(make_items(tiny_tokenizer, 4), 2)

    def autocast_loss_and_grads():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return loss_and_grads(model, batch)

    loss_a, grads_a = autocast_loss_and_grads()
    converted = store_frozen_in_bf16(model, method)
    head = model.get_base_model().get_output_embeddings().weight
    assert converted > 0 and head.dtype == torch.float32  # tied embeddings stay float32
    loss_b, grads_b = autocast_loss_and_grads()
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert loss_b == pytest.approx(loss_a, abs=1e-6)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-6, rtol=1e-5), name


def test_dora_keeps_float32_frozen_weights(tiny_model):
    from tuneloop.config import TrainConfig
    from tuneloop.models.adapters import apply_method, store_frozen_in_bf16

    model = apply_method(tiny_model, TrainConfig(method="dora"))
    assert store_frozen_in_bf16(model, "dora") == 0
    assert all(p.dtype == torch.float32 for p in model.parameters())


def items_with_system_prompt(tok, n=6):
    system = "classify the support message into one label. " * 3
    items = []
    for i in range(n):
        chat = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"message {i}: " + "please help " * (i % 3)},
            {"role": "assistant", "content": LABELS[i % len(LABELS)]},
        ]
        items.append(tokenize_example(tok, Example(chat, source=f"t:{i}")))
    return items


@pytest.mark.parametrize("method", ["full", "lora"])
def test_shared_prefix_gives_the_same_loss_and_gradients(tiny_tokenizer, tiny_model, method,
                                                          monkeypatch):  # fmt: skip
    from tuneloop.config import TrainConfig
    from tuneloop.models.adapters import apply_method
    from tuneloop.train import forward

    calls = []
    shared_pass = forward.shared_prefix_hidden
    monkeypatch.setattr(forward, "shared_prefix_hidden",
                        lambda *a: calls.append(a[2]) or shared_pass(*a))  # fmt: skip

    model = apply_method(tiny_model, TrainConfig(method=method, lora={"dropout": 0.0}))
    model.train()
    items = items_with_system_prompt(tiny_tokenizer)
    plain = collate(items, 2)
    shared = collate(items, 2, share_prefix=True)
    prefix = shared["shared_prefix"]
    assert prefix >= 16  # the system prompt and more
    first_target = min(int((row != -100).nonzero()[0]) for row in shared["labels"])
    assert prefix <= first_target - 1  # no target's input inside the prefix
    loss_a, grads_a = loss_and_grads(model, plain)
    loss_b, grads_b = loss_and_grads(model, shared)
    assert calls == [prefix]  # the plain batch took the plain path, the shared one did not
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert loss_b == pytest.approx(loss_a, abs=1e-5)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-5, rtol=1e-4), name


def test_shared_prefix_is_not_used_where_it_cannot_hold(tiny_tokenizer):
    items = items_with_system_prompt(tiny_tokenizer)
    assert collate(items[:1], 2, share_prefix=True)["shared_prefix"] == 0  # one row
    assert collate(make_items(tiny_tokenizer), 2, share_prefix=True)["shared_prefix"] == 0  # short
    assert "shared_prefix" not in collate(items, 2, packing=True, capacity=512, share_prefix=True)


def test_prefix_sharing_probe_accepts_a_model_that_matches_and_refuses_one_that_does_not(
    tiny_tokenizer, tiny_model, monkeypatch
):
    from tuneloop.train import forward

    assert forward.check_prefix_sharing(tiny_model, len(tiny_tokenizer))
    monkeypatch.setattr(forward, "shared_prefix_hidden", lambda d, b, p: torch.zeros(2, 4, 64))
    assert not forward.check_prefix_sharing(tiny_model, len(tiny_tokenizer))

    def broken(*_):
        raise RuntimeError("this model's cache cannot be expanded")

    monkeypatch.setattr(forward, "shared_prefix_hidden", broken)
    assert not forward.check_prefix_sharing(tiny_model, len(tiny_tokenizer))


def test_segment_attention_gives_the_padded_loss_and_gradients(
    tiny_tokenizer, tiny_model, monkeypatch
):
    from tuneloop.train.segments import use_segment_attention

    items = make_items(tiny_tokenizer, 8)
    padded = collate(items, 2)
    packed = collate(items, 2, packing=True, capacity=3 * max(len(i.input_ids) for i in items))
    assert all(end - start > 0 for row in packed["segments"] for start, end in row)
    tiny_model.train()
    loss_a, grads_a = loss_and_grads(tiny_model, padded)
    assert use_segment_attention(tiny_model)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))  # fmt: skip
    loss_b, grads_b = loss_and_grads(tiny_model, packed)
    # one causal SDPA per span and layer: the spans reached the attention
    spans = sum(len(row) for row in packed["segments"])
    assert len(calls) == spans * tiny_model.config.num_hidden_layers
    loss_c, _ = loss_and_grads(tiny_model, padded)  # padded rows: SDPA as before
    assert loss_b == pytest.approx(loss_a, abs=1e-5) and loss_c == pytest.approx(loss_a, abs=1e-6)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-5), name
    # the same batch in one row without its padding (what the session trains on)
    row = one_row(packed)
    assert row["input_ids"].shape == (1, sum(len(i.input_ids) for i in items))
    assert (row["seq_index"] >= 0).all() and row["n"] == padded["n"]
    assert packed["input_ids"].shape[0] > 1 and (packed["seq_index"] < 0).any()  # rows, padding
    loss_d, grads_d = loss_and_grads(tiny_model, row)
    assert loss_d == pytest.approx(loss_a, abs=1e-5)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_d[name], atol=1e-5), name


def test_segment_spans_follow_the_restarting_positions():
    from tuneloop.train.segments import spans

    assert spans(torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])) == [
        [(0, 3), (3, 5), (5, 6)],
        [(0, 4), (4, 6)],
    ]


def test_the_chunked_head_gives_the_log_softmax_and_its_gradient(monkeypatch):
    """head_logprobs over several chunks equals log_softmax(h W^T)[target] in float32, value
    and gradient; under bf16 autocast it equals head(h) in bf16 to bf16's rounding."""
    import tuneloop.train.forward as forward

    torch.manual_seed(0)
    monkeypatch.setattr(forward, "HEAD_CHUNK_VALUES", 3 * 50)  # 3 rows a chunk, 7 rows: 3 chunks
    weight = torch.randn(50, 16)
    targets = torch.randint(0, 50, (7,))
    hidden = torch.randn(7, 16, requires_grad=True)
    upstream = torch.randn(7)  # a different weight per token, as DPO's and GRPO's losses give
    want = torch.log_softmax(hidden @ weight.t(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    (want * upstream).sum().backward()
    want_grad, hidden.grad = hidden.grad.clone(), None
    got = forward.head_logprobs(hidden, weight, targets)
    (got * upstream).sum().backward()
    assert got.dtype == torch.float32
    assert torch.allclose(got, want.detach(), atol=1e-5)
    assert torch.allclose(hidden.grad, want_grad, atol=1e-5)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        head = torch.nn.functional.linear(hidden, weight)  # bf16, as head(h) under autocast
        plain = torch.log_softmax(head.float(), -1).gather(1, targets[:, None]).squeeze(1)
        fused = forward.head_logprobs(hidden, weight, targets)
    assert torch.allclose(fused, plain.detach(), atol=1e-6)  # the same bf16 product


def test_sft_takes_the_chunked_head_where_it_is_frozen_and_loses_nothing(
    tiny_tokenizer, tiny_model, monkeypatch
):
    import tuneloop.train.forward as forward

    batch = collate(make_items(tiny_tokenizer, 6), 2)
    tiny_model.train()
    assert forward.chunked_head(tiny_model) is None  # full fine-tuning trains the head: logits
    tiny_model.get_output_embeddings().weight.requires_grad_(False)
    assert forward.chunked_head(tiny_model) is tiny_model.get_output_embeddings()
    calls = []
    chunked = forward.head_logprobs
    monkeypatch.setattr(forward, "head_logprobs", lambda *a: calls.append(1) or chunked(*a))
    loss_a, grads_a = loss_and_grads(tiny_model, batch)
    assert calls  # the chunked head ran
    monkeypatch.setattr(forward, "chunked_head", lambda model: None)
    loss_b, grads_b = loss_and_grads(tiny_model, batch)
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-6), name


def test_layout_tokens_counts_padding_and_the_shared_prefix_once():
    from tuneloop.train.batching import layout_tokens

    lengths = [10, 4, 6, 6]
    # batch [0, 1]: 2 x 10 - 1 x 3 shared; batch [2, 3]: 2 x 6 - 3
    assert layout_tokens(lengths, [[0, 1], [2, 3]], 3) == {"padded": 17 + 9, "packed": 26}
    assert layout_tokens(lengths, [[0, 1], [2, 3]], 0) == {"padded": 32, "packed": 26}
