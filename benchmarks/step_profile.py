"""Where the quickstart's training step spends its time on this CPU, against the matmul peak.

    python benchmarks/step_profile.py [--gin_file=quickstart.gin]

Times, each jitted and repeated after warm-up (median of 5 repeats of 20 calls):
  - the peak: train/metrics.py's f32 matmul measurement;
  - the whole training step (train.bench's bare step, run in a subprocess);
  - each matrix product of the step on its own, at its own shapes: the output layer's forward and
    its two backward products, and the blocks' (attention projections, MLP), forward and backward;
  - the cross-entropy (log-softmax over the vocabulary, forward and backward) on its own;
  - the AdamW update on its own.
and prints one JSON object: each part's seconds per step, FLOPs and rate, and the share of the
step that the matrix products would take at the peak (the MFU ceiling) and at their own rates.
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def timed(fn, *args, calls: int = 20, repeats: int = 5) -> float:
    """Median seconds per call of a jitted fn, after one warm-up call."""
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def matmul_rate(m: int, k: int, n: int, count: int) -> dict:
    """count products of (m, k) x (k, n): seconds and FLOP/s."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k)), jnp.float32)
    b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n)), jnp.float32)
    seconds = timed(jax.jit(lambda a, b: a @ b), a, b) * count
    flops = 2.0 * m * k * n * count
    return {"shape": [m, k, n], "count": count, "seconds": seconds, "flops": flops, "flops_per_s": flops / seconds}


def main(argv: list[str]) -> int:
    gin_files = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")] or ["quickstart.gin"]
    from train.main import parse_gin
    from train.metrics import measure_matmul_flops
    parse_gin(gin_files, [])
    from data.loader import DataConfig
    from model.transformer import TransformerConfig
    from train.trainer import TrainConfig
    cfg, data, train = TransformerConfig(), DataConfig(), TrainConfig()
    tokens = data.batch_size * data.seq_len // train.grad_accum_steps  # rows of one micro-batch's matmuls
    micro = train.grad_accum_steps
    d, f, v, length, layers = cfg.d_model, cfg.d_ff, cfg.vocab_size, data.seq_len, cfg.n_layers
    rows = data.batch_size // micro
    peak = measure_matmul_flops("float32")
    parts = {}
    # Output layer (tied): logits = x E^T forward; dX = dlogits E and dE = dlogits^T x backward.
    parts["output_forward"] = matmul_rate(tokens, d, v, micro)
    parts["output_backward_inputs"] = matmul_rate(tokens, v, d, micro)
    parts["output_backward_weights"] = matmul_rate(v, tokens, d, micro)
    # Blocks: q, k, v, out projections (d x d) and the MLP (d x f, f x d); forward, then two backward
    # products of each (inputs and weights) of the same size.
    parts["blocks_projections"] = matmul_rate(tokens, d, d, 4 * layers * micro * 3)
    parts["blocks_mlp"] = matmul_rate(tokens, d, f, 2 * layers * micro * 3)
    # Attention scores and weighted values: per row and head, (L, hd) x (hd, L) and (L, L) x (L, hd),
    # forward and two backward each: 6 batched products of 2 L^2 hd per head.
    heads, head_dim = cfg.n_heads, cfg.head_dim
    q = jnp.ones((rows, length, heads, head_dim), jnp.float32)
    attention = jax.jit(jax.grad(lambda q: jax.nn.dot_product_attention(q, q, q, is_causal=True).sum()))
    seconds = timed(attention, q) * layers * micro
    flops = 6 * 2.0 * rows * heads * length * length * head_dim * layers * micro
    parts["attention_core"] = {"seconds": seconds, "flops": flops, "flops_per_s": flops / seconds}
    logits = jnp.asarray(np.random.default_rng(2).standard_normal((tokens, v)), jnp.float32)
    targets = jnp.asarray(np.random.default_rng(3).integers(0, v, tokens))

    def cross_entropy(logits):
        return (jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[:, None], -1)[:, 0]).sum()
    parts["cross_entropy"] = {"seconds": timed(jax.jit(jax.value_and_grad(cross_entropy)), logits) * micro}

    import optax
    n_params = v * d + layers * (4 * d * d + 2 * d * f + 2 * d) + d
    params = jnp.zeros((n_params,), jnp.float32)
    adam = optax.adamw(1e-3)
    state = adam.init(params)
    update = jax.jit(lambda g, s, p: optax.apply_updates(p, adam.update(g, s, p)[0]))
    parts["adamw_update"] = {"seconds": timed(update, params, state, params)}

    # The whole step, as train.bench times it (the bare jitted step on one batch, in its own process).
    import subprocess
    bench = subprocess.run([sys.executable, "-m", "train.bench", *[f"--gin_file={g}" for g in gin_files],
                            "--steps=30"], capture_output=True, text=True, check=True)
    step_tokens_per_s = json.loads(bench.stdout[bench.stdout.index("{"):])["step"]["tokens_per_s"]
    step_s = data.batch_size * data.seq_len / step_tokens_per_s
    matmul_flops = sum(p.get("flops", 0.0) for p in parts.values())
    matmul_s = sum(p["seconds"] for k, p in parts.items() if "flops" in p)
    report = {
        "gin_files": gin_files, "peak_flops_per_s": peak, "step_s": step_s,
        "matmul_flops_per_step": matmul_flops,
        "mfu_of_the_step": matmul_flops / step_s / peak,
        "matmuls_at_their_own_rates_s": matmul_s,
        "parts": parts,
        "parts_sum_s": sum(p["seconds"] for p in parts.values()),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
