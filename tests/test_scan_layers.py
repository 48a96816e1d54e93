"""scan_layers: the same model as the unrolled stack, with the layers' parameters stacked.

The unrolled model's parameters are restacked here (layer g * period + i of the unrolled stack is
slice g of the scanned group's layer i) and both models are run from them: logits, and the losses
of training steps through the trainer's own train_step, must agree within 1e-5 (f32)."""
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import accounting, build_model
from model.transformer import TransformerConfig
from train.optimizer import lr_schedule, make_optimizer
from train.trainer import create_state, train_step

BASE = dict(vocab_size=96, d_model=32, n_heads=4, d_ff=64, max_len=16)
VARIANTS = {
    "dense": dict(n_layers=3),
    "remat_glu_gqa": dict(n_layers=2, remat=True, activation="swiglu", n_kv_heads=2),
    "moe_every_2": dict(n_layers=4, moe_every=2, num_experts=4, moe_top_k=2, capacity_factor=2.0),
    "prefix_t5_bias": dict(n_layers=2, attention_mask="prefix", position="t5_bias"),
    "encoder_decoder": dict(n_layers=2, n_encoder_layers=2, architecture="encoder_decoder"),
}


def batch_for(cfg, rng):
    tokens = rng.integers(0, cfg.vocab_size, (4, 17))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": np.ones((4, 16), np.float32),
             "prefix_len": np.array([3, 5, 8, 1], np.int32)}
    if cfg.architecture == "encoder_decoder":
        batch["encoder_inputs"] = rng.integers(0, cfg.vocab_size, (4, 16))
    return {k: jnp.asarray(v) for k, v in batch.items()}


def restack(unrolled: dict, cfg: TransformerConfig) -> dict:
    """Unrolled params -> the scanned layout, for every stack (decoder, encoder)."""
    out = {}
    for name, sub in unrolled.items():
        layers = sorted((k for k in sub if k.startswith("layer_")), key=lambda k: int(k.split("_")[1])) \
            if isinstance(sub, dict) else []
        if not layers:
            out[name] = sub
            continue
        period = cfg.scan_period
        groups = {f"layer_{i}": jax.tree.map(lambda *xs: jnp.stack(xs), *[sub[layers[g * period + i]]
                                                                          for g in range(len(layers) // period)])
                  for i in range(period)}
        out[name] = {**{k: v for k, v in sub.items() if k not in layers}, "layers": groups}
    return out


# Each variant compiles four programs (~13-28 s): the dense stack in the default suite.
@pytest.mark.parametrize("variant", [v if v == "dense" else pytest.param(v, marks=pytest.mark.slow)
                                     for v in VARIANTS])
def test_scanned_and_unrolled_stacks_compute_the_same_model(variant):
    rng = np.random.default_rng(0)
    unrolled_cfg = TransformerConfig(**BASE, **VARIANTS[variant])
    scanned_cfg = TransformerConfig(**BASE, **VARIANTS[variant], scan_layers=True)
    batch = batch_for(unrolled_cfg, rng)
    params = nn.meta.unbox(build_model(unrolled_cfg).init(jax.random.PRNGKey(1), batch)["params"])
    stacked = restack(params, scanned_cfg)
    scanned_shapes = nn.meta.unbox(jax.eval_shape(build_model(scanned_cfg).init, jax.random.PRNGKey(1), batch))
    assert jax.tree.map(lambda x: x.shape, stacked) == jax.tree.map(lambda x: x.shape, scanned_shapes["params"])
    assert accounting.param_counts(stacked, scanned_cfg) == accounting.param_counts(params, unrolled_cfg)

    logits = build_model(unrolled_cfg).apply({"params": params}, batch)
    np.testing.assert_allclose(build_model(scanned_cfg).apply({"params": stacked}, batch), logits, atol=1e-5)

    schedule = lr_schedule(3, peak_lr=1e-2, warmup_steps=1)
    tx = make_optimizer(schedule)
    losses = {}
    for label, cfg, p in (("unrolled", unrolled_cfg, params), ("scanned", scanned_cfg, stacked)):
        state = create_state(jax.random.PRNGKey(1), build_model(cfg), tx, batch, unbox=True)
        state = state.replace(params=p, opt_state=tx.init(p))
        step = jax.jit(partial(train_step, model=build_model(cfg), optimizer=tx, schedule=schedule, z_loss=1e-4,
                               accum_steps=2))
        losses[label] = []
        for _ in range(3):
            state, metrics = step(state, batch)
            losses[label].append(float(metrics["loss"]))
    np.testing.assert_allclose(losses["scanned"], losses["unrolled"], rtol=1e-5)
    assert losses["scanned"][-1] < losses["scanned"][0]


def test_the_stacked_dimension_carries_a_logical_name():
    cfg = TransformerConfig(**BASE, n_layers=4, scan_layers=True)
    batch = {"inputs": jnp.zeros((1, 16), jnp.int32)}
    specs = nn.get_partition_spec(jax.eval_shape(build_model(cfg).init, jax.random.PRNGKey(0), batch)["params"])
    wi = specs["decoder"]["layers"]["layer_0"]["mlp"]["wi"]["kernel"]
    assert tuple(wi) == ("layers", "embed", "mlp")


def test_a_depth_that_is_not_a_multiple_of_the_pattern_is_refused():
    with pytest.raises(ValueError, match="moe_every"):
        TransformerConfig(**BASE, n_layers=3, moe_every=2, scan_layers=True)
