"""GRPO: advantages and loss by hand and against TRL on the same batch, sampling, training."""

import json
import signal
import subprocess
import sys
import tempfile

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import away_from_trl_reference, kill_at_step
from tuneloop.config import GrpoConfig
from tuneloop.evaluate.graders import Grader
from tuneloop.train.grpo import GrpoLoss, group_advantages, grpo_token_losses

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    # group 1: mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    std = (1 / 3) ** 0.5
    want = [(2 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4), 0, 0, 0]
    got = group_advantages(rewards, 3)
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert group_advantages(rewards, 3, "none").tolist() == pytest.approx(
        [2 / 3, -1 / 3, -1 / 3, 0, 0, 0], abs=1e-6
    )


def test_token_losses_by_hand_with_clipping_and_kl():
    logps = torch.tensor([-1.0, -0.5, -2.0])
    old = torch.tensor([-1.0, -1.0, -1.0])  # ratios 1, e^0.5 = 1.65, e^-1 = 0.37
    ref = torch.tensor([-1.5, -0.5, -2.0])
    adv = torch.tensor([2.0, 1.0, -1.0])
    out = grpo_token_losses(logps, old, ref, adv, beta=0.1, epsilon_low=0.2, epsilon_high=0.3)
    kl0 = torch.exp(torch.tensor(-0.5)).item() + 0.5 - 1  # exp(r - l) - (r - l) - 1
    want = [
        -2.0 + 0.1 * kl0,  # ratio 1: -A
        -1.3,  # ratio 1.65 > 1.3 with A > 0: clipped to -(1.3 A)
        -(-1.0 * 0.8),  # ratio 0.37 < 0.8 with A < 0: min(-0.37, -0.8) = -0.8, so loss 0.8
    ]
    assert out.losses.tolist() == pytest.approx(want, abs=1e-6)
    assert out.clipped.tolist() == [0.0, 1.0, 1.0]
    assert out.kl.tolist() == pytest.approx([kl0, 0.0, 0.0], abs=1e-7)


def _policy(tiny_model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                        task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(tiny_model, config)


def _fixed_grader(values):
    return Grader("fixed", lambda preds, refs, prompts: list(values))


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_advantages_and_loss_match_trl_on_the_same_batch(loss_type, tiny_tokenizer, tiny_model):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    group, beta, max_new = 3, 0.04, 8
    rewards = [1.0, 0.0, 0.5, 0.0, 0.0, 1.0]  # two prompts, three completions each
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), beta=beta, loss_type=loss_type,
                      num_generations=group, per_device_train_batch_size=6, report_to=[],
                      use_cpu=True, bf16=False, max_completion_length=max_new)  # fmt: skip
    trainer = GRPOTrainer(
        model=_policy(tiny_model), reward_funcs=[lambda completions, **kw: rewards], args=args,
        train_dataset=Dataset.from_list([{"prompt": "hi"}] * 6), processing_class=tiny_tokenizer,
    )  # fmt: skip
    away_from_trl_reference(trainer)

    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 3)]
    rows = [p for p in prompts for _ in range(group)]
    lengths = [4, 8, 1, 6, 2, 5]  # completions; those of 8 reach max_completion_length
    completions = [torch.randint(3, 300, (n,), generator=g).tolist() for n in lengths]
    completions[2] = [2]  # a completion that is only the end token
    texts = tiny_tokenizer.batch_decode(completions)

    def fixed_generation(_prompts):
        return rows, completions, None, texts, None, {}, None, []

    trainer._generate = fixed_generation
    inputs = trainer._generate_and_score_completions([{"prompt": "hi"}] * 6)
    with torch.no_grad():
        want = trainer._compute_loss(trainer.model, inputs)

    cfg = GrpoConfig(group_size=group, beta=beta, loss=loss_type, max_completion_tokens=max_new)
    loss = GrpoLoss(cfg, _fixed_grader(rewards), tiny_tokenizer, seed=0, precision="fp32")
    batch = loss.graded_rows(rows, completions, rewards)
    assert batch["advantages"].tolist() == pytest.approx(inputs["advantages"].tolist(), abs=1e-5)
    with torch.no_grad():
        ours, extras = loss(trainer.model, batch)
    assert (ours / batch["n"]).item() == pytest.approx(want.item(), abs=1e-5)
    assert extras["kl"] > 0 and extras["clip_fraction"] == 0.0  # one update per generation
    assert extras["reward"] == pytest.approx(sum(rewards) / 6)


def test_sampling_is_seeded_per_micro_batch(tiny_tokenizer, tiny_model):
    from tuneloop.train.grpo import Prompt

    loss = GrpoLoss(GrpoConfig(group_size=4, max_completion_tokens=6), _fixed_grader([0.0] * 8),
                    tiny_tokenizer, seed=3, precision="fp32")  # fmt: skip
    loss.model = tiny_model
    prompts = [Prompt(tiny_tokenizer("please cancel")["input_ids"], "x", "q"),
               Prompt(tiny_tokenizer("where is my order")["input_ids"], "y", "q")]  # fmt: skip
    first = loss.rollout({"prompts": prompts}, index=7)
    torch.manual_seed(123)  # the global generator does not decide the samples
    again = loss.rollout({"prompts": prompts}, index=7)
    other = loss.rollout({"prompts": prompts}, index=8)
    assert torch.equal(first["input_ids"], again["input_ids"])
    assert not torch.equal(first["input_ids"], other["input_ids"])
    assert first["n_seqs"] == 8 and first["advantages"].tolist() == [0.0] * 8
    labels = first["labels"]  # completion tokens only: the prompt is never a target
    for row, prompt in enumerate([p for p in prompts for _ in range(4)]):
        assert (labels[row, : len(prompt.ids)] == -100).all()
        assert (labels[row, len(prompt.ids) :][first["attention_mask"][row, len(prompt.ids) :]
                                               == 1] != -100).all()  # fmt: skip


def _longer_is_better(preds, refs, prompts):
    return [min(len(p), 40) / 40 for p in preds]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_trainable_weights_move_and_frozen_ones_do_not(method, tmp_path, tiny_tokenizer,
                                                       tiny_model):  # fmt: skip
    """LoRA: only the adapter moves, the reference is the base with it off. Full: every weight
    may move, the reference is a frozen copy that does not."""
    import copy

    from tuneloop.train.checkpoint import LoopState
    from tuneloop.train.grpo import Prompt
    from tuneloop.train.loop import LoopConfig, MetricsLog, MicroBatches, run_loop
    from tuneloop.train.schedule import make_scheduler

    model = _policy(tiny_model) if method == "lora" else tiny_model
    reference = None
    if method == "full":
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        frozen_before = {n: p.detach().clone() for n, p in reference.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = GrpoConfig(group_size=4, max_completion_tokens=8, beta=0.1)
    loss = GrpoLoss(cfg, Grader("long", _longer_is_better), tiny_tokenizer, seed=0,
                    precision="fp32", reference=reference)  # fmt: skip
    loss.model = model
    prompts = [Prompt(tiny_tokenizer(f"message {i}")["input_ids"], "", "") for i in range(4)]
    lr = 1e-2 if method == "lora" else 1e-3
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    loop = LoopConfig(3, 1, 1.0, "fp32", checkpoint_every=10**6, keep_checkpoints=1)
    batches = MicroBatches(prompts, 2, 0, lambda xs: {"prompts": xs})
    log = MetricsLog(tmp_path / "m.jsonl")
    run_loop(model, opt, make_scheduler(opt, 3, 0, "constant"), batches, loss, loop, LoopState(),
             tmp_path / "ck", log, torch.device("cpu"), progress=False,
             rollout=loss.rollout)  # fmt: skip
    records = log.read()
    assert len(records) == 3
    for key in ("reward", "reward_std", "kl", "completion_length", "clip_fraction"):
        assert key in records[0], key
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at first
    assert records[-1]["kl"] > 0
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved and set(moved) <= trainable
    if method == "lora":
        assert any("lora_B" in n for n in moved)
    else:
        assert len(moved) > len(trainable) // 2
        assert all(torch.equal(p, frozen_before[n]) for n, p in reference.named_parameters())


# ------------------------------------------------------------------------------------------
# The real command: a recipe with `objective: grpo`, killed and resumed

TUNELOOP = [sys.executable, "-m", "tuneloop.cli.main"]
ENV = {"OMP_NUM_THREADS": "1"}


def _grpo_recipe(folder, model_dir, data):
    recipe = {
        "name": "grpo",
        "workspace": str(folder / "ws"),
        "model": {"name": str(model_dir)},
        "data": {"train": str(data), "split": {"heldout_fraction": 0.25}},
        "task": {"metric": {"regex": "[aeiou]{2}", "name": "vowels"}},
        "train": {
            "objective": "grpo",
            "max_steps": 8,
            "batch_size": 2,
            "lr": 0.01,
            "checkpoint_every": 3,
            "precision": "fp32",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            "grpo": {"group_size": 4, "max_completion_tokens": 6},
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tuneloop.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_is_bit_identical(tmp_path, tiny_model_dir):
    import os

    rows = [{"messages": [{"role": "user", "content": f"item {i} please"},
                          {"role": "assistant", "content": "ok"}]} for i in range(16)]  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, **ENV}
    straight = _grpo_recipe(tmp_path / "straight", tiny_model_dir, data)
    killed = _grpo_recipe(tmp_path / "killed", tiny_model_dir, data)
    done = subprocess.run([*TUNELOOP, "train", str(straight), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr

    crash = subprocess.Popen([*TUNELOOP, "train", str(killed), "--quiet"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    kill_at_step(crash, tmp_path / "killed" / "ws" / "runs", 4)
    assert crash.returncode == -signal.SIGKILL
    resumed = subprocess.run([*TUNELOOP, "train", str(killed), "--resume", "--quiet"], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr

    (want_run,) = (tmp_path / "straight" / "ws" / "runs").iterdir()
    (got_run,) = (tmp_path / "killed" / "ws" / "runs").iterdir()
    drop = ("tokens_per_s",)
    want = [{k: v for k, v in r.items() if k not in drop} for r in _metrics(want_run)]
    got = [{k: v for k, v in r.items() if k not in drop} for r in _metrics(got_run)]
    assert len(want) == 8 and got == want  # loss, rewards, KL: step by step, exactly
    assert len({r["reward"] for r in want}) > 1  # the grader did see different completions
    a = load_file(want_run / "adapter" / "adapter_model.safetensors")
    b = load_file(got_run / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
