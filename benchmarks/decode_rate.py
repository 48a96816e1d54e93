"""Greedy decoding tokens/s on this machine: random parameters at the quickstart's size, decoder and
encoder-decoder, batches 1 and 8, 32-token prompts, 64 new tokens, after compilation, best of 3.

    python benchmarks/decode_rate.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from evaluation.generate import generate
from model import build_model
from model.transformer import TransformerConfig

QUICKSTART = dict(d_model=128, n_layers=2, n_heads=4, d_ff=512, max_len=128)  # configs/quickstart.gin
PROMPT, NEW, VOCAB = 32, 64, 8192


def seconds(model, params, prompts) -> float:
    start = time.perf_counter()
    generate(model, params, prompts, NEW)
    return time.perf_counter() - start


for architecture, vocab in (("decoder", VOCAB), ("encoder_decoder", VOCAB + 100)):  # + T5's 100 sentinels
    model = build_model(TransformerConfig(architecture=architecture, vocab_size=vocab, **QUICKSTART))
    example = {"inputs": jnp.zeros((1, 8), jnp.int32), "encoder_inputs": jnp.zeros((1, 8), jnp.int32)}
    params = model.init(jax.random.PRNGKey(0), example)["params"]
    for batch in (1, 8):
        prompts = [list(np.random.default_rng(row).integers(0, VOCAB, PROMPT)) for row in range(batch)]
        seconds(model, params, prompts)  # compiles
        best = min(seconds(model, params, prompts) for _ in range(3))
        print(f"{architecture:16s} batch {batch}: {batch * NEW / best:8,.0f} tokens/s "
              f"({batch * NEW} tokens in {best:.3f} s)")
