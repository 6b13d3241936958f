"""DPO: the loss against TRL's on the same batch, hand-computed values, the reference, training."""

import math
import tempfile

import pytest
import torch

from conftest import away_from_trl_reference
from tuneloop.config import DpoConfig
from tuneloop.data.preference import PreferencePair
from tuneloop.data.templates import IGNORE_INDEX, TokenizedExample
from tuneloop.train.batching import collate
from tuneloop.train.dpo import DpoLoss, dpo_loss, preference_margins, sequence_logps

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


def test_sigmoid_by_hand():
    # h = (-1 - -2) - (-3 - -2) = 2; -log sigmoid(0.5 * 2) = log(1 + e^-1)
    out = dpo_loss(*map(torch.tensor, ([-1.0], [-3.0], [-2.0], [-2.0])), beta=0.5)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-7)
    assert out.chosen_rewards.item() == pytest.approx(0.5)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)


def test_label_smoothing_is_conservative_dpo():
    e, beta, h = 0.1, 0.5, 2.0
    out = dpo_loss(*map(torch.tensor, ([-1.0], [-3.0], [-2.0], [-2.0])), beta=beta,
                   label_smoothing=e)  # fmt: skip
    sig = 1 / (1 + math.exp(-beta * h))
    want = -(1 - e) * math.log(sig) - e * math.log(1 - sig)
    assert out.losses.item() == pytest.approx(want, abs=1e-6)


def test_ipo_uses_per_token_averages():
    chosen_len, rejected_len = torch.tensor([4.0]), torch.tensor([2.0])
    out = dpo_loss(
        *map(torch.tensor, ([-1.0], [-3.0], [-2.0], [-2.0])),
        beta=0.5,
        loss_type="ipo",
        chosen_lengths=chosen_len,
        rejected_lengths=rejected_len,
    )
    h = 1.0 / 4 - (-1.0) / 2
    assert out.losses.item() == pytest.approx((h - 1 / (2 * 0.5)) ** 2, abs=1e-7)


def _trl_trainer(model, tokenizer, loss_type, label_smoothing):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=tempfile.mkdtemp(), beta=0.3, loss_type=[loss_type],
        label_smoothing=label_smoothing, report_to=[], use_cpu=True,
        per_device_train_batch_size=2,
    )  # fmt: skip
    data = Dataset.from_list([{"prompt": "hi", "chosen": "hello", "rejected": "go away"}] * 2)
    return DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)


@pytest.mark.parametrize(("loss_type", "smoothing"), [("sigmoid", 0.0), ("ipo", 0.0),
                                                      ("robust", 0.2)])  # fmt: skip
def test_matches_trl_on_the_same_batch(loss_type, smoothing, tiny_tokenizer, tiny_model):
    pytest.importorskip("trl")
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        tiny_model,
        LoraConfig(
            r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"
        ),
    )
    trainer = _trl_trainer(model, tiny_tokenizer, loss_type, smoothing)
    away_from_trl_reference(trainer)

    # P = 3 pairs, rows [chosen x3, rejected x3] for TRL; different prompt/answer lengths.
    g = torch.Generator().manual_seed(1)
    lengths = [(4, 3), (6, 5), (3, 2), (4, 6), (6, 1), (3, 4)]  # (prompt, completion) per row
    width = max(p + c for p, c in lengths)
    ids = torch.randint(3, len(tiny_tokenizer), (6, width), generator=g)
    attention, completion = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, (p, c) in enumerate(lengths):
        attention[row, : p + c] = 1
        completion[row, p : p + c] = 1
    inputs = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}
    with torch.no_grad():
        want = trainer._compute_loss(trainer.model, inputs, return_outputs=False)

    seqs = []
    for row in (0, 3, 1, 4, 2, 5):  # ours: chosen_0, rejected_0, chosen_1, ...
        n = int(attention[row].sum())
        labels = torch.where(completion[row, :n] == 1, ids[row, :n], IGNORE_INDEX)
        seqs.append(TokenizedExample(ids[row, :n].tolist(), labels.tolist()))
    batch = collate(seqs, pad_id=2)
    batch["n"] = 3
    loss = DpoLoss(DpoConfig(beta=0.3, loss=loss_type, label_smoothing=smoothing))
    with torch.no_grad():
        ours, extras = loss(trainer.model, batch)
    assert (ours / batch["n"]).item() == pytest.approx(want.item(), abs=1e-5)
    assert 0 <= extras["reward_accuracy"] <= 1


def test_reference_is_the_base_with_adapters_off(tiny_tokenizer, tiny_model):
    from peft import LoraConfig, get_peft_model

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, len(tiny_tokenizer), (1, 8), generator=g)[0].tolist()
    seq = TokenizedExample(ids, [IGNORE_INDEX] * 4 + ids[4:])
    batch = collate([seq, seq], pad_id=2)
    with torch.no_grad():
        base, _ = sequence_logps(tiny_model, batch)
    model = get_peft_model(tiny_model, LoraConfig(r=4, target_modules=["q_proj"],
                                                   task_type="CAUSAL_LM"))  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
        policy, _ = sequence_logps(model, batch)
        reference, _ = DpoLoss(DpoConfig()).reference_logps(model, batch)
    assert torch.allclose(reference, base, atol=1e-6)
    assert not torch.allclose(policy, base, atol=1e-3)


def test_dpo_training_raises_the_margin_on_heldout_pairs(tmp_path, tiny_tokenizer, tiny_model):
    from peft import LoraConfig, get_peft_model

    from tuneloop.train.checkpoint import LoopState
    from tuneloop.train.dpo import collate_pairs, tokenize_pairs
    from tuneloop.train.loop import LoopConfig, MetricsLog, MicroBatches, run_loop
    from tuneloop.train.schedule import make_scheduler

    def pair(i, good, bad):
        prompt = [{"role": "user", "content": f"please help with message {i}"}]
        return PreferencePair(prompt, good, bad, source=f"p:{i}")

    train = [pair(i, "cancel_subscription", "refund_request") for i in range(8)]
    heldout = [pair(i, "cancel_subscription", "refund_request") for i in range(100, 104)]
    torch.manual_seed(0)
    model = get_peft_model(
        tiny_model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    before = sum(preference_margins(model, tiny_tokenizer, heldout)) / len(heldout)

    items, _ = tokenize_pairs(tiny_tokenizer, train, 256, "drop")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    steps = 10
    cfg = LoopConfig(steps, 1, 1.0, "fp32", checkpoint_every=10**6, keep_checkpoints=1)
    batches = MicroBatches(items, 4, 0, lambda xs: collate_pairs(xs, 2))
    log = MetricsLog(tmp_path / "m.jsonl")
    run_loop(model, opt, make_scheduler(opt, steps, 0, "constant"), batches,
             DpoLoss(DpoConfig(beta=0.1)), cfg, LoopState(), tmp_path / "ck", log,
             torch.device("cpu"), progress=False)  # fmt: skip
    records = log.read()
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    assert records[-1]["reward_accuracy"] == 1.0
    after = sum(preference_margins(model, tiny_tokenizer, heldout)) / len(heldout)
    assert after > before + 1.0, (before, after)


def _pairs_and_policy(tiny_model, n: int, system: list[dict], lora_dropout: float):
    """`n` pairs, and a LoRA policy whose random adapter makes it differ from the reference."""
    from peft import LoraConfig, get_peft_model

    pairs = [
        PreferencePair([*system, {"role": "user", "content": f"please help with message {i}"}],
                       "cancel_subscription", "refund_request", source=f"p:{i}")
        for i in range(n)
    ]  # fmt: skip
    torch.manual_seed(0)
    model = get_peft_model(tiny_model, LoraConfig(r=4, lora_dropout=lora_dropout,
                           task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]))  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return pairs, model


def test_dpo_loss_is_the_same_with_the_shared_prompt_run_once(tiny_tokenizer, tiny_model):
    from tuneloop.train.dpo import collate_pairs, tokenize_pairs

    system = {"role": "system", "content": "classify the support message into one label. " * 2}
    pairs, model = _pairs_and_policy(tiny_model, 3, [system], lora_dropout=0.0)
    items, _ = tokenize_pairs(tiny_tokenizer, pairs, 256, "drop")
    loss = DpoLoss(DpoConfig(beta=0.1))
    plain = collate_pairs(items, 2)
    shared = collate_pairs(items, 2, share_prefix=True)
    assert shared["shared_prefix"] >= 16
    (a, _), (b, _) = loss(model, plain), loss(model, shared)
    assert b.item() == pytest.approx(a.item(), abs=1e-5)
    one = collate_pairs(items[:1], 2, share_prefix=True)  # a single pair: its whole prompt
    assert one["shared_prefix"] > shared["shared_prefix"]


@pytest.mark.parametrize("dropout_off", [True, False])
def test_dpo_loss_is_deterministic_with_dropout_off(dropout_off, tiny_tokenizer, tiny_model):
    from tuneloop.config import Recipe
    from tuneloop.train.dpo import collate_pairs, make_loss, tokenize_pairs

    pairs, model = _pairs_and_policy(tiny_model, 4, [], lora_dropout=0.5)  # LoRA's dropout on
    recipe = Recipe(data={"train": "pairs.jsonl"},
                    train={"objective": "dpo", "dpo": {"dropout_off": dropout_off}})  # fmt: skip
    loss = make_loss(recipe, model, None, torch.device("cpu"))
    batch = collate_pairs(tokenize_pairs(tiny_tokenizer, pairs, 256, "drop")[0], 2)
    model.train()  # as the loop runs it
    (first, _), (second, _) = loss(model, batch), loss(model, batch)
    assert torch.equal(first, second) == dropout_off
