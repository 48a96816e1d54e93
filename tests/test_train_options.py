"""Every model and optimizer option trains: a few steps on real text, and the loss falls."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data.pipeline import PackedBatches
from data.tokenizer import train_tokenizer
from data import sources
from model import build_model
from model.transformer import TransformerConfig
from train.optimizer import lr_schedule, make_optimizer
from train.trainer import create_state, train_step

SEQ_LEN, BATCH, STEPS = 32, 8, 12


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """The same few batches of real Python documentation for every variant."""
    docs = [d for _, d in zip(range(40), sources.iter_documents("python_stdlib"))]
    path = str(tmp_path_factory.mktemp("tok") / "spm.model")
    tokenizer = train_tokenizer((d["text"] for d in docs), path, vocab_size=384)
    return tokenizer, docs


def train_losses(batches, objective="lm", optimizer="adamw", accum=1, z_loss=0.0, **model_options):
    tokenizer, docs = batches
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                            max_len=SEQ_LEN, **model_options)
    stream = PackedBatches(docs, tokenizer, SEQ_LEN, BATCH, objective=objective)
    data = [stream.next_batch() for _ in range(4)]
    model = build_model(cfg)
    schedule = lr_schedule(STEPS, peak_lr=1e-2, warmup_steps=2)
    tx = make_optimizer(schedule, name=optimizer)
    state = create_state(jax.random.PRNGKey(0), model, tx, {k: jnp.asarray(v[:1]) for k, v in data[0].items()},
                         unbox=True)
    step = jax.jit(partial(train_step, model=model, optimizer=tx, schedule=schedule, z_loss=z_loss,
                           accum_steps=accum))
    losses = []
    for i in range(STEPS):
        state, metrics = step(state, data[i % len(data)])
        losses.append(float(metrics["loss"]))
    return losses


OPTIONS = [
    {}, {"activation": "relu"}, {"activation": "swiglu"}, {"activation": "geglu"},
    {"norm": "layernorm"}, {"norm_position": "post"}, {"position": "learned"}, {"position": "sinusoidal"},
    {"position": "alibi"}, {"use_bias": True, "norm": "layernorm"}, {"tie_embeddings": False},
    {"dropout": 0.1}, {"n_kv_heads": 2}, {"n_kv_heads": 1}, {"dtype": "bfloat16"}, {"remat": True},
    {"attention_mask": "prefix", "objective": "prefix_lm"}, {"optimizer": "adafactor"}, {"accum": 2},
    {"z_loss": 1e-4},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_option_trains_and_loss_falls(batches, options):
    losses = train_losses(batches, **options)
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < losses[0] - 0.5, losses


def test_gradient_accumulation_matches_one_big_batch(batches):
    np.testing.assert_allclose(train_losses(batches, accum=4), train_losses(batches, accum=1), rtol=2e-5)
