"""Prompt tuning, P-tuning and prefix tuning in our own decode loop: the same greedy tokens as
PEFT's model (batch of one and left-padded mixed batches), the base model untouched, and the
adapters we cannot serve refused with reasons."""

from __future__ import annotations

import json
import warnings

import pytest

from conftest import build_tiny_model
from tuneloop.errors import UserError
from tuneloop.models.generate import model_fingerprint
from tuneloop.models.virtual import VirtualTokens, greedy, greedy_batch, prefill_inputs

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["prompt", "ptune", "prefix"]
PROMPTS = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16, 17], [3], [40, 41, 42, 43, 44]]
NEW = 14
N_VIRTUAL = 5


def peft_config(kind: str):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    n = N_VIRTUAL
    return {
        "prompt": PromptTuningConfig(num_virtual_tokens=n, task_type="CAUSAL_LM"),
        "ptune": PromptEncoderConfig(
            num_virtual_tokens=n, encoder_hidden_size=32, task_type="CAUSAL_LM"
        ),
        "prefix": PrefixTuningConfig(num_virtual_tokens=n, task_type="CAUSAL_LM"),
    }[kind]


def make_virtual_adapter(folder, vocab: int, kind: str, seed: int):
    """A prompt-learning adapter whose weights look trained: random values as large as the
    tiny model's own, so the virtual tokens change what it answers."""
    import torch
    from peft import get_peft_model

    model = get_peft_model(build_tiny_model(vocab), peft_config(kind))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


def peft_forward_greedy(model, prompt: list[int], new: int) -> list[int]:
    """The reference: greedy tokens from the whole sequence each step, through PEFT's own
    forward (what the adapter was trained with), no cache, no padding."""
    import torch

    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(new):
            x = torch.tensor([ids])
            logits = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits
            out.append(int(logits[0, -1].argmax()))
            ids.append(out[-1])
    return out


@pytest.fixture(scope="module")
def vocab(tiny_tokenizer) -> int:
    return len(tiny_tokenizer)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, vocab):
    root = tmp_path_factory.mktemp("virtual")
    return {k: make_virtual_adapter(root / k, vocab, k, seed=20 + i) for i, k in enumerate(KINDS)}


@pytest.fixture(scope="module")
def base(vocab):
    return build_tiny_model(vocab).eval()


@pytest.fixture(scope="module")
def peft_models(folders, vocab):
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: PeftModel.from_pretrained(build_tiny_model(vocab), f).eval()
                for k, f in folders.items()}  # fmt: skip


@pytest.fixture(scope="module")
def references(peft_models, base):
    """PEFT's greedy tokens for every (kind, prompt); kind None is the plain base model."""
    refs = {(None, tuple(p)): peft_forward_greedy(base, p, NEW) for p in PROMPTS}
    for kind, model in peft_models.items():
        for p in PROMPTS:
            refs[kind, tuple(p)] = peft_forward_greedy(model, p, NEW)
    return refs


@pytest.fixture(scope="module")
def virtual(folders, base):
    return {k: VirtualTokens.from_folder(f, base) for k, f in folders.items()}


def test_virtual_tokens_change_the_answer(references):
    """Otherwise equality with PEFT below would prove nothing."""
    for kind in KINDS:
        changed = [references[kind, tuple(p)] != references[None, tuple(p)] for p in PROMPTS]
        assert sum(changed) >= len(PROMPTS) - 1, kind


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_one_equals_peft(kind, base, virtual, references):
    for p in PROMPTS:
        assert greedy(base, virtual[kind], [], p, NEW) == references[kind, tuple(p)], p


def test_mixed_left_padded_batch_equals_peft(base, virtual, references):
    """Every kind and plain rows, prompts of 1 to 7 tokens, in one left-padded batch."""
    rows = [(kind, p) for kind in [*KINDS, None] for p in PROMPTS]
    rows = rows[1::2] + rows[::2]  # interleave kinds, so neighbours differ
    got = greedy_batch(base, [(virtual[k] if k else None, p) for k, p in rows], [], NEW)
    for (kind, p), tokens in zip(rows, got, strict=True):
        assert tokens == references[kind, tuple(p)], (kind, p)


def test_positions_decide_it(base, virtual, references, monkeypatch):
    """The prompt after a prefix starts at position n, not 0: the loop with the other choice
    answers differently, so the tests above do check the rule."""
    import tuneloop.models.virtual as module

    original = module.prefill_inputs

    def from_zero(vt, ids, embed_fn=None):
        row = original(vt, ids, embed_fn)
        row.first_position = 0
        return row

    monkeypatch.setattr(module, "prefill_inputs", from_zero)
    got = [greedy(base, virtual["prefix"], [], p, NEW) for p in PROMPTS]
    wrong = [g != references["prefix", tuple(p)] for g, p in zip(got, PROMPTS, strict=True)]
    assert sum(wrong) >= 2


def test_stops_at_the_first_stop_token(base, virtual, references):
    p = PROMPTS[0]
    ref = references["prompt", tuple(p)]
    assert greedy(base, virtual["prompt"], [ref[3]], p, NEW) == ref[: ref.index(ref[3]) + 1]


def test_shapes_equal_peft_get_prompt(virtual, peft_models, base):
    """Read from the file, shaped as PEFT's get_prompt shapes them: (1, kv_heads, n, head_dim)
    per layer for a grouped-query model (4 heads, 2 kv heads here)."""
    import torch

    for kind in ("prompt", "ptune"):
        expected = peft_models[kind].get_prompt(batch_size=1)[0]
        assert torch.equal(virtual[kind].embeds, expected)
    cache = peft_models["prefix"].get_prompt(batch_size=1)
    past = virtual["prefix"].past
    assert len(past) == base.config.num_hidden_layers
    for layer, (key, value) in enumerate(past):
        assert key.shape == (1, 2, N_VIRTUAL, 16)
        assert torch.equal(key, cache.layers[layer].keys)
        assert torch.equal(value, cache.layers[layer].values)


def test_base_model_left_unchanged(folders, vocab):
    model = build_tiny_model(vocab)
    before = model_fingerprint(model)
    modules = [name for name, _ in model.named_modules()]
    for folder in folders.values():
        vt = VirtualTokens.from_folder(folder, model)
        greedy(model, vt, [], PROMPTS[0], 2)
    assert model_fingerprint(model) == before
    assert [name for name, _ in model.named_modules()] == modules
    assert not hasattr(model, "peft_config")


def test_docstring_example():
    import doctest

    import tuneloop.models.virtual as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def test_prefill_rule():
    import torch

    embed = torch.nn.Embedding(10, 4)
    prompt = VirtualTokens(kind="prompt", n=2, embeds=torch.zeros(2, 4))
    row = prefill_inputs(prompt, [7, 8, 9], embed)
    assert (row.past_len, row.input_len, row.mask_len, row.positions) == (0, 5, 5, [0, 1, 2, 3, 4])
    assert torch.equal(row.inputs_embeds[2:], embed(torch.tensor([7, 8, 9])))
    past = [(torch.zeros(1, 2, 3, 2), torch.zeros(1, 2, 3, 2))]
    row = prefill_inputs(VirtualTokens(kind="prefix", n=3, past=past), [7, 8])
    assert (row.past_len, row.input_ids, row.mask_len, row.positions) == (3, [7, 8], 5, [3, 4])
    row = prefill_inputs(None, [7, 8])
    assert (row.past_len, row.mask_len, row.positions) == (0, 2, [0, 1])


def test_multitask_refused(tmp_path, base):
    folder = tmp_path / "multitask"
    folder.mkdir()
    config = {"peft_type": "MULTITASK_PROMPT_TUNING", "num_virtual_tokens": 4}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as err:
        VirtualTokens.from_folder(folder, base)
    text = str(err.value)
    assert str(folder) in text and "task id" in text and "train.method prompt" in text


def test_lora_and_missing_folders_refused(tmp_path, base):
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(UserError, match="LORA adapter, not one with virtual tokens"):
        VirtualTokens.from_folder(lora, base)
    with pytest.raises(UserError, match="no adapter_config.json"):
        VirtualTokens.from_folder(tmp_path / "nothing", base)


def test_other_base_refused(folders, tiny_tokenizer):
    """A prefix trained on another model shape names the shapes and the fix."""
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=1))  # fmt: skip
    with pytest.raises(UserError, match="does not fit this base model") as err:
        VirtualTokens.from_folder(folders["prefix"], other)
    assert "base model it was trained on" in str(err.value)


@pytest.mark.xfail(
    strict=True,
    reason="peft 0.21.2 generate under transformers 5.24 drops a prefix (it passes "
    "`past_key_values` beside transformers' new `cache`, which wins) and re-injects prompt-tuning "
    "virtual tokens at every step; when this passes, PEFT's generate agrees with its forward",
)
@pytest.mark.parametrize("kind", KINDS)
def test_peft_generate_agrees(kind, peft_models, references):
    import torch

    model = peft_models[kind]
    for p in PROMPTS:
        x = torch.tensor([p])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=NEW, min_new_tokens=NEW)  # fmt: skip
        assert out[0, len(p) :].tolist() == references[kind, tuple(p)], p
