#!/usr/bin/env bash
# The GPU checks of issue 13, in one script for a lent H100/H200 (no network needed): builds the
# offline corpus from what the machine has, then prints one JSON object per check (train.bench:
# tokens/s, model FLOP/s, MFU against the device table of train/metrics.py, compile time, memory).
#   1. the quickstart in bf16;
#   2. the ~0.9B dense decoder at sequence 2048 with FSDP (configs/gpu_1b.gin), XLA attention;
#   3. the same with cuDNN's fused attention (jax.nn.dot_product_attention(implementation='cudnn')).
# Usage: bash benchmarks/gpu_checks.sh [OUT_DIR]   (JSON files written there, default ./gpu_checks)
set -euo pipefail
out=${1:-gpu_checks}
mkdir -p "$out"
python -m data.prepare --gin_file=quickstart.gin > "$out/prepare.log" 2>&1
python -m train.bench --gin_file=quickstart.gin --steps=50 \
    --gin.TransformerConfig.dtype="'bfloat16'" | tee "$out/quickstart_bf16.json"
python -m train.bench --gin_file=gpu_1b.gin --steps=20 | tee "$out/gpu_1b_xla.json"
python -m train.bench --gin_file=gpu_1b.gin --steps=20 \
    --gin.TransformerConfig.attention_implementation="'cudnn'" | tee "$out/gpu_1b_cudnn.json"
