"""The model family's options: each trains a few steps on real text and its loss falls; each does what it says."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import build_model
from model.transformer import TransformerConfig, deepnorm_constants, relative_position_buckets
from tests.conftest import train_in_process

STEPS = 10


# Options that do not interact share a run: compiling, not training, is what these tests spend time on.
# The default suite trains the two whose extra checks below need a run and the encoder-decoder
# (through train.main it trains with `pytest -m slow`, test_encoder_decoder.py); the slow suite all five.
slow = pytest.mark.slow
VARIANTS = [
    {"norm_position": "deepnorm", "embed_norm": True, "embed_grad_shrink": 0.1},
    {"moe_every": 1, "num_experts": 4, "moe_top_k": 2, "capacity_factor": 0.5},  # drops tokens
    {"architecture": "encoder_decoder", "position": "t5_bias"},
    pytest.param({"norm_position": "sandwich", "position": "t5_bias"}, marks=slow),
    pytest.param({"moe_every": 2, "n_layers": 2, "num_experts": 4, "moe_top_k": 1}, marks=slow),
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_variant_trains_and_loss_falls(stdlib_text, options):
    losses, initial, metrics = train_in_process(stdlib_text, STEPS, **options)
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < losses[0] - 0.5, losses
    if options.get("norm_position") == "deepnorm":  # value and MLP projections start beta times smaller
        _, beta = deepnorm_constants(TransformerConfig(n_layers=1, norm_position="deepnorm"), encoder=False)
        layer = initial["decoder"]["layer_0"]
        for kernel, scale in ((layer["attention"]["query"]["kernel"], 1.0),
                              (layer["attention"]["value"]["kernel"], beta), (layer["mlp"]["wi"]["kernel"], beta)):
            assert float(jnp.std(kernel)) == pytest.approx(0.02 * scale, rel=0.1)
    if options.get("capacity_factor") == 0.5:
        assert float(metrics["decoder/layer_0/moe/dropped_fraction"]) > 0.2
        assert float(metrics["decoder/layer_0/moe/load_balance_loss"]) > 0


def test_deepnorm_constants_follow_deepnet():
    alpha, beta = deepnorm_constants(TransformerConfig(n_layers=6, norm_position="deepnorm"), encoder=False)
    assert (alpha, beta) == pytest.approx((12 ** 0.25, 48 ** -0.25))
    cfg = TransformerConfig(n_layers=6, n_encoder_layers=12, architecture="encoder_decoder", norm_position="deepnorm")
    assert deepnorm_constants(cfg, encoder=True) == pytest.approx((0.81 * (12 ** 4 * 6) ** (1 / 16),
                                                                   0.87 * (12 ** 4 * 6) ** (-1 / 16)))
    assert deepnorm_constants(cfg, encoder=False) == pytest.approx((18 ** 0.25, 72 ** -0.25))
    assert deepnorm_constants(TransformerConfig(n_layers=6), encoder=False) == (1.0, 1.0)


def test_t5_buckets_are_exact_near_and_logarithmic_far():
    causal = np.asarray(relative_position_buckets(np.arange(300), np.arange(300), bidirectional=False, num_buckets=32, max_distance=128))
    assert list(causal[20, 20 - np.arange(17)]) == list(range(17))  # distances 0..16: exact up to 15
    assert causal[0, 5] == 0  # a later key, which a causal model never sees, shares bucket 0
    assert causal[299, 299 - 128] == causal[299, 0] == 31  # max_distance and beyond: the last bucket
    # beyond: 16 + floor(16 log(d / 16) / log(128 / 16))
    assert list(causal[299, 299 - np.array([16, 32, 64, 100])]) == [16, 21, 26, 30]
    both = np.asarray(relative_position_buckets(np.arange(300), np.arange(300), bidirectional=True, num_buckets=32, max_distance=128))
    assert both[20, 17] == 3 and both[17, 20] == 16 + 3  # earlier and later keys get their own halves
    assert both[0, 299] == 31 and both[299, 0] == 15


def random_values(abstract_tree):
    """Values drawn with numpy for a tree of (boxed) abstract parameters: no initialiser to compile."""
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.1, a.shape), a.dtype), nn.meta.unbox(abstract_tree))


def test_embed_grad_shrink_keeps_the_forward_and_scales_the_embedding_gradient():
    options = dict(vocab_size=64, d_model=32, n_layers=1, n_heads=4, d_ff=64, max_len=16, tie_embeddings=False)
    batch = {"inputs": jnp.arange(16, dtype=jnp.int32)[None] % 64}
    model = build_model(TransformerConfig(**options))
    params = random_values(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))

    def loss_and_grad(shrink):
        model = build_model(TransformerConfig(**options, embed_grad_shrink=shrink))
        loss = lambda p: jnp.mean(model.apply(p, batch) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    (full_loss, full), (shrunk_loss, shrunk) = loss_and_grad(1.0), loss_and_grad(0.1)
    assert float(shrunk_loss) == pytest.approx(float(full_loss), rel=1e-6)
    embed = lambda g: g["params"]["token_embed"]["embedding"]  # noqa: E731
    np.testing.assert_allclose(embed(shrunk), 0.1 * embed(full), rtol=1e-4, atol=1e-9)
    head = lambda g: g["params"]["lm_head"]["kernel"]  # noqa: E731
    np.testing.assert_allclose(head(shrunk), head(full), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("options, field", [
    ({"architecture": "t5"}, "architecture"),
    ({"norm_position": "middle"}, "norm_position"),
    ({"position": "t5"}, "position"),
    ({"n_encoder_layers": 2}, "n_encoder_layers"),
    ({"architecture": "encoder_decoder", "attention_mask": "prefix"}, "attention_mask"),
    ({"embed_grad_shrink": 0.0}, "embed_grad_shrink"),
    ({"position": "t5_bias", "t5_bias_buckets": 2}, "t5_bias_buckets"),
    ({"moe_every": 5}, "moe_every"),
    ({"num_experts": 0}, "num_experts"),
    ({"moe_every": 1, "num_experts": 2, "moe_top_k": 3}, "moe_top_k"),
    ({"capacity_factor": 0.0}, "capacity_factor"),
    ({"moe_aux_loss_weight": -1.0}, "moe_aux_loss_weight"),
    ({"attention_implementation": "flash"}, "attention_implementation"),
    pytest.param({"attention_implementation": "cudnn"}, "attention_implementation",
                 marks=pytest.mark.skipif(jax.default_backend() == "gpu", reason="refused only without a GPU")),
])
def test_bad_options_fail_with_one_line_naming_the_field(options, field):
    with pytest.raises(ValueError) as error:
        TransformerConfig(n_layers=4, **options)
    first_line = str(error.value).splitlines()[0]  # gin appends where it was called; train.main shows line one
    assert f"TransformerConfig.{field}" in first_line, first_line
