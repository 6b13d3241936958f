"""The CUDA code paths: bf16 autocast, packed rows through SDPA, and a QLoRA run with
bitsandbytes' 4-bit CUDA kernels. Skipped without a GPU; run them whenever one is at hand
(`bench/gpu/run.sh` measures speed on the same paths)."""

import json

import pytest
import torch
from test_loop_features import loss_and_grads, make_items

from tuneloop.train.batching import collate
from tuneloop.train.sft import sft_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_autocast_on_cuda_is_close_to_fp32(tiny_tokenizer, tiny_model):
    model = tiny_model.cuda()
    batch = {k: v.cuda() if torch.is_tensor(v) else v
             for k, v in collate(make_items(tiny_tokenizer, 4), 2).items()}  # fmt: skip
    with torch.no_grad():
        fp32, _ = sft_loss(model, batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16, _ = sft_loss(model, batch)
    assert bf16.item() == pytest.approx(fp32.item(), rel=2e-2)


def test_packed_rows_equal_padded_rows_on_cuda(tiny_tokenizer, tiny_model):
    model = tiny_model.cuda().train()
    items = make_items(tiny_tokenizer, 8)

    def on_gpu(batch):
        return {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}

    padded = on_gpu(collate(items, 2))
    packed = on_gpu(collate(items, 2, packing=True, capacity=3 * max(len(i.input_ids)
                                                                     for i in items)))  # fmt: skip
    loss_a, grads_a = loss_and_grads(model, padded)
    loss_b, grads_b = loss_and_grads(model, packed)
    assert loss_b == pytest.approx(loss_a, abs=1e-4)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-4), name


def test_qlora_trains_on_cuda_with_4bit_layers(tmp_path, tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from tuneloop.config import validate_recipe
    from tuneloop.train.session import train

    rows = [
        {"messages": [{"role": "user", "content": f"item {i}"},
                      {"role": "assistant", "content": "ab"[i % 2]}]}
        for i in range(16)
    ]  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = validate_recipe({
        "name": "qlora-cuda", "workspace": str(tmp_path / "ws"),
        "model": {"name": str(tiny_model_dir)}, "data": {"train": str(data)},
        "train": {"method": "qlora", "max_steps": 3, "batch_size": 4, "lr": 1e-2,
                  "precision": "bf16"},
    }).resolved(tmp_path)  # fmt: skip
    run = train(recipe, progress=False)
    info = run.info()
    assert info["status"] == "finished" and info["device"].startswith("cuda")
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
