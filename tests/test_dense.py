"""model.Dense against Flax's DenseGeneral, the layer it replaces: the same kernel draws, the same outputs,
and an initialisation that works under jax.set_mesh with the logical rules (in flax 0.12 DenseGeneral's
raises there: its flattened kernel takes the full rank's constraint)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.transformer import Dense, TransformerConfig
from train import partitioning


def config(use_bias=False, dtype="float32"):
    return TransformerConfig(vocab_size=64, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=8,
                             use_bias=use_bias, dtype=dtype)


@pytest.mark.parametrize("in_shape, features, use_bias, dtype", [
    ((6,), 5, False, "float32"), ((6,), (3, 4), True, "float32"), ((3, 4), 7, True, "float32"),
    ((2, 3), (2, 5), True, "bfloat16")])
def test_dense_draws_and_computes_as_dense_general(in_shape, features, use_bias, dtype):
    cfg = config(use_bias, dtype)
    x = jnp.asarray(np.random.default_rng(len(in_shape)).normal(size=(2, 5, *in_shape)), jnp.float32)
    n_in, n_out = len(in_shape), len(features) if isinstance(features, tuple) else 1
    axes = ("a", "b", "c", "d")[:n_in + n_out]
    ours = Dense(cfg, features, axes, n_in=n_in, std=0.3)
    reference = nn.DenseGeneral(features, axis=tuple(range(-n_in, 0)), use_bias=use_bias, dtype=cfg.compute_dtype,
                                param_dtype=jnp.float32, kernel_init=nn.initializers.normal(0.3))
    key = jax.random.PRNGKey(7)
    params = nn.meta.unbox(ours.init(key, x)["params"])
    reference_params = reference.init(key, x)["params"]
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference_params)
    np.testing.assert_array_equal(params["kernel"], reference_params["kernel"])
    if use_bias:  # zeros at init: give both the same random bias, so that the test sees how it is added
        params["bias"] = jnp.asarray(np.random.default_rng(1).normal(size=params["bias"].shape), jnp.float32)
    np.testing.assert_array_equal(ours.apply({"params": params}, x), reference.apply({"params": params}, x))
    assert ours.apply({"params": params}, x).dtype == cfg.compute_dtype


def test_dense_initialises_under_a_mesh_with_logical_rules():
    mesh = partitioning.make_mesh()
    rules = partitioning.logical_axis_rules() + (("a", None), ("b", None), ("c", None))
    x = jnp.ones((2, 6))
    with partitioning.activate(mesh, rules):
        params = jax.jit(lambda k: Dense(config(), (3, 4), ("a", "b", "c")).init(k, x))(jax.random.PRNGKey(0))
        assert nn.meta.unbox(params)["params"]["kernel"].shape == (6, 3, 4)
