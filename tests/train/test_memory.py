"""The memory estimate's parts follow from the model and the method."""

import torch

from tuneloop.config import TrainConfig
from tuneloop.models.adapters import apply_method, load_base
from tuneloop.models.load import ModelSource
from tuneloop.train.memory import estimate_memory

LENGTHS = [(100, 10)] * 9 + [(400, 40)]  # (tokens, supervised) per example


def model_for(method, tiny_model_dir, **cfg):
    train = TrainConfig(method=method, **cfg)
    source = ModelSource("tiny", tiny_model_dir, "folder")
    torch.manual_seed(0)
    return apply_method(load_base(source, train, "fp32"), train), train


def test_parts_follow_the_parameters(tiny_model_dir):
    model, cfg = model_for("lora", tiny_model_dir)
    est = estimate_memory(model, cfg, 4, LENGTHS, "fp32")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert est.trainable_params == trainable
    assert est.weights == sum(p.numel() * 4 for p in model.parameters())
    assert (est.gradients, est.optimizer) == (4 * trainable, 8 * trainable)
    assert est.tokens_per_micro_batch == 4 * 400  # rows padded to the longest item
    assert est.total == est.training == (est.weights + est.gradients + est.optimizer
                                         + est.activations + est.overhead)  # fmt: skip
    assert est.loading == 0  # no weight files given
    assert "activations" in est.table()


def test_methods_and_options_move_the_right_parts(tiny_model_dir):
    full, cfg_full = model_for("full", tiny_model_dir)
    lora, cfg_lora = model_for("lora", tiny_model_dir)
    qlora, cfg_qlora = model_for("qlora", tiny_model_dir)
    e_full = estimate_memory(full, cfg_full, 4, LENGTHS, "fp32")
    e_lora = estimate_memory(lora, cfg_lora, 4, LENGTHS, "fp32")
    e_qlora = estimate_memory(qlora, cfg_qlora, 4, LENGTHS, "fp32")
    assert e_full.optimizer > 5 * e_lora.optimizer
    assert e_qlora.weights < e_lora.weights
    assert e_qlora.total_params == e_lora.total_params  # 4-bit tensors count their values
    checkpointed = TrainConfig(method="lora", gradient_checkpointing=True)
    assert estimate_memory(lora, checkpointed, 4, LENGTHS, "fp32").activations < e_lora.activations
    sgd = TrainConfig(method="full", optimizer="sgd")
    assert estimate_memory(full, sgd, 4, LENGTHS, "fp32").optimizer == 0
    assert estimate_memory(lora, cfg_lora, 4, LENGTHS, "fp32", frozen=[full]).weights > (
        e_lora.weights
    )


def test_a_shared_prefix_lowers_activations_unless_checkpointing(tiny_model_dir):
    model, cfg = model_for("lora", tiny_model_dir)
    alone = estimate_memory(model, cfg, 4, LENGTHS, "fp32")
    shared = estimate_memory(model, cfg, 4, LENGTHS, "fp32", shared_tokens=3 * 300)
    assert shared.activations < alone.activations
    model, cfg = model_for("lora", tiny_model_dir, gradient_checkpointing=True)
    assert (estimate_memory(model, cfg, 4, LENGTHS, "fp32", shared_tokens=900).activations
            == estimate_memory(model, cfg, 4, LENGTHS, "fp32").activations)  # fmt: skip


def test_the_largest_micro_batch_sets_the_peak_padded_or_packed(tiny_model_dir):
    model, cfg = model_for("lora", tiny_model_dir)
    padded = estimate_memory(model, cfg, 4, LENGTHS, "fp32")
    model, cfg = model_for("lora", tiny_model_dir, packing=True)
    packed = estimate_memory(model, cfg, 4, LENGTHS, "fp32")
    assert padded.tokens_per_micro_batch == 4 * 400
    assert packed.tokens_per_micro_batch == 400 + 3 * 100  # the 4 longest, no padding
    assert packed.activations < padded.activations
    many = [(100, 10)] * 90 + [(400, 40)] * 10  # mean 130, sd 90: 4 x 130 + 2 x 2 x 90
    assert estimate_memory(model, cfg, 4, many, "fp32").tokens_per_micro_batch == 880


def test_overhead_is_the_loading_residue_and_a_share_of_the_activations(tiny_model_dir):
    from tuneloop.train.memory import ALLOCATOR_SHARE, RUNTIME_BYTES

    model, cfg = model_for("lora", tiny_model_dir)
    est = estimate_memory(model, cfg, 4, LENGTHS, "fp32")
    # the share is of the body's activations; the head's N x V blocks are returned to the OS
    assert RUNTIME_BYTES < est.overhead < RUNTIME_BYTES + ALLOCATOR_SHARE * est.activations
    assert "overhead" in est.table()


def test_the_head_counts_one_chunk_where_it_runs_in_chunks(tiny_model_dir, monkeypatch):
    """LoRA SFT runs the frozen head in chunks (`forward.head_logprobs`); prompt tuning's logits
    come whole from PEFT, and distillation needs them whole: 3 float32 copies of N x V."""
    import tuneloop.train.memory as memory
    from tuneloop.train.forward import chunked_head

    lora, cfg = model_for("lora", tiny_model_dir)
    prompt, cfg_prompt = model_for("prompt", tiny_model_dir)
    assert chunked_head(lora) is not None and chunked_head(prompt) is None
    vocab = lora.config.vocab_size
    monkeypatch.setattr(memory, "HEAD_CHUNK_VALUES", vocab)  # one row a chunk (a tiny vocabulary)
    supervised = 40  # answer tokens of a micro-batch: at least the largest example's
    chunked = estimate_memory(lora, cfg, 4, LENGTHS, "fp32").activations
    distill = TrainConfig(method="lora", objective="distill")
    whole = estimate_memory(lora, distill, 4, LENGTHS, "fp32").activations
    assert whole - chunked > 2 * supervised * vocab * 4  # N x V buffers against one row's
    body_and_whole = estimate_memory(prompt, cfg_prompt, 4, LENGTHS, "fp32").activations
    assert body_and_whole > whole  # every position's logits, not one chunk


def test_loading_counts_the_mapped_file_and_the_tensors_copied_from_it(tmp_path, tiny_model_dir):
    """A float32 file loaded as float32 is used in place; bf16 copies of the frozen weights, or
    a bf16 file read into float32, sit beside the mapped file until loading ends."""
    from tuneloop.models.adapters import store_frozen_in_bf16
    from tuneloop.models.load import weight_files
    from tuneloop.train.memory import RUNTIME_BYTES

    files = weight_files(ModelSource("tiny", tiny_model_dir, "folder"))
    size = sum(f.stat().st_size for f in files)
    model, cfg = model_for("lora", tiny_model_dir)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    in_place = estimate_memory(model, cfg, 4, LENGTHS, "fp32", files=files)
    assert in_place.loading == size + RUNTIME_BYTES
    store_frozen_in_bf16(model, "lora")
    copied = estimate_memory(model, cfg, 4, LENGTHS, "bf16", files=files)
    assert copied.loading == size + copied.weights + RUNTIME_BYTES
    assert copied.weights < in_place.weights  # the frozen matrices in bf16

    load_base(ModelSource("tiny", tiny_model_dir, "folder"), cfg, "fp32").to(
        torch.bfloat16).save_pretrained(tmp_path / "bf16")  # fmt: skip
    bf16_files = weight_files(ModelSource("bf16", tmp_path / "bf16", "folder"))
    bf16_size = sum(f.stat().st_size for f in bf16_files)
    assert bf16_size < 0.6 * size
    read = estimate_memory(model, cfg, 4, LENGTHS, "bf16", files=bf16_files)
    assert read.loading == bf16_size + 4 * params + RUNTIME_BYTES  # float32 tensors made first


def test_the_peak_is_loading_where_loading_is_higher(tiny_model_dir):
    model, cfg = model_for("lora", tiny_model_dir)
    est = estimate_memory(model, cfg, 4, LENGTHS, "fp32")
    est.loading = est.training + 1
    assert est.total == est.training + 1 and est.as_dict()["total"] == est.total
    assert "mapped" in est.table() and "peak" in est.table()
    est.loading = est.training
    assert "peak" not in est.table() and "mapped" not in est.table()


def test_packed_rows_share_no_prefix(tiny_model_dir):
    model, cfg = model_for("lora", tiny_model_dir, packing=True)
    assert (estimate_memory(model, cfg, 4, LENGTHS, "fp32", shared_tokens=900).activations
            == estimate_memory(model, cfg, 4, LENGTHS, "fp32").activations)  # fmt: skip
