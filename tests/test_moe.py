"""Mixture of experts: routing with capacity and dropping, the auxiliary losses, and sharding over experts."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import build_model, moe
from model.transformer import MoeMlp, TransformerConfig
from tests.conftest import TINY_MODEL, metrics_rows, run_main, train_losses
from tests.test_model_variants import random_values


route = jax.jit(moe.route, static_argnames=("top_k", "capacity"))  # jitted once per shape: eager is slow


def logits_preferring(experts: list[list[int]], num_experts: int):
    """Router logits (1 group, tokens, experts) under which token t ranks experts[t] first, second, ..."""
    logits = np.zeros((1, len(experts), num_experts), np.float32)
    for t, ranked in enumerate(experts):
        for rank, e in enumerate(ranked):
            logits[0, t, e] = 4.0 - rank
    return jnp.asarray(logits)


def test_capacity_is_an_even_share_times_the_factor():
    assert moe.expert_capacity(tokens_per_group=64, num_experts=8, top_k=1, capacity_factor=1.0) == 8
    assert moe.expert_capacity(64, 8, 2, 1.25) == 20
    assert moe.expert_capacity(64, 8, 2, 100.0) == 64  # never more slots than tokens
    assert moe.expert_capacity(4, 8, 1, 0.1) == 1


def test_a_full_expert_drops_the_later_tokens():
    # Four tokens all want expert 0, which has two slots: tokens 2 and 3 are dropped.
    routing = route(logits_preferring([[0]] * 4, 2), top_k=1, capacity=2)
    dispatch = np.asarray(routing.dispatch[0])  # (token, expert, slot)
    np.testing.assert_array_equal(dispatch[:, 0, :], [[1, 0], [0, 1], [0, 0], [0, 0]])
    assert dispatch[:, 1].sum() == 0
    assert float(routing.dropped_fraction) == 0.5
    np.testing.assert_allclose(routing.expert_load, [1.0, 0.0])  # load is counted before dropping
    # A kept token's combine weight is its router probability (Switch); a dropped token's is zero.
    probs = jax.nn.softmax(logits_preferring([[0]] * 4, 2)[0], axis=-1)
    np.testing.assert_allclose(routing.combine[0].sum((1, 2)), [probs[0, 0], probs[1, 0], 0, 0], rtol=1e-6)


def test_top2_serves_every_first_choice_before_any_second_choice():
    # Expert 0 has one slot. Token 1 ranks it first, token 0 second: token 1 gets the slot
    # although token 0 comes earlier.
    routing = route(logits_preferring([[1, 0], [0, 1]], 2), top_k=2, capacity=1)
    dispatch = np.asarray(routing.dispatch[0])
    np.testing.assert_array_equal(dispatch[:, 0, 0], [0, 1])
    np.testing.assert_array_equal(dispatch[:, 1, 0], [1, 0])
    assert float(routing.dropped_fraction) == 0.5
    # GShard renormalises the two gates of a token to sum to 1.
    routing = route(logits_preferring([[1, 0], [0, 1]], 2), top_k=2, capacity=2)
    np.testing.assert_allclose(routing.combine[0].sum((1, 2)), [1.0, 1.0], rtol=1e-6)


def test_balanced_routing_gives_the_minimum_switch_loss_of_one():
    balanced = route(logits_preferring([[t % 4] for t in range(8)], 4), top_k=1, capacity=8)
    np.testing.assert_allclose(balanced.load_balance_loss, 1.0, rtol=1e-6)
    uniform = route(jnp.zeros((2, 8, 4)), top_k=1, capacity=8)  # equal probabilities: loss 1 too
    np.testing.assert_allclose(uniform.load_balance_loss, 1.0, rtol=1e-6)
    collapsed = route(logits_preferring([[0]] * 8, 4), top_k=1, capacity=8)
    assert float(collapsed.load_balance_loss) > 2.0  # all tokens on one expert: up to num_experts
    np.testing.assert_allclose(uniform.router_z_loss, np.log(4.0) ** 2, rtol=1e-6)


def moe_layer_outputs(cfg, batch):
    """Boxed parameters (shapes and logical names) and, for random values, the logits and sown values."""
    model = build_model(cfg)
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)["params"]
    logits, variables = jax.jit(partial(model.apply, mutable=["intermediates"]))(
        {"params": random_values(boxed)}, batch)
    return boxed, logits, variables["intermediates"]


def test_moe_layers_replace_every_kth_mlp_and_sow_losses_and_load():
    cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=4, n_heads=4, d_ff=64, max_len=16, moe_every=2,
                            num_experts=4, moe_top_k=2, capacity_factor=0.5)
    batch = {"inputs": jnp.asarray(np.random.default_rng(1).integers(0, 64, (2, 16)), jnp.int32)}
    params, logits, sown = moe_layer_outputs(cfg, batch)
    layers = params["decoder"]
    assert [name for name in ("layer_0", "layer_1", "layer_2", "layer_3") if "moe" in layers[name]] == \
        ["layer_1", "layer_3"]
    kernel = layers["layer_1"]["moe"]["experts"]["wi"]["kernel"]
    assert kernel.value.shape == (4, 32, 64) and kernel.names == ("expert", "embed", "mlp")
    stats = sown["decoder"]["layer_1"]["moe"]
    assert set(stats) == {"load_balance_loss", "router_z_loss", "expert_load", "dropped_fraction"}
    np.testing.assert_allclose(stats["expert_load"][0].sum(), 1.0, rtol=1e-6)
    # capacity 0.5 of an even share: at least half of the choices cannot be served
    assert float(stats["dropped_fraction"][0]) >= 0.5
    assert float(stats["load_balance_loss"][0]) >= 0.01 * 0.999  # weight 0.01 times a loss of at least ~1
    assert np.isfinite(logits).all()


def test_a_token_dropped_by_every_expert_passes_through_unchanged():
    cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, d_ff=64, max_len=16, moe_every=1,
                            num_experts=2, capacity_factor=1e-3)  # one slot per expert and row
    layer = MoeMlp(cfg, inner_std=0.02, out_std=0.02)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, 32)), jnp.float32)
    params = random_values(jax.eval_shape(layer.init, jax.random.PRNGKey(0), x, True))
    y = jax.jit(layer.apply, static_argnums=2)(params, x, True)
    served = np.abs(np.asarray(y[0])).sum(-1) > 0
    assert served.sum() <= 2  # at most one token per expert
    assert served[0]  # the first token always finds its expert empty


MOE_BINDINGS = ["TransformerConfig.moe_every = 1", "TransformerConfig.num_experts = 4",
                "TransformerConfig.moe_top_k = 2", "TransformerConfig.capacity_factor = 2.0"]  # 2.0: nothing dropped
MESH_STEPS = 4


@pytest.fixture(scope="module")
def one_device_moe_losses(tiny_corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("moe") / "one_device"
    result = run_main(workdir, tiny_corpus + TINY_MODEL + MOE_BINDINGS + [f"TrainConfig.train_steps = {MESH_STEPS}"])
    assert result.returncode == 0, result.stderr
    return workdir


# Each run is a subprocess that compiles from scratch (~45 s with its one-device reference), so the
# meshes run with `pytest -m slow`; the default suite checks routing and dispatch in-process above.
@pytest.mark.slow
@pytest.mark.parametrize("mesh", [
    "(2, 2, 2)",  # every axis at once: rows over data and expert, experts over expert, their MLPs over model
    "(4, 2, 1)",
    "(4, 1, 2)",
], ids=["data_x_expert_x_model", "data_x_expert", "data_x_model"])
def test_expert_and_model_parallel_meshes_match_one_device(tiny_corpus, one_device_moe_losses, tmp_path, mesh):
    bindings = tiny_corpus + TINY_MODEL + MOE_BINDINGS + [
        f"TrainConfig.train_steps = {MESH_STEPS}", f"make_mesh.mesh_shape = {mesh}",
        "make_mesh.axis_names = ('data', 'expert', 'model')"]
    result = run_main(tmp_path / "run", bindings, devices=8)
    assert result.returncode == 0, result.stderr
    expected = train_losses(one_device_moe_losses)
    np.testing.assert_allclose(train_losses(tmp_path / "run"), expected, rtol=1e-5)
    assert expected[-1] < expected[0]
    rows = [row for row in metrics_rows(tmp_path / "run") if "loss" in row]
    assert all(row["decoder/layer_0/moe/dropped_fraction"] == 0.0 for row in rows)
    assert all(row["decoder/layer_0/moe/load_balance_loss"] > 0 for row in rows)
    loads = np.array([[row[f"decoder/layer_0/moe/expert_load/{e}"] for e in range(4)] for row in rows])
    np.testing.assert_allclose(loads.sum(1), 1.0, rtol=1e-5)  # the fraction of routing choices per expert
